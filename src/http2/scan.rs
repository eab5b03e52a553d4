//! Following an HTTP/2 byte stream frame by frame, without buffering it.
//!
//! The server's PING policy and the read pacers on both sides need to know
//! which frames pass through a socket, not what is in them. `h2` parses the
//! same bytes for real; this only keeps step.
//!
//! Every frame starts with a 9-octet header ([`FrameHead`], `frame.rs`);
//! the scanner finds each one in the stream and skips the payload it
//! announces.
//!
//! The scanner keeps only where it is in that pattern (a partial header, or
//! how much payload to skip), so it costs a few bytes per connection and
//! never buffers. It does not validate anything: `h2`, which reads the same
//! bytes, rejects malformed frames; the scanner just has to stay in step
//! with well-formed ones.

use super::frame::{FrameHead, HEADER_LEN};

/// The client connection preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24
/// octets before the first frame a server reads.
const CLIENT_PREFACE_LEN: usize = 24;
/// Follows one direction of an HTTP/2 byte stream and reports each frame
/// header as it completes.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Octets still to skip before the next frame header (the preface).
    pub(super) skip: usize,
    /// Payload octets of the current frame still to pass.
    pub(super) payload_left: u32,
    /// The header being assembled.
    pub(super) head: [u8; HEADER_LEN],
    /// How many octets of `head` are filled.
    pub(super) filled: usize,
}

impl FrameScanner {
    /// For what a server reads: the client preface, then frames.
    pub fn from_client() -> Self {
        FrameScanner::skipping(CLIENT_PREFACE_LEN)
    }

    /// For what a server writes: frames from the first octet.
    pub fn from_server() -> Self {
        FrameScanner::skipping(0)
    }

    fn skipping(skip: usize) -> Self {
        FrameScanner {
            skip,
            payload_left: 0,
            head: [0; HEADER_LEN],
            filled: 0,
        }
    }

    /// Scans the next `bytes` of the stream, calling `on_head` for every
    /// frame header completed in them.
    pub fn scan(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = bytes.get(n..).unwrap_or_default();
            } else if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                // n <= payload_left, which is a u32.
                self.payload_left -= n as u32;
                bytes = bytes.get(n..).unwrap_or_default();
            } else {
                let n = (HEADER_LEN - self.filled).min(bytes.len());
                let (taken, rest) = bytes.split_at(n);
                if let Some(slot) = self.head.get_mut(self.filled..self.filled + n) {
                    slot.copy_from_slice(taken);
                }
                self.filled += n;
                bytes = rest;
                if self.filled == HEADER_LEN {
                    self.filled = 0;
                    let head = FrameHead::parse(&self.head);
                    self.payload_left = head.length;
                    on_head(head);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(scanner: &mut FrameScanner, chunks: &[&[u8]]) -> Vec<FrameHead> {
        let mut found = Vec::new();
        for chunk in chunks {
            scanner.scan(chunk, |h| found.push(h));
        }
        found
    }

    // The client preface, then SETTINGS (empty), then PING with 8 octets of
    // opaque data, then a PING ACK.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    const PING_FRAME: &[u8] = &[
        0, 0, 8,   // length 8
        0x6, // PING
        0x0, // no flags
        0, 0, 0, 0, // stream 0
        1, 2, 3, 4, 5, 6, 7, 8, // opaque data
    ];
    const PING_ACK: &[u8] = &[0, 0, 8, 0x6, 0x1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    // DATA on stream 1, 5 octets, END_STREAM.
    const DATA_FRAME: &[u8] = &[0, 0, 5, 0x0, 0x1, 0, 0, 0, 1, b'h', b'e', b'l', b'l', b'o'];

    #[test]
    fn scans_frames_after_the_preface() {
        let stream = [PREFACE, SETTINGS, PING_FRAME, DATA_FRAME, PING_ACK].concat();
        let found = heads(&mut FrameScanner::from_client(), &[&stream]);
        let kinds: Vec<(u8, u8, u32)> = found.iter().map(|h| (h.kind, h.flags, h.length)).collect();
        assert_eq!(
            kinds,
            vec![(0x4, 0, 0), (0x6, 0, 8), (0x0, 1, 5), (0x6, 1, 8)]
        );
        assert!(found[1].is_ping());
        assert!(!found[3].is_ping(), "an ACK is not a PING");
        assert!(found[2].is_response());
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let stream = [PREFACE, PING_FRAME, DATA_FRAME, PING_FRAME].concat();
        let whole = heads(&mut FrameScanner::from_client(), &[&stream]);
        // One octet at a time, and every two-way split.
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(heads(&mut FrameScanner::from_client(), &singles), whole);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                heads(&mut FrameScanner::from_client(), &[a, b]),
                whole,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn server_side_has_no_preface() {
        let stream = [SETTINGS, DATA_FRAME].concat();
        let found = heads(&mut FrameScanner::from_server(), &[&stream]);
        assert_eq!(found.len(), 2);
        assert!(found[1].is_response());
    }

    #[test]
    fn large_lengths_are_skipped_not_buffered() {
        // A header announcing 16 MiB - 1 of payload: the scanner only counts.
        let mut scanner = FrameScanner::from_server();
        let found = heads(&mut scanner, &[&[0xff, 0xff, 0xff, 0x0, 0, 0, 0, 0, 1]]);
        assert_eq!(found[0].length, 0xff_ffff);
        assert_eq!(scanner.payload_left, 0xff_ffff);
    }
}
