//! Message compression: the `grpc-encoding` / `grpc-accept-encoding` headers and the
//! codecs behind them (identity and gzip).
//!
//! ```text
//!   HEADERS  grpc-encoding: gzip                 <- how *this side's* messages with
//!            grpc-accept-encoding: gzip,identity    flag=1 are compressed, and what
//!                                                    this side can read
//!   DATA     01 | 00 00 00 1f | 1f 8b 08 00 ...  <- flag=1: one complete gzip member
//!            00 | 00 00 00 02 | 6f 6b            <- flag=0: same call, not compressed
//! ```
//!
//! Compression is per message, not per stream: "Compression contexts are NOT
//! maintained over message boundaries, implementations must create a new context for
//! each message in the stream." So every compressed payload is a standalone gzip
//! member, and a sender may still send any message uncompressed (flag 0).
//!
//! Decompression never trusts a size the peer wrote (gzip's ISIZE trailer, or the
//! ratio the data promises): output is read through a reader capped at `limit + 1`
//! bytes, so a 1 KiB "gzip bomb" that inflates to gigabytes costs at most `limit + 1`
//! bytes of memory before it is rejected.

use std::fmt;
use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::decode_error::DecodeError;
use super::status::Status;

/// Header naming the encoding of the sender's compressed messages.
pub const GRPC_ENCODING: &str = "grpc-encoding";
/// Header listing the encodings the sender can decompress.
pub const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";
/// What we send in `grpc-accept-encoding`: every encoding [`Encoding`] supports.
pub const ACCEPT_ENCODING: &str = "gzip,identity";

/// A message encoding this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// No compression; what an absent `grpc-encoding` header means.
    #[default]
    Identity,
    /// gzip (RFC 1952), one member per message.
    Gzip,
}

impl Encoding {
    /// The header token: `"identity"` or `"gzip"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }

