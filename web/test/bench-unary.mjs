// What the gRPC-Web gateway costs a unary call: the same client library
// (Connect) and the same RPC (Who), once over native gRPC (HTTP/2, straight
// to chat-server) and once over gRPC-Web (HTTP/1.1, through the gateway).
//
//   node bench-unary.mjs <web url> <native url> <descriptors.bin> [calls] [concurrency]
//
// Not a test: figures go to docs/web.md with the command used.

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

const [webUrl, nativeUrl, descriptors, callsArg = "5000", concurrencyArg = "16"] = process.argv.slice(2);
const calls = Number(callsArg);
const concurrency = Number(concurrencyArg);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = registry.getService("chat.ChatService");

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];

async function run(name, transport) {
  const client = createClient(service, transport);
  for (let i = 0; i < 200; i++) await client.who({ room: "bench" });
  // Sequential: latency of one call at a time.
  const latencies = [];
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await client.who({ room: "bench" });
    latencies.push(performance.now() - t);
  }
  latencies.sort((a, b) => a - b);
  // Concurrent: throughput with `concurrency` calls in flight.
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < calls) await client.who({ room: "bench" });
    }),
  );
  const rate = calls / ((performance.now() - start) / 1000);
  console.log(
    `${name.padEnd(28)} p50 ${percentile(latencies, 50).toFixed(3)} ms  p99 ${percentile(latencies, 99).toFixed(3)} ms  ` +
      `${Math.round(rate)} calls/s with ${concurrency} in flight`,
  );
}

await run("native gRPC (HTTP/2)", createGrpcTransport({ baseUrl: nativeUrl }));
await run("gRPC-Web via gateway (h1)", createGrpcWebTransport({ baseUrl: webUrl, httpVersion: "1.1" }));
