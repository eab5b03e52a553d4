// An independent gRPC-Web client for tests/web.rs: Connect's gRPC-Web
// transport (@connectrpc/connect-web, on Node's fetch, HTTP/1.1; and
// @connectrpc/connect-node's over HTTP/2 without TLS) with message types
// built at run time from the server's own descriptor set, so nothing here
// shares code with the page or the gateway.
//
//   node connect-client.mjs <base url> <descriptors.bin> <room>
//
// Prints one line per step passed; exits non-zero at the first failure.

import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createGrpcWebTransport as createNodeGrpcWebTransport } from "@connectrpc/connect-node";

const [baseUrl, descriptors, room] = process.argv.slice(2);
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)),
);
const service = registry.getService("chat.ChatService");
if (!service) throw new Error("chat.ChatService not in the descriptor set");
const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
const client = createClient(service, transport);

const deadline = (ms, what) =>
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms).unref());

// Reads events from a Subscribe stream until `pred` matches one.
async function until(iter, what, pred) {
  const next = async () => {
    for (;;) {
      const { value, done } = await iter.next();
      if (done) throw new Error(`stream ended before ${what}`);
      if (pred(value.event)) return value.event;
    }
  };
  return Promise.race([next(), deadline(10000, what)]);
}

function subscribe(username, abort) {
  return client.subscribe({ username, room }, { signal: abort.signal })[Symbol.asyncIterator]();
}

async function main() {
  // Unary: nobody in the room yet.
  const empty = await client.who({ room });
  if (empty.room !== room || empty.users.length !== 0) throw new Error(`who: ${JSON.stringify(empty)}`);
  console.log("ok unary who");

  // Server streaming: the first event is the session.
  const aliceAbort = new AbortController();
  const alice = subscribe("alice", aliceAbort);
  const started = await until(alice, "alice's session", (e) => e.case === "sessionStarted");
  const aliceToken = started.value.token;
  if (!/^[0-9a-f]{32}$/.test(aliceToken)) throw new Error(`token ${aliceToken}`);
  console.log("ok subscribe session");

  const bobAbort = new AbortController();
  const bob = subscribe("bob", bobAbort);
  const bobToken = (await until(bob, "bob's session", (e) => e.case === "sessionStarted")).value.token;
  await until(alice, "bob joined", (e) => e.case === "userEvent" && e.value.username === "bob" && e.value.type === 1);
  console.log("ok join seen");

  await client.sendMessage({ token: aliceToken, message: "hello from node" });
  const heard = await until(bob, "alice's message", (e) => e.case === "chatMessage");
  if (heard.value.username !== "alice" || heard.value.message !== "hello from node" || heard.value.id < 1n)
    throw new Error(`message ${JSON.stringify(heard.value, (_, v) => (typeof v === "bigint" ? v.toString() : v))}`);
  // The sender sees its own message too, with the same id.
  const echo = await until(alice, "alice's echo", (e) => e.case === "chatMessage");
  if (echo.value.id !== heard.value.id) throw new Error("echo id differs");
  console.log("ok message delivered");

  await client.setTyping({ token: bobToken, type: 1 });
  const typing = await until(alice, "bob typing", (e) => e.case === "typingEvent");
  if (typing.value.username !== "bob" || typing.value.type !== 1) throw new Error("typing");
  console.log("ok typing seen");

  const both = await client.who({ room });
  if (both.users.join(",") !== "alice,bob") throw new Error(`who: ${both.users}`);

  // Errors arrive as gRPC statuses.
  try {
    await client.sendMessage({ token: "0".repeat(32), message: "x" });
    throw new Error("a made-up token was accepted");
  } catch (e) {
    if (!(e instanceof ConnectError) || e.code !== Code.NotFound) throw e;
  }
  try {
    await client.sendMessage({ token: aliceToken, message: "x".repeat(100000) });
    throw new Error("an over-long message was accepted");
  } catch (e) {
    if (!(e instanceof ConnectError) || e.code !== Code.InvalidArgument) throw e;
  }
  try {
    const dup = subscribe("Alice", new AbortController());
    await until(dup, "refusal", () => true);
    throw new Error("a second alice was accepted");
  } catch (e) {
    if (!(e instanceof ConnectError) || e.code !== Code.AlreadyExists) throw e;
  }
  console.log("ok errors as statuses");

  // Closing the stream ends the session: bob is seen leaving, and his token
  // stops working.
  bobAbort.abort();
  await until(alice, "bob left", (e) => e.case === "userEvent" && e.value.username === "bob" && e.value.type === 2);
  try {
    await client.sendMessage({ token: bobToken, message: "still here?" });
    throw new Error("a token outlived its session");
  } catch (e) {
    if (!(e instanceof ConnectError) || e.code !== Code.NotFound) throw e;
  }
  console.log("ok leave ends session");
  aliceAbort.abort();

  // The same gateway over HTTP/2 (prior knowledge, no TLS): unary and
  // server streaming.
  const h2 = createClient(service, createNodeGrpcWebTransport({ baseUrl, httpVersion: "2" }));
  if ((await h2.who({ room })).room !== room) throw new Error("who over h2c");
  const h2Abort = new AbortController();
  const h2Stream = h2.subscribe({ username: "h2c", room }, { signal: h2Abort.signal })[Symbol.asyncIterator]();
  await until(h2Stream, "h2c session", (e) => e.case === "sessionStarted");
  await until(h2Stream, "h2c welcome", (e) => e.case === "systemEvent" && e.value.message.startsWith("welcome"));
  h2Abort.abort();
  console.log("ok grpc-web over h2c");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`FAILED: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
