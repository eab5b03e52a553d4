//! gRPC-Web's wire format: what differs from native gRPC when a browser is
//! the client, and nothing else (no I/O; the gateway in `src/web` drives it).
//!
//! The normative text quoted here is gRPC's
//! [PROTOCOL-WEB.md](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
//! A browser's `fetch` cannot send or read HTTP/2 trailers, nor choose
//! HTTP/2 at all, so gRPC-Web moves the trailers *into the body*, as one
//! more length-prefixed frame whose flag byte has its top bit set:
//!
//! ```text
//!  response body (application/grpc-web+proto):
//!
//!   +----+-------------+------------------+----+-------------+-----------------------------+
//!   | 00 | len (u32 BE)| message          | 80 | len (u32 BE)| grpc-status:0\r\n           |
//!   +----+-------------+------------------+----+-------------+ grpc-message:...\r\n        |
//!    a data frame: exactly native gRPC's    the trailers frame: an HTTP/1 header block      |
//!                                           (lower-case names), always last  -------------+
//!
//!  e.g. one empty message then status OK:
//!   00 00 00 00 00                                        data, 0 bytes
//!   80 00 00 00 0f 67 72 70 63 2d 73 74 61 74 75 73 3a 30 0d 0a   "grpc-status:0\r\n"
//! ```
//!
//! Data frames are byte for byte native gRPC's, so the gateway passes them
//! through; only the trailers are translated. In **text mode**
//! (`application/grpc-web-text`) both bodies are base64: the request so that
//! old XHR-only clients can send it, the response so that they can read it
//! as it streams. Base64 runs may be concatenated, each with its own padding,
//! which is why [`TextDecoder`] decodes padded groups one run at a time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};

use super::message::{PREFIX_LEN, Prefix};

/// The flag byte of a trailers frame.
///
/// "The MSB of the first byte of the length-prefixed message is set to 1 to
/// indicate that the message is trailers" — the other bits keep their
/// meaning (bit 0: compressed), and we never compress trailers.
pub const TRAILERS_FLAG: u8 = 0x80;

/// The `x-grpc-web` request header gRPC-Web clients send (value `1`).
pub const X_GRPC_WEB: &str = "x-grpc-web";

/// Which of the two gRPC-Web body encodings a call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto]`: frames as bytes.
    Binary,
    /// `application/grpc-web-text[+proto]`: frames in base64.
    Text,
}

/// A parsed gRPC-Web `content-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebContentType {
    /// Binary or base64 bodies.
    pub mode: Mode,
}

/// Why a request is not one the gateway can translate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebError {
    /// A gRPC-Web content type with a message codec other than protobuf
    /// (e.g. `application/grpc-web+json`).
    UnsupportedCodec(String),
    /// The text-mode body is not base64.
    InvalidBase64,
    /// A frame flag that is neither data (0, 1) nor trailers (top bit).
    InvalidFlag(u8),
    /// A trailers frame whose header block cannot be read.
    InvalidTrailers(&'static str),
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebError::UnsupportedCodec(codec) => {
                write!(f, "unsupported gRPC-Web message codec {codec:?}")
            }
            WebError::InvalidBase64 => f.write_str("the grpc-web-text body is not valid base64"),
            WebError::InvalidFlag(flag) => write!(f, "invalid gRPC-Web frame flag {flag:#04x}"),
            WebError::InvalidTrailers(why) => write!(f, "invalid gRPC-Web trailers frame: {why}"),
        }
    }
}

impl std::error::Error for WebError {}

impl WebContentType {
    /// Reads a `content-type` value. `Ok(None)`: not gRPC-Web at all (the
    /// gateway answers it as plain HTTP); `Err`: gRPC-Web with a codec we
    /// do not speak.
    ///
    /// "Content-Type: application/grpc-web, application/grpc-web+proto,
    /// application/grpc-web-text, application/grpc-web-text+proto" — with
    /// no suffix the codec is protobuf. Media types are case-insensitive and
    /// may carry parameters (`; charset=...`), which we ignore.
    pub fn parse(value: &str) -> Result<Option<WebContentType>, WebError> {
        let essence = value.split(';').next().unwrap_or("").trim();
        let lower = essence.to_ascii_lowercase();
        // Text first: "application/grpc-web" is a prefix of the text type.
        let (mode, rest) = if let Some(rest) = lower.strip_prefix("application/grpc-web-text") {
            (Mode::Text, rest)
        } else if let Some(rest) = lower.strip_prefix("application/grpc-web") {
            (Mode::Binary, rest)
        } else {
            return Ok(None);
        };
        match rest {
            "" | "+proto" => Ok(Some(WebContentType { mode })),
            other => match other.strip_prefix('+') {
                Some(codec) => Err(WebError::UnsupportedCodec(codec.to_owned())),
                // e.g. "application/grpc-webfoo": another type altogether.
                None => Ok(None),
            },
        }
    }

