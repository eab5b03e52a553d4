//! The HTTP/2 frame header: the 9 octets in front of every frame, their
//! frame types and flags, and their names. The one place in the crate that
//! reads or writes them: the frame scanner, the server's PING policy (through
//! the scanner), the wire trace and the tests' hand-written frames all use
//! [`FrameHead`].
//!
//! Every HTTP/2 frame starts with the same 9 octets (RFC 9113 §4.1):
//!
//! ```text
//! +-----------------------------------------------+
//! |                 Length (24)                   |
//! +---------------+---------------+---------------+
//! |   Type (8)    |   Flags (8)   |
//! +-+-------------+---------------+-------------------------------+
//! |R|                 Stream Identifier (31)                      |
//! +=+=============================================================+
//! |                   Frame Payload (Length octets)             ...
//! +---------------------------------------------------------------+
//!
//!  e.g.  00 00 08  06  00  00 00 00 00   then 8 octets: a PING, no flags,
//!                                        on stream 0 (the connection)
//! ```
//!
//! Pure, like `framing::Prefix`: octets in, a [`FrameHead`] out, and
//! [`FrameHead::encode`] for the other way. Nothing is validated beyond
//! what the 9 octets can say: `h2`, which reads the same bytes for real,
//! rejects frames that are too long or on the wrong stream.

use bytes::BufMut;

/// Octets in a frame header.
pub const HEADER_LEN: usize = 9;

/// The largest payload a header can announce: its length is 24 bits.
pub const MAX_LENGTH: u32 = (1 << 24) - 1;

/// DATA (RFC 9113 §6.1).
pub const DATA: u8 = 0x0;
/// HEADERS (RFC 9113 §6.2).
pub const HEADERS: u8 = 0x1;
/// PRIORITY (RFC 9113 §6.3).
pub const PRIORITY: u8 = 0x2;
/// RST_STREAM (RFC 9113 §6.4).
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS (RFC 9113 §6.5).
pub const SETTINGS: u8 = 0x4;
/// PUSH_PROMISE (RFC 9113 §6.6).
pub const PUSH_PROMISE: u8 = 0x5;
/// PING (RFC 9113 §6.7).
pub const PING: u8 = 0x6;
/// GOAWAY (RFC 9113 §6.8).
pub const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE (RFC 9113 §6.9).
pub const WINDOW_UPDATE: u8 = 0x8;
/// CONTINUATION (RFC 9113 §6.10).
pub const CONTINUATION: u8 = 0x9;

// Flags: a bit means something only for the frame types that define it, so
// the same bit has two names (END_STREAM on DATA/HEADERS, ACK on
// SETTINGS/PING).

/// END_STREAM, on DATA and HEADERS: the sender's last frame of the stream.
pub const FLAG_END_STREAM: u8 = 0x1;
/// ACK, on SETTINGS and PING: an answer, not a request.
pub const FLAG_ACK: u8 = 0x1;
/// END_HEADERS, on HEADERS, PUSH_PROMISE and CONTINUATION: the header block
/// ends in this frame (otherwise CONTINUATION frames follow).
pub const FLAG_END_HEADERS: u8 = 0x4;
/// PADDED, on DATA, HEADERS and PUSH_PROMISE: a pad length octet leads the
/// payload and that many octets of padding end it.
pub const FLAG_PADDED: u8 = 0x8;
/// PRIORITY, on HEADERS: 5 octets of (deprecated) priority fields lead the
/// header block fragment.
pub const FLAG_PRIORITY: u8 = 0x20;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload octets that follow the header (24 bits on the wire).
    pub length: u32,
    /// The frame type ([`DATA`], [`HEADERS`], …).
    pub kind: u8,
    /// The type's flags ([`FLAG_END_STREAM`], [`FLAG_ACK`], …).
    pub flags: u8,
    /// The stream it belongs to (0: the connection), the reserved bit
    /// cleared.
    pub stream: u32,
}

