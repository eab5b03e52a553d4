// Byte fixtures for the page's own modules (web/src/grpc-web.js and
// web/src/proto.js), and tables for its commands and texts
// (web/src/commands.js), under Node's test runner; run by tests/web.rs.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  actionOf, charCount, memberEntries, parseInput, roomsText, whoText, withoutEpochs,
} from "../src/commands.js";
import { FrameReader, frame, parseTrailers } from "../src/grpc-web.js";
import {
  roomsResponse, sendMessageRequest, setTypingRequest, subscribeEvent, subscribeRequest, whoRequest, whoResponse,
} from "../src/proto.js";

const bytes = (...b) => Uint8Array.from(b);
const ascii = (s) => [...new TextEncoder().encode(s)];

test("a request message is prefixed with flag 0 and a big-endian length", () => {
  // 00 | 00 00 00 03 | 0a 01 61
  assert.deepEqual(frame(bytes(0x0a, 0x01, 0x61)), bytes(0, 0, 0, 0, 3, 0x0a, 0x01, 0x61));
});

test("frames are found across chunks cut anywhere", () => {
  // data: 00 | 00 00 00 02 | 08 01 ; trailers: 80 | 00 00 00 0f | "grpc-status:0\r\n"
  const body = [0, 0, 0, 0, 2, 0x08, 0x01, 0x80, 0, 0, 0, 15, ...ascii("grpc-status:0\r\n")];
  for (let cut = 0; cut <= body.length; cut++) {
    const reader = new FrameReader();
    const frames = [...reader.push(Uint8Array.from(body.slice(0, cut))), ...reader.push(Uint8Array.from(body.slice(cut)))];
    assert.equal(frames.length, 2, `cut at ${cut}`);
    assert.deepEqual(frames[0].message, bytes(0x08, 0x01));
    assert.equal(frames[1].trailers.get("grpc-status"), "0");
  }
});

test("a compressed frame is refused (the page never asks for compression)", () => {
  assert.throws(() => new FrameReader().push(bytes(1, 0, 0, 0, 0)));
});

test("trailers: lower-cased names, values kept", () => {
  const t = parseTrailers(Uint8Array.from(ascii("Grpc-Status:5\r\ngrpc-message:no%20such%20session\r\n")));
  assert.equal(t.get("grpc-status"), "5");
  assert.equal(t.get("grpc-message"), "no%20such%20session");
});

test("SubscribeRequest: strings, and last_id written even when 0 once set", () => {
  // 0a 03 "ann" | 12 03 "tea"
  assert.deepEqual(subscribeRequest({ username: "ann", room: "tea" }), bytes(0x0a, 3, ...ascii("ann"), 0x12, 3, ...ascii("tea")));
  // ... | 18 00 (field 3, varint 0) | 22 02 "e1"
  assert.deepEqual(
    subscribeRequest({ username: "ann", room: "", lastId: 0, epoch: "e1" }),
    bytes(0x0a, 3, ...ascii("ann"), 0x18, 0x00, 0x22, 2, ...ascii("e1")),
  );
  // last_id 300: varint ac 02
  assert.deepEqual(subscribeRequest({ username: "a", lastId: 300 }).slice(3), bytes(0x18, 0xac, 0x02));
});

test("SendMessage and SetTyping requests", () => {
  // 0a 01 "t" | 12 04 "h\u00e9!" (UTF-8: 68 c3 a9 21)
  assert.deepEqual(sendMessageRequest("t", "hé!"), bytes(0x0a, 1, 0x74, 0x12, 4, 0x68, 0xc3, 0xa9, 0x21));
  // 0a 01 "t" | 10 01 (TYPING_START)
  assert.deepEqual(setTypingRequest("t", 1), bytes(0x0a, 1, 0x74, 0x10, 0x01));
});

test("SubscribeEvent: each kind of event", () => {
  // chat_message (1): { message "hi" (0a 02), username "bo" (12 02), timestamp 5 (18 05), id 300 (20 ac 02) }
  const chat = [0x0a, 2, ...ascii("hi"), 0x12, 2, ...ascii("bo"), 0x18, 5, 0x20, 0xac, 0x02];
  assert.deepEqual(subscribeEvent(Uint8Array.from([0x0a, chat.length, ...chat])), {
    kind: "chatMessage", message: "hi", username: "bo", timestamp: 5, id: 300,
  });
  // system_event (3): { message "x", epoch "e" (1a 01), end_of_history true (20 01) }
  const sys = [0x0a, 1, ...ascii("x"), 0x1a, 1, ...ascii("e"), 0x20, 1];
  const event = subscribeEvent(Uint8Array.from([0x1a, sys.length, ...sys]));
  assert.equal(event.kind, "system");
  assert.equal(event.epoch, "e");
  assert.equal(event.endOfHistory, true);
  // session_started (16): key 16<<3|2 = 130 = varint 82 01
  const session = [0x0a, 2, ...ascii("ab")];
  assert.deepEqual(subscribeEvent(Uint8Array.from([0x82, 0x01, session.length, ...session])), {
    kind: "session", token: "ab", username: "", room: "", maxMessageChars: 0,
  });
  // An unknown event (field 9) is no event.
  assert.equal(subscribeEvent(bytes(0x4a, 0)).kind, null);
});

test("truncated protobuf is an error, not garbage", () => {
  assert.throws(() => subscribeEvent(bytes(0x0a, 5, 0x0a)));
});

test("Who: the room asked for, and the answer's repeated names", () => {
  // WhoRequest { room: "den" }: 0a 03 "den"
  assert.deepEqual(whoRequest("den"), bytes(0x0a, 3, ...ascii("den")));
  // WhoResponse { room: "den", users: ["ann", "bob"], listeners: 2 }
  const answer = bytes(0x0a, 3, ...ascii("den"), 0x12, 3, ...ascii("ann"), 0x12, 3, ...ascii("bob"), 0x18, 2);
  assert.deepEqual(whoResponse(answer), { room: "den", users: ["ann", "bob"], listeners: 2 });
});