    /// The `content-type` of the response, in the request's mode.
    pub fn response_value(&self) -> &'static str {
        match self.mode {
            Mode::Binary => "application/grpc-web+proto",
            Mode::Text => "application/grpc-web-text+proto",
        }
    }
}

/// Writes a trailers frame carrying `fields` (name, value pairs; names are
/// written lower-case).
///
/// "Trailers ... are encoded as an HTTP/1 headers block" — `name:value`
/// lines ended by CRLF, no blank line at the end — inside a length-prefixed
/// frame with flag [`TRAILERS_FLAG`].
pub fn encode_trailers<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    dst: &mut impl BufMut,
) {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        block.push(b':');
        block.extend_from_slice(value);
        block.extend_from_slice(b"\r\n");
    }
    // A header block larger than 4 GiB cannot exist: h2 refuses header
    // lists far smaller than that.
    let len = u32::try_from(block.len()).unwrap_or(u32::MAX);
    dst.put_u8(TRAILERS_FLAG);
    dst.put_u32(len);
    dst.put_slice(&block);
}

/// One frame of a gRPC-Web body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message, as in native gRPC (possibly compressed).
    Data {
        /// The compressed flag.
        compressed: bool,
        /// The payload.
        payload: Bytes,
    },
    /// The trailers: `(name, value)` pairs, names lower-case.
    Trailers(Vec<(String, String)>),
}

impl Frame {
    /// Takes one frame off the front of `src`. `Ok(None)` when the frame is
    /// not complete yet (nothing is consumed then).
    pub fn parse(src: &mut BytesMut) -> Result<Option<Frame>, WebError> {
        let Some(&[flag, l0, l1, l2, l3]) = src.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if src.len() - PREFIX_LEN < len {
            return Ok(None);
        }
        let frame = src
            .split_to(PREFIX_LEN + len)
            .split_off(PREFIX_LEN)
            .freeze();
        if flag & TRAILERS_FLAG != 0 {
            return parse_trailer_block(&frame).map(|t| Some(Frame::Trailers(t)));
        }
        match Prefix::parse(&[flag, l0, l1, l2, l3]) {
            Ok(Some(prefix)) => Ok(Some(Frame::Data {
                compressed: prefix.compressed,
                payload: frame,
            })),
            _ => Err(WebError::InvalidFlag(flag)),
        }
    }
}

/// Reads the header block of a trailers frame.
fn parse_trailer_block(block: &[u8]) -> Result<Vec<(String, String)>, WebError> {
    let text =
        std::str::from_utf8(block).map_err(|_| WebError::InvalidTrailers("not UTF-8 text"))?;
    let mut fields = Vec::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(WebError::InvalidTrailers("a line without ':'"))?;
        fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(fields)
}

/// Incremental base64 decoder for text-mode request bodies.
///
/// Body chunks arrive wherever the network cut them, so a chunk rarely
/// holds a whole number of 4-character groups: the tail waits for the next
/// chunk. Padding (`=`) may end a run in the middle of the body (a client
/// may encode each message separately), so decoding goes run by run.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// Base64 characters not decoded yet (fewer than 4 after each push).
    pending: Vec<u8>,
}

impl TextDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes what `chunk` completes, appending the bytes to `dst`.
    /// Whitespace is skipped (some clients wrap lines).
    pub fn push(&mut self, chunk: &[u8], dst: &mut BytesMut) -> Result<(), WebError> {
        self.pending
            .extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut start = 0;
        // Each group that holds padding ends a run: decode up to it.
        for group in (0..whole).step_by(4) {
            if self.pending[group..group + 4].contains(&b'=') {
                decode_run(&self.pending[start..group + 4], dst)?;
                start = group + 4;
            }
        }
        decode_run(&self.pending[start..whole], dst)?;
        self.pending.drain(..whole);
        Ok(())
    }

    /// Call at the end of the body: leftover characters that do not make a
    /// group are an error.
    pub fn finish(&self) -> Result<(), WebError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(WebError::InvalidBase64)
        }
    }
}

