//! The Connect conformance suite's programs under test: `conformance-server`
//! and `conformance-client`, on our own server, gateway and client layers.
//!
//! The suite (`connectrpc.com/conformance`, runner `connectconformance`)
//! starts our program, talks to it over stdin/stdout, and checks what
//! crossed the wire against its reference peers. Both directions use the
//! same pipe framing:
//!
//! ```text
//! +----------------------------+---------------------------+
//! | length: u32, big-endian    | protobuf message (length) |
//! +----------------------------+---------------------------+
//! ```
//!
//! * [`server`] — reads one `ServerCompatRequest`, starts serving
//!   `connectrpc.conformance.v1.ConformanceService` (gRPC natively, gRPC-Web
//!   through our gateway), answers one `ServerCompatResponse`.
//! * [`client`] — reads `ClientCompatRequest`s until EOF, makes each call
//!   with our [`Channel`](crate::client::Channel), writes one
//!   `ClientCompatResponse` per call.
//!
//! This module holds what both share: the pipe framing, and the conversions
//! between the suite's `Header` lists and our [`MetadataMap`].

pub mod client;
pub mod server;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::framing::MetadataMap;
use crate::pb::connectrpc_conformance_v1 as pb;

/// The largest message accepted on the pipe: the runner's requests are a few
/// kilobytes, but the size tests carry messages of a megabyte or more.
pub const MAX_PIPE_MESSAGE: usize = 64 * 1024 * 1024;

/// The `Any` type-URL prefix the suite uses.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The suite's protobuf package.
pub const PACKAGE: &str = "connectrpc.conformance.v1";

/// Reads one length-prefixed message from `input`; `Ok(None)` at a clean EOF
/// (before the first byte of a prefix).
pub async fn read_message<M: prost::Message + Default>(
    input: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<M>> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        let Some(rest) = prefix.get_mut(filled..) else {
            break;
        };
        let n = input.read(rest).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside a length prefix",
            ));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_PIPE_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message of {len} bytes on the pipe (limit {MAX_PIPE_MESSAGE})"),
        ));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await?;
    M::decode(body.as_slice())
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Writes one length-prefixed message to `output` and flushes it.
pub async fn write_message<M: prost::Message>(
    output: &mut (impl AsyncWrite + Unpin),
    message: &M,
) -> std::io::Result<()> {
    let body = message.encode_to_vec();
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too large"))?;
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    output.write_all(&framed).await?;
    output.flush().await
}

/// Packs `message` into an `Any` named `connectrpc.conformance.v1.<name>`.
pub fn pack<M: prost::Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_URL_PREFIX}{PACKAGE}.{name}"),
        value: message.encode_to_vec(),
    }
}

/// The fully qualified type name in an `Any`'s URL: everything after the
/// last `/`.
pub fn type_name(any: &prost_types::Any) -> &str {
    any.type_url
        .rsplit_once('/')
        .map_or(any.type_url.as_str(), |(_, name)| name)
}

/// Metadata as the suite lists it: one `Header` per name, its values in the
/// order they arrived. Binary (`-bin`) values are given as they travel, in
/// base64, which is how the suite's own peers report them.
pub fn headers_from_metadata(metadata: &MetadataMap) -> Vec<pb::Header> {
    let mut headers: Vec<pb::Header> = Vec::new();
    for (name, value) in metadata.iter() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.iter_mut().find(|h| h.name == name) {
            Some(header) => header.value.push(value),
            None => headers.push(pb::Header {
                name: name.to_owned(),
                value: vec![value],
            }),
        }
    }
    headers
}

/// Adds the suite's `Header`s to `metadata`, every value of every name.
///
/// A `-bin` value is taken as the suite writes it, base64 (padded or not):
/// it is decoded and re-encoded by [`MetadataMap::append_bin`]; one that is
/// not base64 is sent as its own bytes. Names or values that are not valid
/// metadata are skipped with the reason returned, so the caller can report
/// them instead of failing the whole call.
pub fn append_headers(metadata: &mut MetadataMap, headers: &[pb::Header]) -> Vec<String> {
    use base64::Engine as _;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let mut skipped = Vec::new();
    for header in headers {
        let name = header.name.to_ascii_lowercase();
        for value in &header.value {
            let added = if name.ends_with("-bin") {
                let bytes = lenient
                    .decode(value.as_bytes())
                    .map_or_else(|_| Bytes::copy_from_slice(value.as_bytes()), Bytes::from);
                metadata.append_bin(&name, &bytes)
            } else {
                metadata.append(&name, value)
            };
            if let Err(e) = added {
                skipped.push(format!("header {name:?}: {e}"));
            }
        }
    }
    skipped
}

/// Our status code for the suite's `Code` (the numbers are gRPC's).
pub fn code_from_pb(code: i32) -> crate::Code {
    crate::Code::from_i32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_messages_round_trip_and_eof_is_clean() {
        let header = pb::Header {
            name: "x-a".into(),
            value: vec!["1".into()],
        };
        let mut pipe = Vec::new();
        write_message(&mut pipe, &header).await.unwrap();
        // 4-byte big-endian length, then the message.
        assert_eq!(&pipe[..4], &(pipe.len() as u32 - 4).to_be_bytes());
        let mut input = pipe.as_slice();
        let back: Option<pb::Header> = read_message(&mut input).await.unwrap();
        assert_eq!(back, Some(header));
        let end: Option<pb::Header> = read_message(&mut input).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_truncated_prefix_is_an_error() {
        let mut input: &[u8] = &[0, 0];
        assert!(read_message::<pb::Header>(&mut input).await.is_err());
    }

    #[test]
    fn repeated_names_are_grouped_in_order() {
        let mut metadata = MetadataMap::new();
        let skipped = append_headers(
            &mut metadata,
            &[
                pb::Header {
                    name: "X-Test".into(),
                    value: vec!["a".into(), "b".into()],
                },
                pb::Header {
                    name: "x-data-bin".into(),
                    value: vec!["AAE=".into()],
                },
            ],
        );
        assert!(skipped.is_empty());
        let headers = headers_from_metadata(&metadata);
        assert_eq!(headers[0].name, "x-test");
        assert_eq!(headers[0].value, vec!["a", "b"]);
        assert_eq!(headers[1].name, "x-data-bin");
        assert_eq!(
            metadata.get_bin("x-data-bin").as_deref(),
            Some(&[0u8, 1][..])
        );
    }
}
