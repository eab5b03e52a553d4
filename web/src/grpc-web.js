// gRPC-Web over fetch: the client side of src/framing/grpc_web.rs.
//
// A call is one POST. The request body is one length-prefixed message:
//
//   00 | length (4 bytes, big endian) | message
//
// The response body is a sequence of such frames; the last one has flag
// 0x80 and carries the trailers as "name:value\r\n" lines, because fetch
// gives a page no access to HTTP trailers. The status is there (or, for a
// response without messages, possibly in the response headers).

const CONTENT_TYPE = "application/grpc-web+proto";

/** A call that ended with a gRPC status other than OK. */
export class GrpcError extends Error {
  constructor(code, message) {
    super(message ? `${codeName(code)}: ${message}` : codeName(code));
    this.code = code;
    this.grpcMessage = message;
  }
}

export const Code = Object.freeze({
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12,
  INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
});

function codeName(code) {
  return Object.keys(Code).find((k) => Code[k] === code) ?? `code ${code}`;
}

/** Prefixes a message for the request body. */
export function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** Reads "grpc-status:0\r\ngrpc-message:..." into a Map. */
export function parseTrailers(bytes) {
  const fields = new Map();
  for (const line of new TextDecoder().decode(bytes).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return fields;
}

function statusFrom(fields) {
  const code = Number.parseInt(fields.get("grpc-status") ?? "", 10);
  if (Number.isNaN(code)) return new GrpcError(Code.INTERNAL, "response without grpc-status");
  if (code === Code.OK) return null;
  let message = fields.get("grpc-message") ?? "";
  try {
    message = decodeURIComponent(message);
  } catch {
    // Keep it as sent.
  }
  return new GrpcError(code, message);
}

/**
 * Splits a growing body into frames. `push` takes a chunk and returns the
 * complete frames it finished: {trailers: Map} or {message: Uint8Array}.
 */
export class FrameReader {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  push(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    const frames = [];
    let at = 0;
    while (joined.length - at >= 5) {
      const flag = joined[at];
      const length = new DataView(joined.buffer, joined.byteOffset + at + 1, 4).getUint32(0);
      if (joined.length - at - 5 < length) break;
      const body = joined.slice(at + 5, at + 5 + length);
      at += 5 + length;
      if (flag & 0x80) frames.push({ trailers: parseTrailers(body) });
      else if (flag === 0) frames.push({ message: body });
      else throw new GrpcError(Code.INTERNAL, `unsupported frame flag ${flag}`);
    }
    this.buffer = joined.slice(at);
    return frames;
  }
}

async function post(base, method, request, signal, metadata) {
  let response;
  try {
    response = await fetch(`${base}/${method}`, {
      method: "POST",
      headers: { ...metadata, "content-type": CONTENT_TYPE, "x-grpc-web": "1", "x-user-agent": "grpc-chat-web/0.1" },
      body: frame(request),
      signal,
    });
  } catch (e) {
    if (signal?.aborted) throw new GrpcError(Code.CANCELLED, "cancelled");
    throw new GrpcError(Code.UNAVAILABLE, `network: ${e.message}`);
  }
  if (response.status !== 200) {
    throw new GrpcError(response.status === 503 ? Code.UNAVAILABLE : Code.UNKNOWN, `HTTP ${response.status}`);
  }
  return response;
}

/**
 * A server-streaming call: yields each response message (bytes) as it
 * arrives; throws a GrpcError when the call ends with an error status.
 * `metadata`: request headers for the call (e.g. authorization).
 */
export async function* serverStream(base, method, request, { signal, metadata = {} } = {}) {
  const response = await post(base, method, request, signal, metadata);
  // A trailers-only answer may carry its status in the headers (our
  // gateway moves it into the body, other servers may not).
  if (response.headers.has("grpc-status")) {
    const error = statusFrom(response.headers);
    if (error) throw error;
    return;
  }
  const reader = response.body.getReader();
  const frames = new FrameReader();
  try {
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        if (signal?.aborted) throw new GrpcError(Code.CANCELLED, "cancelled");
        throw new GrpcError(Code.UNAVAILABLE, `connection lost: ${e.message}`);
      }
      if (next.done) throw new GrpcError(Code.UNAVAILABLE, "the response ended without a status");
      for (const f of frames.push(next.value)) {
        if (f.trailers) {
          const error = statusFrom(f.trailers);
          if (error) throw error;
          return;
        }
        yield f.message;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** A unary call: the one response message (bytes). */
export async function unary(base, method, request, options = {}) {
  let message = null;
  for await (const m of serverStream(base, method, request, options)) message = m;
  if (message === null) throw new GrpcError(Code.INTERNAL, "no response message");
  return message;
}
