//! An HPACK header block taken apart representation by representation
//! (RFC 7541 §6), for `--trace-wire=hex`: which bytes are an indexed field,
//! which a literal (added to the dynamic table, not added, never indexed),
//! which a table size update.
//!
//! ```text
//!   82                indexed: static table entry 2          (:method: GET)
//!   44 03 2f 61 62    literal, added to the dynamic table;
//!                     name from static table entry 4; value 3 bytes  (:path: /ab)
//! ```
//!
//! This only splits the block; the field values come from the real decoder
//! (`loona_hpack`, in [`headers`](super::headers)), which also knows the
//! dynamic table and Huffman codes. Keeping the two apart means a bug here
//! can only spoil the annotation, never the decoded headers. Pure, and it
//! returns `None` rather than panicking on a block that does not parse.

/// One representation in an HPACK header block.
pub(super) struct HpackPart {
    /// Its bytes in the block.
    pub(super) range: std::ops::Range<usize>,
    /// What kind of representation it is, for a reader.
    pub(super) description: String,
    /// Whether it decodes to a header field (a table size update does not).
    pub(super) emits: bool,
}

/// The last entry of HPACK's static table (RFC 7541 Appendix A); indices
/// above it name the dynamic table.
const STATIC_TABLE_LEN: u64 = 61;

/// An HPACK integer with an `n`-bit prefix at `at` (RFC 7541 §5.1): its
/// value and where it ends.
fn hpack_int(block: &[u8], at: usize, n: u32) -> Option<(u64, usize)> {
    let mask = (1u64 << n) - 1;
    let first = u64::from(*block.get(at)?) & mask;
    if first < mask {
        return Some((first, at + 1));
    }
    let mut value = mask;
    let mut at = at + 1;
    for shift in (0..56).step_by(7) {
        let byte = *block.get(at)?;
        at += 1;
        value = value.checked_add(u64::from(byte & 0x7f) << shift)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// A string literal at `at` (RFC 7541 §5.2): Huffman-coded or not, its
/// length, and where it ends.
fn hpack_string(block: &[u8], at: usize) -> Option<(bool, u64, usize)> {
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, start) = hpack_int(block, at, 7)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= block.len()).then_some((huffman, len, end))
}

fn table_entry(index: u64) -> String {
    if index <= STATIC_TABLE_LEN {
        format!("static table entry {index}")
    } else {
        format!("dynamic table entry {index}")
    }
}

/// Splits a header block into its representations (RFC 7541 §6), without
/// decoding them (the decoder does that); `None` if the block does not parse.
pub(super) fn parts(block: &[u8]) -> Option<Vec<HpackPart>> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let first = *block.get(at)?;
        let start = at;
        let (description, emits) = if first & 0x80 != 0 {
            // §6.1: "1" then a 7-bit index.
            let (index, end) = hpack_int(block, at, 7)?;
            at = end;
            (format!("indexed: {}", table_entry(index)), true)
        } else if first & 0xe0 == 0x20 {
            // §6.3: "001" then the new size (5-bit prefix).
            let (size, end) = hpack_int(block, at, 5)?;
            at = end;
            (format!("dynamic table size update: {size} bytes"), false)
        } else {
            // §6.2: "01" (6-bit index, added to the dynamic table), "0000"
            // (not added), "0001" (never indexed, not even by proxies).
            let (prefix, kind) = match first & 0xf0 {
                _ if first & 0xc0 == 0x40 => (6, "literal, added to the dynamic table"),
                0x10 => (4, "literal, never indexed"),
                _ => (4, "literal, not indexed"),
            };
            let (index, end) = hpack_int(block, at, prefix)?;
            at = end;
            let name = if index == 0 {
                let (huffman, len, end) = hpack_string(block, at)?;
                at = end;
                format!(
                    "new name ({len} bytes{})",
                    if huffman { ", Huffman-coded" } else { "" }
                )
            } else {
                format!("name from {}", table_entry(index))
            };
            let (huffman, len, end) = hpack_string(block, at)?;
            at = end;
            (
                format!(
                    "{kind}; {name}; value {len} bytes{}",
                    if huffman { ", Huffman-coded" } else { "" }
                ),
                true,
            )
        };
        parts.push(HpackPart {
            range: start..at,
            description,
            emits,
        });
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_representations_are_told_apart() {
        // 82: indexed, static 2 (:method GET) · 3f e1 1f: size update 4096 ·
        // 44 03 "/ab": literal added, name static 4 (:path), raw value ·
        // 10 01 "k" 01 "v": never indexed, new name · c0: dynamic 64.
        let block = [
            0x82, 0x3f, 0xe1, 0x1f, 0x44, 0x03, b'/', b'a', b'b', 0x10, 0x01, b'k', 0x01, b'v',
            0xc0,
        ];
        let found = parts(&block).unwrap();
        let described: Vec<(&str, bool)> = found
            .iter()
            .map(|p| (p.description.as_str(), p.emits))
            .collect();
        assert_eq!(
            described,
            [
                ("indexed: static table entry 2", true),
                ("dynamic table size update: 4096 bytes", false),
                (
                    "literal, added to the dynamic table; name from static table entry 4; value 3 bytes",
                    true
                ),
                (
                    "literal, never indexed; new name (1 bytes); value 1 bytes",
                    true
                ),
                ("indexed: dynamic table entry 64", true),
            ]
        );
        assert_eq!(found[2].range, 4..9);
        // A string running past the end.
        assert!(parts(&[0x44, 0x05, b'x']).is_none());
        assert!(parts(&[0xff, 0xff, 0xff]).is_none());
    }
}
