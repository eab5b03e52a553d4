//! Raw HTTP/2 for the tests that play a misbehaving or unusual peer: the
//! `h2` crate with no gRPC layer in between (so a test sees exactly the HTTP
//! status, whether an answer was trailers-only, the `grpc-status`), and
//! hand-written frames over plain TCP for what `h2` will not send (a request
//! without `:path`, more streams than the server allows, CONTINUATION
//! floods).
//!
//! * [`connect`] / [`call`] / [`Answer`]: one request, its whole answer.
//! * [`raw_chat_stream`] / [`drain_to_status`]: a `ChatStream` call whose
//!   response nobody reads until the test does.
//! * [`frame`], [`PREFACE_AND_SETTINGS`], [`FrameReader`]: HTTP/2 frames as
//!   bytes, both ways.
//! * [`until_closed`]: how long the server takes to close a socket.

use std::time::Duration;

use bytes::Bytes;
use grpc_chat::Status;
use http::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a test waits for any one answer before failing.
pub use super::WAIT;

/// The request headers of a gRPC call.
pub const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc"), ("te", "trailers")];

/// An HTTP/2 connection with the `h2` client, ready for a request.
pub async fn connect(address: &str) -> h2::client::SendRequest<Bytes> {
    let socket = TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

/// What came back: status, headers, body bytes, trailers (None when the
/// response was trailers-only).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

impl Answer {
    /// `grpc-status` from the trailers, or from the headers of a
    /// trailers-only response.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }

    /// `grpc-message`, percent-decoded.
    pub fn grpc_message(&self) -> String {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| self.headers.get("grpc-message"))
            .map(|v| grpc_chat::framing::decode_grpc_message(v.as_bytes()))
            .unwrap_or_default()
    }
}

/// One request on a new connection: `body` is sent as one DATA frame with
/// END_STREAM, then the whole answer is read.
pub async fn call(
    address: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut client = connect(address).await;
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    // A server that refuses at the headers may have ended the stream
    // already; its answer is what the caller wants.
    let _ = send.send_data(Bytes::copy_from_slice(body), true);
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    read_answer(response).await
}

/// Reads a response to its end.
pub async fn read_answer(response: http::Response<h2::RecvStream>) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let mut recv = response.into_body();
    let trailers_only = recv.is_end_stream();
    let mut data = Vec::new();
    while let Some(chunk) = timeout(WAIT, recv.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        data.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = if trailers_only {
        None
    } else {
        timeout(WAIT, recv.trailers()).await.unwrap().unwrap()
    };
    Answer {
        status,
        headers,
        body: data,
        trailers,
    }
}

/// Opens a `ChatStream` call with raw HTTP/2 (the `h2` crate, with a stream
/// window of `window` bytes) and sends `first` as its first DATA. Nothing
/// reads the response or returns window until the test does: a client that
/// stops reading, or one that sends bytes our client layer never would.
pub async fn raw_chat_stream_with(
    address: &str,
    window: u32,
    metadata: &[(&str, &str)],
    first: Bytes,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let socket = TcpStream::connect(address).await.unwrap();
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(socket)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{address}/chat.ChatService/ChatStream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let (response, mut send) = h2.send_request(request.body(()).unwrap(), false).unwrap();
    send.send_data(first, false).unwrap();
    (response, send)
}

/// [`raw_chat_stream_with`] with the smallest legal-by-default stream window
/// (64 KiB - 1) and no metadata.
pub async fn raw_chat_stream(
    address: &str,
    first: Bytes,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    raw_chat_stream_with(address, 65_535, &[], first).await
}