impl FrameHead {
    /// The header in `octets`.
    pub fn parse(octets: &[u8; HEADER_LEN]) -> FrameHead {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *octets;
        FrameHead {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            // RFC 9113 §4.1: "R: A reserved 1-bit field. The semantics of
            // this bit are undefined, and the bit MUST remain unset (0x00)
            // when sending and MUST be ignored when receiving."
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    /// The header at the start of `src`, or `None` while fewer than
    /// [`HEADER_LEN`] octets have arrived (the rest is still in flight, not
    /// an error). `src` is not consumed.
    pub fn peek(src: &[u8]) -> Option<FrameHead> {
        src.first_chunk::<HEADER_LEN>().map(FrameHead::parse)
    }

    /// The 9 octets of this header. A `length` over [`MAX_LENGTH`] cannot be
    /// written: only its low 24 bits are (the caller checks the length
    /// against the peer's SETTINGS_MAX_FRAME_SIZE, which is smaller).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [_, l0, l1, l2] = self.length.to_be_bytes();
        // "the bit MUST remain unset (0x00) when sending".
        let [s0, s1, s2, s3] = (self.stream & 0x7fff_ffff).to_be_bytes();
        [l0, l1, l2, self.kind, self.flags, s0, s1, s2, s3]
    }

    /// Writes the 9 octets of this header (see [`FrameHead::to_bytes`]).
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// A PING the peer wants answered (not an ACK of ours).
    pub fn is_ping(&self) -> bool {
        self.kind == PING && self.flags & FLAG_ACK == 0
    }

    /// DATA or HEADERS: the frames that carry a response.
    pub fn is_response(&self) -> bool {
        self.kind == DATA || self.kind == HEADERS
    }

    /// The frame type's name, as RFC 9113 §6 spells it (`UNKNOWN(0xa)` for
    /// a type it does not define: a receiver ignores those, §4.1).
    pub fn kind_name(&self) -> String {
        let name = match self.kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            PRIORITY => "PRIORITY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PUSH_PROMISE => "PUSH_PROMISE",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            CONTINUATION => "CONTINUATION",
            other => return format!("UNKNOWN(0x{other:x})"),
        };
        name.to_owned()
    }

    /// The names of the set flags that this frame type defines (bits it
    /// does not define are not named: they mean nothing on it).
    pub fn flag_names(&self) -> Vec<&'static str> {
        let defined: &[(u8, &str)] = match self.kind {
            DATA => &[(FLAG_END_STREAM, "END_STREAM"), (FLAG_PADDED, "PADDED")],
            HEADERS => &[
                (FLAG_END_STREAM, "END_STREAM"),
                (FLAG_END_HEADERS, "END_HEADERS"),
                (FLAG_PADDED, "PADDED"),
                (FLAG_PRIORITY, "PRIORITY"),
            ],
            SETTINGS | PING => &[(FLAG_ACK, "ACK")],
            CONTINUATION => &[(FLAG_END_HEADERS, "END_HEADERS")],
            PUSH_PROMISE => &[(FLAG_END_HEADERS, "END_HEADERS"), (FLAG_PADDED, "PADDED")],
            _ => &[],
        };
        defined
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_settings_header() {
        // length 0x000012 = 18 · type 0x4 SETTINGS · flags 0 · stream 0
        let head = FrameHead::peek(&[0, 0, 0x12, 0x04, 0, 0, 0, 0, 0, 0xaa]).unwrap();
        assert_eq!(
            head,
            FrameHead {
                length: 18,
                kind: SETTINGS,
                flags: 0,
                stream: 0
            }
        );
        assert_eq!(head.kind_name(), "SETTINGS");
    }

    #[test]
    fn the_reserved_bit_is_ignored_and_never_sent() {
        // length 0 · DATA · END_STREAM · R set, stream 3
        let head = FrameHead::peek(&[0, 0, 0, 0, 0x01, 0x80, 0, 0, 0x03]).unwrap();
        assert_eq!((head.kind_name().as_str(), head.stream), ("DATA", 3));
        assert_eq!(head.flag_names(), ["END_STREAM"]);
        assert_eq!(head.to_bytes(), [0, 0, 0, 0, 0x01, 0, 0, 0, 0x03]);
        let sent = FrameHead {
            stream: 0xffff_ffff,
            ..head
        };
        assert_eq!(sent.to_bytes()[5], 0x7f);
    }

    #[test]
    fn a_short_header_is_not_there_yet() {
        for n in 0..HEADER_LEN {
            assert_eq!(FrameHead::peek(&[0; HEADER_LEN][..n]), None, "{n} octets");
        }
    }

    #[test]
    fn encodes_and_round_trips() {
        let head = FrameHead {
            length: MAX_LENGTH,
            kind: WINDOW_UPDATE,
            flags: 0,
            stream: 0x7fff_ffff,
        };
        let mut out = Vec::new();
        head.encode(&mut out);
        // length 0xffffff · type 0x8 · flags 0 · stream 2^31 - 1
        assert_eq!(out, [0xff, 0xff, 0xff, 0x08, 0, 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(FrameHead::peek(&out), Some(head));
    }

    #[test]
    fn flags_are_named_per_type() {
        let head = |kind, flags| FrameHead {
            length: 0,
            kind,
            flags,
            stream: 1,
        };
        // 0x1 is END_STREAM on HEADERS and ACK on PING; 0x4 is END_HEADERS
        // on HEADERS and nothing on DATA.
        assert_eq!(
            head(HEADERS, 0x25).flag_names(),
            ["END_STREAM", "END_HEADERS", "PRIORITY"]
        );
        assert_eq!(head(PING, 0x1).flag_names(), ["ACK"]);
        assert_eq!(head(DATA, 0x4).flag_names(), Vec::<&str>::new());
        assert_eq!(head(0xa, 0).kind_name(), "UNKNOWN(0xa)");
    }
}