test("Rooms: each RoomInfo with its member count", () => {
  // RoomsResponse { rooms: [{ name: "a", members: 3 }, { name: "b", members: 1 }] }
  const a = [0x0a, 5, 0x0a, 1, ...ascii("a"), 0x10, 3];
  const b = [0x0a, 5, 0x0a, 1, ...ascii("b"), 0x10, 1];
  assert.deepEqual(roomsResponse(bytes(...a, ...b)), [{ name: "a", members: 3 }, { name: "b", members: 1 }]);
});

test("SessionStarted carries the server's message limit", () => {
  // SubscribeEvent { session (16): { token "t", max_message_chars 2000 } }: 82 01 | len | 0a 01 74 20 d0 0f
  const session = [0x0a, 1, ...ascii("t"), 0x20, 0xd0, 0x0f];
  const event = subscribeEvent(bytes(0x82, 0x01, session.length, ...session));
  assert.equal(event.kind, "session");
  assert.equal(event.maxMessageChars, 2000);
});

test("input lines: messages, commands as the terminal client has them", () => {
  const cases = [
    ["hello", { kind: "say", text: "hello" }],
    ["  spaced  ", { kind: "say", text: "  spaced  " }],
    ["", { kind: "nothing" }],
    ["   ", { kind: "nothing" }],
    ["/me waves", { kind: "say", text: "/me waves" }],
    ["/ME   waves  twice ", { kind: "say", text: "/me waves  twice" }],
    ["//etc/hosts", { kind: "say", text: "/etc/hosts" }],
    ["/join kitchen", { kind: "join", room: "kitchen" }],
    ["/join #kitchen ", { kind: "join", room: "kitchen" }],
    ["/j tea", { kind: "join", room: "tea" }],
    ["/leave", { kind: "part" }],
    ["/part", { kind: "part" }],
    ["/quit", { kind: "leave" }],
    ["/rooms", { kind: "rooms" }],
    ["/list", { kind: "rooms" }],
    ["/who", { kind: "who" }],
    ["/NAMES", { kind: "who" }],
    ["/help", { kind: "help" }],
    ["/?", { kind: "help" }],
    ["/clear", { kind: "clear" }],
    ["/me", { kind: "invalid", why: "usage: /me ACTION" }],
    ["/join", { kind: "invalid", why: "usage: /join ROOM" }],
    ["/join two words", { kind: "invalid", why: "usage: /join ROOM" }],
    ["/", { kind: "invalid", why: "unknown command / (try /help; start with // to send a /)" }],
    ["/frobnicate x", { kind: "invalid", why: "unknown command /frobnicate (try /help; start with // to send a /)" }],
  ];
  for (const [line, want] of cases) assert.deepEqual(parseInput(line), want, JSON.stringify(line));
});

test("actions: a text starting with \"/me \" (proto/chat.proto's convention)", () => {
  assert.equal(actionOf("/me waves"), "waves");
  assert.equal(actionOf("/me  "), " ");
  assert.equal(actionOf("/meh"), null);
  assert.equal(actionOf(" /me waves"), null);
  assert.equal(actionOf("hello"), null);
});

test("server notices are shown without history epochs", () => {
  const cases = [
    ["end of history: 3 earlier messages (history epoch a30f859b42b15f00)", "end of history: 3 earlier messages"],
    ["end of history: 1 earlier message (history epoch e1)", "end of history: 1 earlier message"],
    ["end of history: none available", "end of history: none available"],
    [
      "history was lost since you were last here (history epoch a30f859b42b15f00 is now 0123456789abcdef): showing the latest messages",
      "history was lost since you were last here: showing the latest messages",
    ],
    [
      "history was lost (the history store restarted empty): history epoch a30f859b42b15f00 is now 0123456789abcdef",
      "history was lost (the history store restarted empty)",
    ],
    ["welcome to tea, alice: you are the only one here", "welcome to tea, alice: you are the only one here"],
  ];
  for (const [text, want] of cases) assert.equal(withoutEpochs(text), want);
});

test("characters are counted as the server counts them (scalar values)", () => {
  assert.equal(charCount("abc"), 3);
  assert.equal(charCount("h\u00e9"), 2);
  assert.equal(charCount("\u{1F44B}\u{1F44B}"), 2);
});

test("member list: sorted, ours marked, unnamed listeners counted", () => {
  assert.deepEqual(memberEntries({ room: "tea", users: ["carol", "Alice", "bob"], listeners: 2 }, "alice"), {
    entries: [{ name: "Alice", you: true }, { name: "bob", you: false }, { name: "carol", you: false }],
    more: "+ 2 listening",
  });
  assert.deepEqual(memberEntries({ room: "tea", users: ["bob"], listeners: 0 }, "alice"), {
    entries: [{ name: "bob", you: false }],
    more: "",
  });
});

test("/who and /rooms answers", () => {
  assert.equal(whoText({ room: "tea", users: ["alice", "bob"], listeners: 0 }), "in tea: alice, bob (2)");
  assert.equal(whoText({ room: "tea", users: ["alice"], listeners: 1 }), "in tea: alice (1); 1 more has not spoken yet");
  assert.equal(whoText({ room: "tea", users: [], listeners: 3 }), "in tea: nobody named (0); 3 more have not spoken yet");
  assert.equal(roomsText([{ name: "lobby", members: 1 }, { name: "tea", members: 3 }]), "rooms: lobby (1), tea (3)");
  assert.equal(roomsText([]), "no room has anyone in it");
});
