//! Protobuf messages in and out of gRPC frames: the glue between `prost` and
//! the pure [`framing`](crate::framing) encoder.
//!
//! Uncompressed messages are serialised straight into the output buffer behind
//! a 5-byte prefix whose length is patched afterwards, so there is no
//! intermediate copy. Compressed ones are serialised first, then compressed
//! into the frame.

use bytes::BytesMut;

use crate::framing::{Encoding, Status, encode_message, encode_with};

/// Appends `message` to `dst` as one length-prefixed gRPC message, compressed
/// with `compression` unless it is `None` or identity. Messages over `max`
/// bytes are refused with `RESOURCE_EXHAUSTED`.
pub fn encode<M: prost::Message>(
    message: &M,
    compression: Option<Encoding>,
    max: usize,
    dst: &mut BytesMut,
) -> Result<(), Status> {
    match compression {
        None | Some(Encoding::Identity) => {
            dst.reserve(crate::framing::PREFIX_LEN + message.encoded_len());
            encode_with(dst, max, |buf| message.encode_raw(buf))?;
        }
        Some(encoding) => {
            let payload = message.encode_to_vec();
            encode_message(&payload, Some(encoding), max, dst)?;
        }
    }
    Ok(())
}