/// Reads a raw response body to its end: the DATA bytes received, and the
/// status from the trailers.
pub async fn drain_to_status(mut body: h2::RecvStream) -> (usize, Status) {
    let mut received = 0;
    while let Some(chunk) = timeout(WAIT, body.data())
        .await
        .unwrap_or_else(|_| panic!("no end after {received} bytes"))
    {
        let chunk = chunk.unwrap();
        received += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = timeout(WAIT, body.trailers())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (received, Status::from_trailers(&trailers).unwrap())
}

/// Reads from `socket` until the server closes it; returns how long that
/// took. Panics if it stays open for `within`.
pub async fn until_closed(mut socket: TcpStream, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(within, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

/// The client connection preface, then an empty SETTINGS frame:
/// length 0 | type 0x4 (SETTINGS) | flags 0 | stream 0.
pub const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Frame types and flags (RFC 9113 §6), from the crate's one frame-header
/// module. (Each test binary uses a few of them; the rest are not unused.)
#[allow(unused_imports)]
pub use grpc_chat::http2::frame::{
    CONTINUATION, DATA, FLAG_ACK as ACK, FLAG_END_HEADERS as END_HEADERS,
    FLAG_END_STREAM as END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};
use grpc_chat::http2::frame::{FrameHead, HEADER_LEN, MAX_LENGTH};

/// One HTTP/2 frame:
///
/// ```text
/// +-----------------------------------------------+
/// |                 Length (24)                   |
/// +---------------+---------------+---------------+
/// |   Type (8)    |   Flags (8)   |
/// +-+-------------+---------------+-------------------------------+
/// |R|                 Stream Identifier (31)                      |
/// +=+=============================================================+
/// |                   Frame Payload (0...)                      ...
/// +---------------------------------------------------------------+
/// ```
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    assert!(length <= MAX_LENGTH, "frame payload too long");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    FrameHead {
        length,
        kind,
        flags,
        stream,
    }
    .encode(&mut out);
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block for `POST /chat.ChatService/ChatStream` with
/// `content-type: application/grpc`, using only literals without indexing
/// (so every stream's block is the same bytes: no dynamic table state):
///
/// ```text
/// 0x83                    :method POST        (static index 3, indexed)
/// 0x86                    :scheme http        (static index 6, indexed)
/// 0x04 len "/chat…"       :path …             (static name 4, literal value)
/// 0x01 len "localhost"    :authority          (static name 1, literal value)
/// 0x0f 0x10 len "appl…"   content-type …      (static name 31 = 15 + 16)
/// ```
pub fn chat_stream_header_block() -> Vec<u8> {
    header_block(Some("/chat.ChatService/ChatStream"))
}

/// Like [`chat_stream_header_block`], with the given `:path`, or none.
pub fn header_block(path: Option<&str>) -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    if let Some(path) = path {
        literal(&mut block, &[0x04], path.as_bytes());
    }
    literal(&mut block, &[0x01], b"localhost");
    literal(&mut block, &[0x0f, 0x10], b"application/grpc");
    block
}

/// Appends `name: value` to a header block as a "literal header field
/// without indexing — new name" (`0x00`, then both strings; each at most
/// 126 bytes, no Huffman coding).
pub fn push_header(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    for text in [name.as_bytes(), value.as_bytes()] {
        assert!(text.len() < 127);
        block.push(text.len() as u8);
        block.extend_from_slice(text);
    }
}

/// A header block as HEADERS + CONTINUATION frames of at most 16 KiB (the
/// default SETTINGS_MAX_FRAME_SIZE) on `stream`, END_HEADERS on the last,
/// END_STREAM on the HEADERS if asked.
pub fn header_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 {
            let end = if end_stream { END_STREAM } else { 0 };
            out.extend(frame(HEADERS, last | end, stream, chunk));
        } else {
            out.extend(frame(CONTINUATION, last, stream, chunk));
        }
    }
    out
}

/// A "literal header field without indexing — indexed name": the name's
/// prefix bytes, then a string of at most 126 bytes (7-bit length, no
/// Huffman coding).
fn literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    assert!(value.len() < 127);
    block.extend_from_slice(name);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}

/// A frame read back from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY (after last-stream-id) or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// Reads frames from the server side of a raw connection.
pub struct FrameReader {
    buf: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader { buf: Vec::new() }
    }

    /// The next frame, or `None` when the connection closed (or failed).
    pub async fn next(&mut self, socket: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
        loop {
            if let Some(head) = FrameHead::peek(&self.buf) {
                let total = HEADER_LEN + head.length as usize;
                if self.buf.len() >= total {
                    let whole: Vec<u8> = self.buf.drain(..total).collect();
                    return Some(Frame {
                        kind: head.kind,
                        flags: head.flags,
                        stream: head.stream,
                        payload: whole[HEADER_LEN..].to_vec(),
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match timeout(WAIT, socket.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no frame from the server within {WAIT:?}"),
            }
        }
    }
}

/// A TCP connection that has sent the preface and an empty SETTINGS, read
/// the server's SETTINGS and acknowledged them, ready for hand-written
/// frames. Frames the server sent before its SETTINGS (none, normally) are
/// dropped.
pub async fn raw_connection(address: &str) -> (TcpStream, FrameReader) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    let mut reader = FrameReader::new();
    loop {
        let frame = reader
            .next(&mut socket)
            .await
            .expect("connection closed before the server's SETTINGS");
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            break;
        }
    }
    // SETTINGS with the ACK flag: length 0 | type 4 | flags 1 | stream 0.
    // (A server that is turning us away may have closed already; the
    // caller will read its GOAWAY.)
    let _ = socket.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
    (socket, reader)
}
