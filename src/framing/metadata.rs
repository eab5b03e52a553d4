//! Custom metadata: the application's own headers and trailers on a call.
//!
//! ```text
//!   Custom-Metadata → Binary-Header / ASCII-Header
//!
//!   ASCII-Header    x-request-id: 4f1c-22        key [0-9a-z_.-]+, value bytes 0x20-0x7E
//!   Binary-Header   trace-ctx-bin: AAECAw        key ends in "-bin", value base64 of
//!                                                  arbitrary bytes (here 00 01 02 03)
//! ```
//!
//! A header block mixes three kinds of entries: HTTP/2 pseudo-headers (`:path`),
//! headers the gRPC protocol itself defines (`content-type`, `te`, `grpc-timeout`,
//! `grpc-status`, ...), and the application's metadata. A [`MetadataMap`] only ever
//! holds the third kind, so an application can neither read nor forge the protocol's
//! own headers, and a map received from a peer can be echoed back as-is.
//!
//! Binary values exist because HTTP/2 header values cannot carry arbitrary octets:
//! "Implementations MUST accept padded and un-padded values and should emit
//! un-padded values." [`MetadataMap`] stores `-bin` values in their wire (base64) form
//! and decodes on access.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Standard-alphabet base64 that writes no padding and reads both padded and unpadded
/// input (and non-zero trailing bits, which some encoders leave). Used for every
/// `-bin` header, including `grpc-status-details-bin`.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The suffix that marks a binary metadata key.
const BIN_SUFFIX: &str = "-bin";

/// Headers the protocol or HTTP itself owns; never user metadata. (`grpc-*` and
/// pseudo-headers are matched by prefix in [`MetadataMap::is_reserved`].)
const RESERVED: &[&str] = &[
    "content-type",
    "te",
    "user-agent",
    "content-length",
    "host",
    // HTTP/1 connection-level headers, forbidden in HTTP/2 (RFC 9113 §8.2.2)
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Why a key or value cannot be custom metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// Not a valid Header-Name (or a `-bin` key used as ASCII, or vice versa).
    InvalidKey(String),
    /// A header the protocol reserves (`grpc-*`, `content-type`, `te`, ...).
    ReservedKey(String),
    /// An ASCII value with a byte outside 0x20-0x7E.
    InvalidValue(String),
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::InvalidKey(key) => write!(f, "invalid metadata key {key:?}"),
            MetadataError::ReservedKey(key) => {
                write!(f, "metadata key {key:?} is reserved by gRPC/HTTP")
            }
            MetadataError::InvalidValue(key) => {
                write!(f, "invalid value for metadata key {key:?}")
            }
        }
    }
}

impl std::error::Error for MetadataError {}

/// User metadata: custom headers only. Keys are lowercase; `-bin` keys hold bytes
/// (stored base64-encoded, as on the wire).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataMap {
    /// Entries in wire form; every key passed [`check_key`] and is not reserved.
    headers: HeaderMap,
}

impl MetadataMap {
    /// An empty map.
    pub fn new() -> Self {
        MetadataMap::default()
    }

    /// Sets an ASCII entry, replacing earlier values for `key`.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let (name, value) = ascii_entry(key, value)?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// Sets an ASCII entry that HPACK must not add to its dynamic table
    /// (sent as "literal never indexed", RFC 7541 §6.2.3). Indexing pays off
    /// for a value repeated on later calls of the connection; for a value
    /// unique to its call it only costs both ends table space for the
    /// connection's whole life, which adds up over many idle connections.
    pub fn insert_unindexed(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let (name, mut value) = ascii_entry(key, value)?;
        value.set_sensitive(true);
        self.headers.insert(name, value);
        Ok(())
    }

