//! Protobuf as the trace shows it: a gRPC message's type looked up from its
//! method (`:path`), and in hex mode each field annotated with its bytes,
//! number, name and value.
//!
//! ```text
//!   0a 05 61 6c 69 63 65      1 user: "alice"       tag 0x0a = field 1, wire type 2 (length)
//!   18 ac 02                  3 timestamp: 300      tag 0x18 = field 3, wire type 0 (varint)
//! ```
//!
//! The types come from a `FileDescriptorSet` handed to the trace
//! ([`MessageTypes`]): the trace does not know which services a program
//! serves, so the program tells it (the binaries pass
//! `grpc_chat::pb::FILE_DESCRIPTOR_SET`). Without one, messages are shown as
//! bytes and fields by number. The walk over fields is pure and never trusts
//! a length it read: a field running past the message ends the annotation
//! with a note.

use std::fmt::Write as _;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

use super::render::{MAX_HEX_BYTES, hex};

/// The protobuf message types the trace can name: a descriptor pool,
/// decoded once and shared (cloning it is cheap).
#[derive(Debug, Clone, Default)]
pub struct MessageTypes {
    /// `None`: no descriptors, every message is of unknown type.
    pool: Option<DescriptorPool>,
}

impl MessageTypes {
    /// No types: messages are shown by size and fields by number.
    pub fn none() -> Self {
        MessageTypes::default()
    }

    /// The types of an encoded `FileDescriptorSet` (for our services,
    /// `grpc_chat::pb::FILE_DESCRIPTOR_SET`).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, prost_reflect::DescriptorError> {
        Ok(MessageTypes {
            pool: Some(DescriptorPool::decode(bytes)?),
        })
    }

    /// The message type named `full_name` (`package.Message`).
    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.as_ref()?.get_message_by_name(full_name)
    }

    /// The request and response types of `/package.Service/Method`.
    pub(super) fn of_method(&self, path: &str) -> [Option<MessageDescriptor>; 2] {
        let found = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(service, method)| {
                let service = self.pool.as_ref()?.get_service_by_name(service)?;
                let method = service.methods().find(|m| m.name() == method)?;
                Some([Some(method.input()), Some(method.output())])
            });
        found.unwrap_or([None, None])
    }
}

/// Appends one line per protobuf field of `bytes`: its bytes (tag, length,
/// value), its number and name, and its value. Nested messages are walked
/// with more indent.
pub(super) fn annotate_fields(
    text: &mut String,
    indent: &str,
    bytes: &[u8],
    message_type: Option<&MessageDescriptor>,
    depth: usize,
) {
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let Some((tag, after_tag)) = varint(bytes, at) else {
            let _ = writeln!(text, "{indent}(truncated tag)");
            return;
        };
        at = after_tag;
        let number = tag >> 3;
        let wire_type = tag & 7;
        let field =
            message_type.and_then(|m| u32::try_from(number).ok().and_then(|n| m.get_field(n)));
        let name = field
            .as_ref()
            .map_or(String::new(), |f| format!(" {}", f.name()));
        let kind = field.as_ref().map(|f| f.kind());
        let (value, end) = match wire_type {
            0 => match varint(bytes, at) {
                Some((v, end)) => (varint_value(v, kind.as_ref()), end),
                None => ("(truncated varint)".to_owned(), bytes.len()),
            },
            1 => match bytes.get(at..at + 8).and_then(|b| b.first_chunk::<8>()) {
                Some(b) => (format!("{} (64-bit)", u64::from_le_bytes(*b)), at + 8),
                None => ("(truncated)".to_owned(), bytes.len()),
            },
            5 => match bytes.get(at..at + 4).and_then(|b| b.first_chunk::<4>()) {
                Some(b) => (format!("{} (32-bit)", u32::from_le_bytes(*b)), at + 4),
                None => ("(truncated)".to_owned(), bytes.len()),
            },
            2 => {
                let Some((len, body_start)) = varint(bytes, at) else {
                    let _ = writeln!(text, "{indent}(truncated length)");
                    return;
                };
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| body_start.checked_add(len))
                    .filter(|&end| end <= bytes.len());
                let Some(end) = end else {
                    let _ = writeln!(text, "{indent}(length {len} runs past the message)");
                    return;
                };
                let body = bytes.get(body_start..end).unwrap_or_default();
                if let Some(Kind::Message(nested)) = &kind {
                    if depth < 16 {
                        let _ = writeln!(
                            text,
                            "{indent}{:<35}  {number}{name}: {} (length {len})",
                            hex(bytes.get(start..body_start).unwrap_or_default()),
                            nested.full_name()
                        );
                        annotate_fields(
                            text,
                            &format!("{indent}  "),
                            body,
                            Some(nested),
                            depth + 1,
                        );
                        at = end;
                        continue;
                    }
                }
                let shown = match (&kind, std::str::from_utf8(body)) {
                    (Some(Kind::String), Ok(s)) => format!("{s:?}"),
                    // Without a schema, text that looks like text is shown
                    // as text.
                    (None, Ok(s)) if !s.chars().any(char::is_control) => format!("{s:?}"),
                    _ => format!("{} bytes", body.len()),
                };
                (shown, end)
            }
            _ => {
                let _ = writeln!(text, "{indent}(wire type {wire_type} not traced)");
                return;
            }
        };
        let element = bytes.get(start..end).unwrap_or_default();
        let mut rows = element.chunks(12);
        let first = rows.next().unwrap_or_default();
        let _ = writeln!(text, "{indent}{:<35}  {number}{name}: {value}", hex(first));
        for (i, row) in rows.enumerate() {
            if i * 12 >= MAX_HEX_BYTES {
                let _ = writeln!(
                    text,
                    "{indent}… ({} more bytes)",
                    element.len().saturating_sub(12 + i * 12)
                );
                break;
            }
            let _ = writeln!(text, "{indent}{}", hex(row));
        }
        at = end;
    }
}

/// A varint value shown as its field's type says (RFC: protobuf encoding).
fn varint_value(v: u64, kind: Option<&Kind>) -> String {
    match kind {
        Some(Kind::Bool) => (v != 0).to_string(),
        Some(Kind::Sint32) | Some(Kind::Sint64) => {
            (((v >> 1) as i64) ^ -((v & 1) as i64)).to_string()
        }
        Some(Kind::Int32) | Some(Kind::Int64) => (v as i64).to_string(),
        Some(Kind::Enum(e)) => match e.get_value(v as i32) {
            Some(value) => format!("{} ({v})", value.name()),
            None => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// A protobuf varint at `at`: its value and where it ends.
fn varint(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_mode_annotates_fields() {
        let types = MessageTypes::from_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let descriptor = types.message("chat.ChatMessage").unwrap();
        let mut text = String::new();
        // field 1 "al" · field 3 varint 300 (ac 02) · field 4 varint 2
        let body = [0x0a, 2, b'a', b'l', 0x18, 0xac, 0x02, 0x20, 0x02];
        annotate_fields(&mut text, "", &body, Some(&descriptor), 0);
        assert_eq!(
            text,
            format!(
                "{:<35}  1 user: \"al\"\n{:<35}  3 timestamp: 300\n{:<35}  4 id: 2\n",
                "0a 02 61 6c", "18 ac 02", "20 02"
            )
        );
    }
}