fn decode_run(run: &[u8], dst: &mut BytesMut) -> Result<(), WebError> {
    if run.is_empty() {
        return Ok(());
    }
    let decoded = STANDARD.decode(run).map_err(|_| WebError::InvalidBase64)?;
    dst.extend_from_slice(&decoded);
    Ok(())
}

/// Encodes one chunk of a text-mode response body.
///
/// Each chunk is encoded on its own, padding included, rather than carrying
/// up to two bytes over to the next: a streamed message must reach the
/// browser whole as soon as it is sent, not when the next one comes. gRPC-Web
/// text decoders accept such concatenated runs (see [`TextDecoder`]).
pub fn encode_text(chunk: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let binary = Some(WebContentType { mode: Mode::Binary });
        let text = Some(WebContentType { mode: Mode::Text });
        assert_eq!(WebContentType::parse("application/grpc-web"), Ok(binary));
        assert_eq!(
            WebContentType::parse("application/grpc-web+proto"),
            Ok(binary)
        );
        assert_eq!(
            WebContentType::parse("Application/GRPC-Web+Proto; charset=utf-8"),
            Ok(binary)
        );
        assert_eq!(WebContentType::parse("application/grpc-web-text"), Ok(text));
        assert_eq!(
            WebContentType::parse("application/grpc-web-text+proto"),
            Ok(text)
        );
        assert_eq!(
            WebContentType::parse("application/grpc-web+json"),
            Err(WebError::UnsupportedCodec("json".into()))
        );
        // Native gRPC and everything else are not gRPC-Web.
        assert_eq!(WebContentType::parse("application/grpc"), Ok(None));
        assert_eq!(WebContentType::parse("application/grpc-webx"), Ok(None));
        assert_eq!(WebContentType::parse("text/html"), Ok(None));
        assert_eq!(WebContentType::parse(""), Ok(None));
    }

    #[test]
    fn encodes_status_ok_trailers_frame() {
        let mut out = BytesMut::new();
        encode_trailers([("grpc-status", &b"0"[..])], &mut out);
        // flag=0x80 | len=15 | "grpc-status:0\r\n"
        let expected: &[u8] = &[
            0x80, 0x00, 0x00, 0x00, 0x0f, //
            b'g', b'r', b'p', b'c', b'-', b's', b't', b'a', b't', b'u', b's', b':', b'0', b'\r',
            b'\n',
        ];
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn trailers_frame_lowercases_names_and_round_trips() {
        let mut out = BytesMut::new();
        encode_trailers(
            [
                ("Grpc-Status", &b"5"[..]),
                ("grpc-message", &b"no%20such%20room"[..]),
            ],
            &mut out,
        );
        // flag=0x80 | len=0x2e (46) | "grpc-status:5\r\n" "grpc-message:no%20such%20room\r\n"
        assert_eq!(&out[..5], &[0x80, 0x00, 0x00, 0x00, 0x2e]);
        assert_eq!(
            &out[5..],
            b"grpc-status:5\r\ngrpc-message:no%20such%20room\r\n"
        );
        let frame = Frame::parse(&mut out).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Trailers(vec![
                ("grpc-status".into(), "5".into()),
                ("grpc-message".into(), "no%20such%20room".into())
            ])
        );
        assert!(out.is_empty());
    }

    #[test]
    fn parses_data_then_trailers_frames() {
        // data: flag=0 | len=3 | 08 96 01 (a varint field) ;
        // trailers: flag=0x80 | len=15 | "grpc-status:0\r\n" ; arriving in pieces
        let body: &[u8] = &[
            0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x96, 0x01, //
            0x80, 0x00, 0x00, 0x00, 0x0f, b'g', b'r', b'p', b'c', b'-', b's', b't', b'a', b't',
            b'u', b's', b':', b'0', b'\r', b'\n',
        ];
        let mut buf = BytesMut::from(&body[..6]);
        assert_eq!(
            Frame::parse(&mut buf).unwrap(),
            None,
            "a partial frame waits"
        );
        buf.extend_from_slice(&body[6..]);
        assert_eq!(
            Frame::parse(&mut buf).unwrap(),
            Some(Frame::Data {
                compressed: false,
                payload: Bytes::from_static(&[0x08, 0x96, 0x01])
            })
        );
        assert_eq!(
            Frame::parse(&mut buf).unwrap(),
            Some(Frame::Trailers(vec![("grpc-status".into(), "0".into())]))
        );
        assert_eq!(Frame::parse(&mut buf).unwrap(), None);
    }

    #[test]
    fn bad_trailer_blocks_are_errors() {
        // flag=0x80 | len=4 | "oops" (no colon)
        let mut buf = BytesMut::from(&[0x80, 0, 0, 0, 4, b'o', b'o', b'p', b's'][..]);
        assert!(Frame::parse(&mut buf).is_err());
        // flag=0x80 | len=2 | ff fe (not UTF-8)
        let mut buf = BytesMut::from(&[0x80, 0, 0, 0, 2, 0xff, 0xfe][..]);
        assert!(Frame::parse(&mut buf).is_err());
    }

    #[test]
    fn text_decoder_handles_chunks_not_multiple_of_four() {
        // "AAAAAAUKA2FiYw==" is base64 of 00 00 00 00 05 0a 03 61 62 63:
        // a data frame holding a protobuf string field 1 = "abc".
        let expected: &[u8] = &[0x00, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x03, b'a', b'b', b'c'];
        let text = b"AAAAAAUKA2FiYw==";
        for split in 0..=text.len() {
            let mut decoder = TextDecoder::new();
            let mut out = BytesMut::new();
            decoder.push(&text[..split], &mut out).unwrap();
            decoder.push(&text[split..], &mut out).unwrap();
            decoder.finish().unwrap();
            assert_eq!(&out[..], expected, "split at {split}");
        }
        // One character at a time.
        let mut decoder = TextDecoder::new();
        let mut out = BytesMut::new();
        for byte in text {
            decoder.push(&[*byte], &mut out).unwrap();
        }
        decoder.finish().unwrap();
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn text_decoder_accepts_padding_between_runs() {
        // Two runs, each padded: "AA==" (00) and "AQI=" (01 02), then one
        // unpadded run "AwQF" (03 04 05), as a client encoding per message sends.
        let mut decoder = TextDecoder::new();
        let mut out = BytesMut::new();
        decoder.push(b"AA==AQ", &mut out).unwrap();
        decoder.push(b"I=\r\nAwQF", &mut out).unwrap();
        decoder.finish().unwrap();
        assert_eq!(&out[..], &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05]);
    }

    #[test]
    fn text_decoder_rejects_garbage_and_leftovers() {
        let mut out = BytesMut::new();
        assert_eq!(
            TextDecoder::new().push(b"!!!!", &mut out),
            Err(WebError::InvalidBase64)
        );
        let mut decoder = TextDecoder::new();
        decoder.push(b"AAA", &mut out).unwrap();
        assert_eq!(decoder.finish(), Err(WebError::InvalidBase64));
    }

    #[test]
    fn text_encoding_pads_each_chunk() {
        // 00 00 00 00 00 (an empty message) → "AAAAAAA=" ; the trailers frame
        // flag=0x80 | len=15 | "grpc-status:0\r\n" → its own padded run.
        assert_eq!(&encode_text(&[0, 0, 0, 0, 0])[..], b"AAAAAAA=");
        let mut trailers = BytesMut::new();
        encode_trailers([("grpc-status", &b"0"[..])], &mut trailers);
        assert_eq!(&encode_text(&trailers)[..], b"gAAAAA9ncnBjLXN0YXR1czowDQo=");
        // And the two runs concatenated decode back to both frames.
        let mut decoder = TextDecoder::new();
        let mut out = BytesMut::new();
        decoder
            .push(b"AAAAAAA=gAAAAA9ncnBjLXN0YXR1czowDQo=", &mut out)
            .unwrap();
        assert_eq!(&out[..5], &[0, 0, 0, 0, 0]);
        assert_eq!(&out[5..], &trailers[..]);
    }
}