    /// Parses a `grpc-encoding` value.
    ///
    /// Content-codings are case-insensitive tokens (RFC 9110); surrounding whitespace is
    /// ignored and an empty value is treated like an absent header (identity).
    /// Anything else we do not implement (`deflate`, `snappy`, `zstd`, ...) is
    /// `Err(UnsupportedEncoding)`, which becomes UNIMPLEMENTED.
    pub fn from_header(value: &[u8]) -> Result<Encoding, UnsupportedEncoding> {
        let token = value.trim_ascii();
        if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
            Ok(Encoding::Identity)
        } else if token.eq_ignore_ascii_case(b"gzip") {
            Ok(Encoding::Gzip)
        } else {
            Err(UnsupportedEncoding(
                String::from_utf8_lossy(token).into_owned(),
            ))
        }
    }

    /// Picks an encoding to compress with from a peer's `grpc-accept-encoding` list
    /// (`"gzip, identity"`): the first listed entry we support other than identity.
    /// `None` means "send uncompressed", which every peer can read.
    pub fn negotiate(accept: &[u8]) -> Option<Encoding> {
        accept
            .split(|&b| b == b',')
            .filter_map(|entry| Encoding::from_header(entry).ok())
            .find(|&encoding| encoding != Encoding::Identity)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `grpc-encoding` value this crate does not implement; carries the name as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedEncoding(pub String);

impl fmt::Display for UnsupportedEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grpc-encoding {:?} is not supported (supported: {ACCEPT_ENCODING})",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedEncoding {}

impl From<UnsupportedEncoding> for Status {
    /// UNIMPLEMENTED; the server should answer with `grpc-accept-encoding` set to
    /// [`ACCEPT_ENCODING`] so the client can retry with something we read.
    fn from(err: UnsupportedEncoding) -> Status {
        Status::unimplemented(err.to_string())
    }
}

/// Appends `src` compressed with `encoding` to `dst` (a copy for identity).
///
/// Errors only come from the codec; writing into a `BytesMut` cannot fail.
pub fn compress(encoding: Encoding, src: &[u8], dst: &mut BytesMut) -> io::Result<()> {
    match encoding {
        Encoding::Identity => {
            dst.extend_from_slice(src);
            Ok(())
        }
        Encoding::Gzip => {
            let mut encoder = GzEncoder::new(dst.writer(), Compression::default());
            encoder.write_all(src)?;
            encoder.finish()?;
            Ok(())
        }
    }
}

/// Decompresses one message payload, refusing output larger than `limit` bytes.
///
/// Bomb-safe: the output is read through `take(limit + 1)` and grows only as bytes
/// actually come out of the decoder; nothing is pre-sized from the input. Corrupt or
/// truncated input is `Err(Decompress)`; too much output `Err(DecompressedTooLarge)`.
pub fn decompress(encoding: Encoding, src: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    match encoding {
        Encoding::Identity => {
            if src.len() > limit {
                return Err(DecodeError::DecompressedTooLarge { limit });
            }
            Ok(Bytes::copy_from_slice(src))
        }
        Encoding::Gzip => {
            let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            let mut reader = GzDecoder::new(src).take(cap);
            let mut out = BytesMut::new().writer();
            io::copy(&mut reader, &mut out)
                .map_err(|err| DecodeError::Decompress(err.to_string()))?;
            let out = out.into_inner();
            if out.len() > limit {
                return Err(DecodeError::DecompressedTooLarge { limit });
            }
            Ok(out.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::status::Code;

    fn gzip(data: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        compress(Encoding::Gzip, data, &mut out).unwrap();
        out
    }

    #[test]
    fn from_header_table() {
        let cases: &[(&[u8], Result<Encoding, &str>)] = &[
            (b"gzip", Ok(Encoding::Gzip)),
            (b"GZip", Ok(Encoding::Gzip)),
            (b" gzip ", Ok(Encoding::Gzip)),
            (b"identity", Ok(Encoding::Identity)),
            (b"", Ok(Encoding::Identity)),
            (b"deflate", Err("deflate")),
            (b"snappy", Err("snappy")),
            (b"gzip,identity", Err("gzip,identity")),
            (b"\xff", Err("\u{fffd}")),
        ];
        for (input, want) in cases {
            let got = Encoding::from_header(input).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_owned), "{input:?}");
        }
    }

    #[test]
    fn unsupported_encoding_is_unimplemented() {
        let status = Status::from(Encoding::from_header(b"zstd").unwrap_err());
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("zstd"));
    }

    #[test]
    fn negotiate_picks_first_supported_compression() {
        assert_eq!(Encoding::negotiate(b"gzip,identity"), Some(Encoding::Gzip));
        assert_eq!(
            Encoding::negotiate(b"identity, deflate, gzip"),
            Some(Encoding::Gzip)
        );
        assert_eq!(Encoding::negotiate(b"identity"), None);
        assert_eq!(Encoding::negotiate(b"deflate,snappy"), None);
        assert_eq!(Encoding::negotiate(b""), None);
        assert_eq!(
            Encoding::negotiate(ACCEPT_ENCODING.as_bytes()),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn gzip_round_trip() {
        let data = b"the quick brown fox ".repeat(100);
        let compressed = gzip(&data);
        // gzip magic 1f 8b, method 08 (deflate)
        assert_eq!(compressed.get(..3), Some(&[0x1f, 0x8b, 0x08][..]));
        assert!(compressed.len() < data.len());
        assert_eq!(
            decompress(Encoding::Gzip, &compressed, data.len()).unwrap(),
            &data[..]
        );
    }

    #[test]
    fn empty_message_round_trips_through_gzip() {
        let compressed = gzip(b"");
        assert_eq!(
            decompress(Encoding::Gzip, &compressed, 0).unwrap(),
            &b""[..]
        );
    }

    #[test]
    fn gzip_bomb_is_capped() {
        // 16 MiB of zeros deflate to ~16 KiB; the decoder must stop at limit + 1.
        let bomb = gzip(&vec![0u8; 16 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        let err = decompress(Encoding::Gzip, &bomb, 1024 * 1024).unwrap_err();
        assert_eq!(
            err,
            DecodeError::DecompressedTooLarge { limit: 1024 * 1024 }
        );
        assert_eq!(Status::from(err).code(), Code::ResourceExhausted);
    }

    #[test]
    fn output_exactly_at_limit_is_accepted() {
        let compressed = gzip(b"12345");
        assert_eq!(
            decompress(Encoding::Gzip, &compressed, 5).unwrap(),
            &b"12345"[..]
        );
        assert!(decompress(Encoding::Gzip, &compressed, 4).is_err());
    }

    #[test]
    fn corrupt_and_truncated_gzip_are_errors() {
        // 1f 8b 08 00 ... | then garbage instead of a deflate stream
        let garbage = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff";
        assert!(matches!(
            decompress(Encoding::Gzip, garbage, 1024),
            Err(DecodeError::Decompress(_))
        ));

        let whole = gzip(b"some payload that will be cut short");
        for cut in 0..whole.len() {
            let truncated = whole.get(..cut).unwrap_or_default();
            assert!(
                matches!(
                    decompress(Encoding::Gzip, truncated, 1024),
                    Err(DecodeError::Decompress(_))
                ),
                "cut at {cut}"
            );
        }

        // flip a bit in the CRC32 trailer: the data inflates, the checksum fails
        let mut bad_crc = whole.clone();
        let crc_pos = bad_crc.len() - 8;
        if let Some(b) = bad_crc.get_mut(crc_pos) {
            *b ^= 1;
        }
        assert!(decompress(Encoding::Gzip, &bad_crc, 1024).is_err());
    }

    #[test]
    fn identity_respects_limit() {
        assert_eq!(
            decompress(Encoding::Identity, b"abc", 3).unwrap(),
            &b"abc"[..]
        );
        assert_eq!(
            decompress(Encoding::Identity, b"abcd", 3),
            Err(DecodeError::DecompressedTooLarge { limit: 3 })
        );
    }
}