    /// Adds an ASCII entry, keeping earlier values for `key`.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let (name, value) = ascii_entry(key, value)?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Sets a binary entry; `key` must end in `-bin`. Stored as unpadded base64.
    pub fn insert_bin(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let (name, value) = bin_entry(key, value)?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// Adds a binary entry, keeping earlier values for `key`.
    pub fn append_bin(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let (name, value) = bin_entry(key, value)?;
        self.headers.append(name, value);
        Ok(())
    }

    /// The first value of an ASCII key. `None` for `-bin` keys (use [`get_bin`]).
    ///
    /// [`get_bin`]: MetadataMap::get_bin
    pub fn get(&self, key: &str) -> Option<&str> {
        if is_bin(key) {
            return None;
        }
        self.headers.get(key)?.to_str().ok()
    }

    /// Every value of an ASCII key, in order.
    pub fn get_all(&self, key: &str) -> impl Iterator<Item = &str> {
        let values = if is_bin(key) {
            None
        } else {
            Some(self.headers.get_all(key))
        };
        values
            .into_iter()
            .flatten()
            .filter_map(|value| value.to_str().ok())
    }

    /// The first value of a `-bin` key, decoded. Padded and unpadded base64 are both
    /// accepted; `None` if absent, not a `-bin` key, or not valid base64.
    ///
    /// "Implementations must split Binary-Headers on "," before decoding the
    /// Base64-encoded values": a value a proxy joined as `"AAE,AgM"` is two values,
    /// and this returns the first.
    pub fn get_bin(&self, key: &str) -> Option<Bytes> {
        self.get_all_bin(key).next()?.ok()
    }

    /// Every value of a `-bin` key, decoded, including values joined with `,` in one
    /// header. A value that is not valid base64 yields `Err` with its raw text.
    pub fn get_all_bin(&self, key: &str) -> impl Iterator<Item = Result<Bytes, String>> {
        let values = if is_bin(key) {
            Some(self.headers.get_all(key))
        } else {
            None
        };
        values
            .into_iter()
            .flatten()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(|part| {
                let part = part.trim_ascii();
                BASE64
                    .decode(part)
                    .map(Bytes::from)
                    .map_err(|_| String::from_utf8_lossy(part).into_owned())
            })
    }

    /// The first value exactly as on the wire (base64 text for `-bin` keys).
    pub fn get_raw(&self, key: &str) -> Option<&HeaderValue> {
        self.headers.get(key)
    }

    /// Number of values (a key with two values counts twice).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Removes every value of `key`, returning the first (in wire form).
    pub fn remove(&mut self, key: &str) -> Option<HeaderValue> {
        self.headers.remove(key)
    }

    /// All entries in wire form, a key repeated once per value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HeaderValue)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The custom metadata of a received header block (request headers, response
    /// headers or trailers).
    ///
    /// Drops pseudo-headers, `grpc-*`, `content-type`, `te`, `user-agent` and
    /// connection-level headers. Also drops entries whose key is not a gRPC
    /// Header-Name or whose value has bytes outside 0x20-0x7E: the spec lets us
    /// "throw the value away or accept the value", and dropping keeps every map valid
    /// to send back unchanged.
    pub fn from_headers(headers: &HeaderMap) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (name, value) in headers {
            let key = name.as_str();
            if check_key(key).is_ok()
                && !MetadataMap::is_reserved(key)
                && value.as_bytes().iter().copied().all(is_ascii_value_byte)
            {
                map.headers.append(name.clone(), value.clone());
            }
        }
        map
    }

    /// Appends every entry to an outgoing header block.
    pub fn write_headers(&self, dst: &mut HeaderMap) {
        for (name, value) in &self.headers {
            dst.append(name.clone(), value.clone());
        }
    }

    /// Whether `key` belongs to HTTP/2 or the gRPC protocol rather than the
    /// application: pseudo-headers, `grpc-*`, `content-type`, `te`, `user-agent`,
    /// `content-length`, `host` and connection-level headers. Case-insensitive.
    pub fn is_reserved(key: &str) -> bool {
        let key = key.as_bytes();
        // "Header names starting with "grpc-" but not listed here are reserved for
        // future GRPC use and should not be used by applications as Custom-Metadata."
        key.first() == Some(&b':')
            || key
                .get(..5)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"grpc-"))
            || RESERVED
                .iter()
                .any(|reserved| reserved.as_bytes().eq_ignore_ascii_case(key))
    }
}

fn is_bin(key: &str) -> bool {
    key.ends_with(BIN_SUFFIX)
}

/// "ASCII-Value → 1*( %x20-%x7E ) ; space and printable ASCII"
fn is_ascii_value_byte(b: u8) -> bool {
    matches!(b, 0x20..=0x7E)
}

/// Validates a key against the gRPC grammar and the reserved list.
fn check_key(key: &str) -> Result<HeaderName, MetadataError> {
    // "Header-Name → 1*( %x30-39 / %x61-7A / "_" / "-" / "." ) ; 0-9 a-z _ - ."
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'));
    if !valid {
        return Err(MetadataError::InvalidKey(key.to_owned()));
    }
    if MetadataMap::is_reserved(key) {
        return Err(MetadataError::ReservedKey(key.to_owned()));
    }
    // Every key the grammar allows is a valid HTTP header name too.
    HeaderName::from_bytes(key.as_bytes()).map_err(|_| MetadataError::InvalidKey(key.to_owned()))
}

