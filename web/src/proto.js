// Protocol Buffers for the few messages the page exchanges (see
// proto/chat.proto; field numbers must match it). Hand-written: the wire
// format of strings, varints and nested messages is small, and the page
// stays a handful of files the browser loads as they are.

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

class Writer {
  constructor() {
    this.bytes = [];
  }
  varint(value) {
    let v = BigInt(value);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) byte |= 0x80;
      this.bytes.push(byte);
    } while (v > 0n);
    return this;
  }
  tag(field, wireType) {
    return this.varint((field << 3) | wireType);
  }
  // Proto3 leaves default values out.
  string(field, value) {
    if (!value) return this;
    const b = utf8.encode(value);
    this.tag(field, 2).varint(b.length);
    this.bytes.push(...b);
    return this;
  }
  uint(field, value) {
    return value ? this.tag(field, 0).varint(value) : this;
  }
  // proto3 `optional`: written even when zero, if set.
  optionalUint(field, value) {
    return value === undefined || value === null ? this : this.tag(field, 0).varint(value);
  }
  finish() {
    return Uint8Array.from(this.bytes);
  }
}

/** Reads the fields of one message: [{field, wireType, value}]. */
function fields(bytes) {
  const out = [];
  let at = 0;
  const varint = () => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (at >= bytes.length) throw new Error("truncated varint");
      const b = bytes[at++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
      if (shift > 63n) throw new Error("varint too long");
    }
  };
  while (at < bytes.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wireType = key & 7;
    let value;
    if (wireType === 0) value = varint();
    else if (wireType === 2) {
      const length = Number(varint());
      if (at + length > bytes.length) throw new Error("truncated field");
      value = bytes.subarray(at, at + length);
      at += length;
    } else if (wireType === 1) {
      at += 8;
      value = null;
    } else if (wireType === 5) {
      at += 4;
      value = null;
    } else throw new Error(`unsupported wire type ${wireType}`);
    out.push({ field, wireType, value });
  }
  return out;
}

/** Decodes by a schema {fieldNumber: [name, kind]}, kind: string|int|bool. */
function decode(bytes, schema) {
  const message = {};
  for (const [, [name, kind]] of Object.entries(schema)) {
    message[name] = kind === "string" ? "" : kind === "bool" ? false : 0;
  }
  for (const { field, value } of fields(bytes)) {
    const entry = schema[field];
    if (!entry || value === null) continue;
    const [name, kind] = entry;
    if (kind === "string") message[name] = fromUtf8.decode(value);
    else if (kind === "bool") message[name] = value !== 0n;
    // Ids and timestamps fit a JavaScript number for ages to come.
    else message[name] = Number(BigInt.asIntN(64, value));
  }
  return message;
}

const CHAT_MESSAGE = { 1: ["message", "string"], 2: ["username", "string"], 3: ["timestamp", "int"], 4: ["id", "int"] };
const TYPING = { 1: ["username", "string"], 2: ["timestamp", "int"], 3: ["type", "int"] };
const SYSTEM = { 1: ["message", "string"], 2: ["timestamp", "int"], 3: ["epoch", "string"], 4: ["endOfHistory", "bool"] };
const USER = { 1: ["type", "int"], 2: ["username", "string"], 3: ["timestamp", "int"] };
const SESSION = { 1: ["token", "string"], 2: ["username", "string"], 3: ["room", "string"], 4: ["maxMessageChars", "int"] };

const EVENTS = {
  1: ["chatMessage", CHAT_MESSAGE],
  2: ["typing", TYPING],
  3: ["system", SYSTEM],
  4: ["user", USER],
  16: ["session", SESSION],
};

export const TYPING_START = 1;
export const TYPING_STOP = 2;
export const USER_JOINED = 1;
export const USER_LEFT = 2;

/** chat.SubscribeRequest */
export function subscribeRequest({ username, room, lastId, epoch }) {
  return new Writer().string(1, username).string(2, room).optionalUint(3, lastId).string(4, epoch).finish();
}

/** chat.SendMessageRequest */
export function sendMessageRequest(token, message) {
  return new Writer().string(1, token).string(2, message).finish();
}

/** chat.SetTypingRequest */
export function setTypingRequest(token, type) {
  return new Writer().string(1, token).uint(2, type).finish();
}

/** chat.SubscribeEvent → {kind, ...fields}; kind null for an unknown event. */
export function subscribeEvent(bytes) {
  let event = { kind: null };
  for (const { field, wireType, value } of fields(bytes)) {
    const entry = EVENTS[field];
    if (entry && wireType === 2) event = { kind: entry[0], ...decode(value, entry[1]) };
  }
  return event;
}

/** chat.WhoRequest */
export function whoRequest(room) {
  return new Writer().string(1, room).finish();
}

/** chat.WhoResponse → {room, users: [names], listeners} */
export function whoResponse(bytes) {
  const who = { room: "", users: [], listeners: 0 };
  for (const { field, wireType, value } of fields(bytes)) {
    if (field === 1 && wireType === 2) who.room = fromUtf8.decode(value);
    else if (field === 2 && wireType === 2) who.users.push(fromUtf8.decode(value));
    else if (field === 3 && wireType === 0) who.listeners = Number(value);
  }
  return who;
}

/** chat.RoomsRequest (no fields). */
export function roomsRequest() {
  return new Writer().finish();
}

/** chat.RoomsResponse → [{name, members}], as the server sorted them. */
export function roomsResponse(bytes) {
  const rooms = [];
  for (const { field, wireType, value } of fields(bytes)) {
    if (field === 1 && wireType === 2) rooms.push(decode(value, { 1: ["name", "string"], 2: ["members", "int"] }));
  }
  return rooms;
}