fn ascii_entry(key: &str, value: &str) -> Result<(HeaderName, HeaderValue), MetadataError> {
    let name = check_key(key)?;
    if is_bin(key) {
        return Err(MetadataError::InvalidKey(key.to_owned()));
    }
    // Empty values are accepted although the grammar says 1*: HTTP allows them and
    // every major implementation sends them.
    if !value.bytes().all(is_ascii_value_byte) {
        return Err(MetadataError::InvalidValue(key.to_owned()));
    }
    let value =
        HeaderValue::from_str(value).map_err(|_| MetadataError::InvalidValue(key.to_owned()))?;
    Ok((name, value))
}

fn bin_entry(key: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), MetadataError> {
    let name = check_key(key)?;
    // "Applications define binary headers by having their names end with "-bin"."
    if !is_bin(key) {
        return Err(MetadataError::InvalidKey(key.to_owned()));
    }
    // Base64 text is always a valid header value; map_err only avoids an unwrap.
    let value = HeaderValue::from_str(&BASE64.encode(value))
        .map_err(|_| MetadataError::InvalidValue(key.to_owned()))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unindexed entry reaches the header block marked sensitive (which
    /// `h2` encodes as "literal never indexed"); a plain one does not.
    #[test]
    fn unindexed_entries_are_marked_for_hpack() {
        let mut md = MetadataMap::new();
        md.insert_unindexed("chat-epoch", "00ff").unwrap();
        md.insert("chat-room", "lobby").unwrap();
        let mut out = HeaderMap::new();
        md.write_headers(&mut out);
        assert_eq!(out["chat-epoch"], "00ff");
        assert!(out["chat-epoch"].is_sensitive());
        assert!(!out["chat-room"].is_sensitive());
        // The same key checks as `insert`.
        assert!(md.insert_unindexed("grpc-status", "0").is_err());
    }

    fn header_block(entries: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in entries {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn ascii_insert_get_append() {
        let mut md = MetadataMap::new();
        md.insert("x-request-id", "4f1c-22").unwrap();
        md.append("x-tag", "a").unwrap();
        md.append("x-tag", "b").unwrap();
        assert_eq!(md.get("x-request-id"), Some("4f1c-22"));
        assert_eq!(md.get_all("x-tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(md.len(), 3);
        md.insert("x-tag", "c").unwrap();
        assert_eq!(md.get_all("x-tag").collect::<Vec<_>>(), ["c"]);
        assert_eq!(md.remove("x-tag").unwrap(), "c");
        assert_eq!(md.len(), 1);
        assert_eq!(md.get("missing"), None);
        assert_eq!(md.get("NOT A KEY"), None);
    }

    #[test]
    fn key_validation() {
        let mut md = MetadataMap::new();
        for ok in ["a", "0-9_a.z", "x-custom"] {
            md.insert(ok, "v").unwrap();
        }
        for bad in ["", "Upper", "sp ace", "x:y", "ü", "a/b"] {
            assert_eq!(
                md.insert(bad, "v"),
                Err(MetadataError::InvalidKey(bad.into())),
                "{bad:?}"
            );
        }
        for reserved in [
            "grpc-status",
            "grpc-custom",
            "content-type",
            "te",
            "user-agent",
        ] {
            assert_eq!(
                md.insert(reserved, "v"),
                Err(MetadataError::ReservedKey(reserved.into()))
            );
        }
        assert_eq!(
            md.insert(":path", "/x"),
            Err(MetadataError::InvalidKey(":path".into()))
        );
    }

    #[test]
    fn value_validation() {
        let mut md = MetadataMap::new();
        md.insert("k", " !~ printable ").unwrap();
        md.insert("k", "").unwrap();
        for bad in ["tab\there", "nl\n", "é", "\x7f"] {
            assert_eq!(
                md.insert("k", bad),
                Err(MetadataError::InvalidValue("k".into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bin_keys_are_base64_unpadded() {
        let mut md = MetadataMap::new();
        md.insert_bin("trace-bin", &[0x00, 0x01, 0x02, 0x03])
            .unwrap();
        // 00 01 02 03 -> "AAECAw" (padded would be "AAECAw==")
        assert_eq!(md.get_raw("trace-bin").unwrap(), "AAECAw");
        assert_eq!(md.get_bin("trace-bin").unwrap(), &[0, 1, 2, 3][..]);
        assert_eq!(md.get("trace-bin"), None, "binary values are not ASCII");
        assert_eq!(
            md.insert("trace-bin", "AAECAw"),
            Err(MetadataError::InvalidKey("trace-bin".into()))
        );
        assert_eq!(
            md.insert_bin("trace", b"x"),
            Err(MetadataError::InvalidKey("trace".into()))
        );
        assert_eq!(
            md.insert_bin("grpc-trace-bin", b"x"),
            Err(MetadataError::ReservedKey("grpc-trace-bin".into()))
        );
    }

    #[test]
    fn bin_values_padded_unpadded_and_comma_joined() {
        let headers = header_block(&[
            ("a-bin", b"aGk="),     // "hi", padded
            ("b-bin", b"aGk"),      // "hi", unpadded
            ("c-bin", b"AAE,AgM="), // 00 01 and 02 03, joined by a proxy
            ("d-bin", b"not base64!"),
            ("d-bin", b"aGk"),
        ]);
        let md = MetadataMap::from_headers(&headers);
        assert_eq!(md.get_bin("a-bin").unwrap(), &b"hi"[..]);
        assert_eq!(md.get_bin("b-bin").unwrap(), &b"hi"[..]);
        assert_eq!(md.get_bin("c-bin").unwrap(), &[0, 1][..]);
        let all: Vec<_> = md.get_all_bin("c-bin").collect();
        assert_eq!(
            all,
            [
                Ok(Bytes::from_static(&[0, 1])),
                Ok(Bytes::from_static(&[2, 3]))
            ]
        );
        assert_eq!(md.get_bin("d-bin"), None, "first value is invalid base64");
        let all: Vec<_> = md.get_all_bin("d-bin").collect();
        assert_eq!(
            all,
            [Err("not base64!".into()), Ok(Bytes::from_static(b"hi"))]
        );
        assert_eq!(md.get_bin("missing-bin"), None);
    }

    #[test]
    fn from_headers_filters_reserved_and_invalid() {
        let headers = header_block(&[
            ("content-type", b"application/grpc"),
            ("te", b"trailers"),
            ("user-agent", b"grpc-go/1.60"),
            ("grpc-timeout", b"1S"),
            ("grpc-encoding", b"gzip"),
            ("grpc-accept-encoding", b"gzip"),
            ("grpc-status", b"0"),
            ("grpc-message", b"ok"),
            ("grpc-status-details-bin", b"AA"),
            ("grpc-future-thing", b"x"),
            ("connection", b"close"),
            ("authorization", b"Bearer y235"),
            ("x-trace-bin", b"AAECAw"),
            ("x-multi", b"1"),
            ("x-multi", b"2"),
            ("x-obs-text", b"caf\xe9"), // valid in HTTP, not an ASCII-Value: dropped
            ("x!bang", b"v"),           // valid HTTP token, not a Header-Name: dropped
        ]);
        let md = MetadataMap::from_headers(&headers);
        let keys: Vec<_> = md.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["authorization", "x-trace-bin", "x-multi", "x-multi"]);
        assert_eq!(md.get("authorization"), Some("Bearer y235"));
    }

    #[test]
    fn write_headers_appends() {
        let mut md = MetadataMap::new();
        md.append("x-a", "1").unwrap();
        md.append("x-a", "2").unwrap();
        md.insert_bin("x-b-bin", b"\xff").unwrap();
        let mut out = header_block(&[("content-type", b"application/grpc")]);
        md.write_headers(&mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out.get_all("x-a").iter().count(), 2);
        assert_eq!(out["x-b-bin"], "/w");
        // Echoing a received map gives the same map back.
        assert_eq!(MetadataMap::from_headers(&out), md);
    }

    #[test]
    fn is_reserved_table() {
        for key in [
            ":path",
            ":status",
            "grpc-status",
            "GRPC-X",
            "Content-Type",
            "te",
        ] {
            assert!(MetadataMap::is_reserved(key), "{key}");
        }
        for key in ["grpc", "grpcx", "x-grpc-status", "authorization", "tee", ""] {
            assert!(!MetadataMap::is_reserved(key), "{key}");
        }
    }
}
