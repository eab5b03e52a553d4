//! The server's PING policy: which client PINGs are too many, decided from
//! the HTTP/2 frame headers passing through the connection. Pure: bytes and
//! instants in, verdicts out; `transport.rs` feeds it from the socket.
//!
//! `h2` answers every PING by itself and has no opinion on how often a peer
//! may send one, so a client could keep the server busy writing PING ACKs
//! (a "PING flood"). gRPC's answer, which grpc-go and grpc-core share, is a
//! *permitted keepalive time*: a client may PING at most once per that
//! interval; a PING that comes sooner is a *strike*, and after a few strikes
//! the server closes the connection with GOAWAY `ENHANCE_YOUR_CALM`. Two
//! details keep honest clients out of trouble:
//!
//! * a PING that follows response DATA or HEADERS from the server is never a
//!   strike: clients legitimately PING in step with what they receive (grpc-go
//!   measures bandwidth-delay that way), and that rate is set by the server;
//! * PING ACKs (the answers to *our* keepalive PINGs) are not PINGs.
//!
//! # What the scanner reads
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
//! ```
//!
//! The scanner keeps only where it is in that pattern (a partial header, or
//! how much payload to skip), so it costs a few bytes per connection and
//! never buffers. It does not validate anything: `h2`, which reads the same
//! bytes, rejects malformed frames; the scanner just has to stay in step
//! with well-formed ones.

use std::time::{Duration, Instant};

/// Default for [`Builder::min_ping_interval`](super::Builder::min_ping_interval):
/// clients may PING once every 10 seconds. Our own client's keepalive
/// ([`client::DEFAULT_KEEPALIVE_INTERVAL`](crate::client::DEFAULT_KEEPALIVE_INTERVAL))
/// stays above it.
pub const DEFAULT_MIN_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Default for [`Builder::max_ping_strikes`](super::Builder::max_ping_strikes):
/// two early PINGs are forgiven (clocks and timers are not exact), the third
/// closes the connection.
pub const DEFAULT_MAX_PING_STRIKES: u32 = 2;

/// The client connection preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24
/// octets before the first frame a server reads.
const CLIENT_PREFACE_LEN: usize = 24;
/// Octets in a frame header.
const HEADER_LEN: usize = 9;

/// Frame types the policy cares about (RFC 9113 §6).
pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PING: u8 = 0x6;
/// The ACK flag of a PING frame.
pub(crate) const FLAG_ACK: u8 = 0x1;

/// A frame header, as scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub(crate) length: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
}

impl FrameHead {
    fn parse(octets: &[u8; HEADER_LEN]) -> FrameHead {
        let [l0, l1, l2, kind, flags, ..] = *octets;
        FrameHead {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
        }
    }

    /// A PING the peer wants answered (not an ACK of ours).
    pub(crate) fn is_ping(&self) -> bool {
        self.kind == PING && self.flags & FLAG_ACK == 0
    }

    /// DATA or HEADERS: the frames that carry a response.
    pub(crate) fn is_response(&self) -> bool {
        self.kind == DATA || self.kind == HEADERS
    }
}

/// Follows one direction of an HTTP/2 byte stream and reports each frame
/// header as it completes.
#[derive(Debug, Clone)]
pub(crate) struct FrameScanner {
    /// Octets still to skip before the next frame header (the preface).
    skip: usize,
    /// Payload octets of the current frame still to pass.
    payload_left: u32,
    /// The header being assembled.
    head: [u8; HEADER_LEN],
    /// How many octets of `head` are filled.
    filled: usize,
}

impl FrameScanner {
    /// For what a server reads: the client preface, then frames.
    pub(crate) fn from_client() -> Self {
        FrameScanner::skipping(CLIENT_PREFACE_LEN)
    }

    /// For what a server writes: frames from the first octet.
    pub(crate) fn from_server() -> Self {
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
    pub(crate) fn scan(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(FrameHead)) {
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

/// What the policy says about a PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fine (or forgiven).
    Allowed,
    /// Too many PINGs too close together: GOAWAY `ENHANCE_YOUR_CALM`.
    TooMany,
}

/// The permitted-keepalive-time rule, for one connection.
#[derive(Debug, Clone)]
pub(crate) struct PingPolicy {
    /// PINGs closer together than this are strikes.
    min_interval: Duration,
    /// Strikes forgiven; one more is [`Verdict::TooMany`].
    max_strikes: u32,
    strikes: u32,
    last_ping: Option<Instant>,
    /// The server sent DATA or HEADERS since the last PING.
    responded: bool,
}

impl PingPolicy {
    pub(crate) fn new(min_interval: Duration, max_strikes: u32) -> Self {
        PingPolicy {
            min_interval,
            max_strikes,
            strikes: 0,
            last_ping: None,
            responded: false,
        }
    }

    /// The server wrote a response frame (DATA or HEADERS).
    pub(crate) fn on_response_sent(&mut self) {
        self.responded = true;
    }

    /// The client sent a PING at `now`.
    pub(crate) fn on_ping(&mut self, now: Instant) -> Verdict {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.responded) {
            // The server has been sending: PINGs in step with that are the
            // client measuring the connection, not flooding it.
            self.strikes = 0;
            return Verdict::Allowed;
        }
        if let Some(last) = last {
            if now.saturating_duration_since(last) < self.min_interval {
                self.strikes += 1;
            }
        }
        if self.strikes > self.max_strikes {
            Verdict::TooMany
        } else {
            Verdict::Allowed
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

    #[test]
    fn pings_at_the_permitted_interval_are_fine() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let start = Instant::now();
        for i in 0..100 {
            let now = start + Duration::from_secs(10 * i);
            assert_eq!(policy.on_ping(now), Verdict::Allowed);
        }
    }

    #[test]
    fn the_third_early_ping_after_two_forgiven_is_too_many() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(policy.on_ping(t), Verdict::Allowed); // first: nothing to compare
        assert_eq!(policy.on_ping(t + ms(1)), Verdict::Allowed); // strike 1
        assert_eq!(policy.on_ping(t + ms(2)), Verdict::Allowed); // strike 2
        assert_eq!(policy.on_ping(t + ms(3)), Verdict::TooMany); // strike 3
    }

    #[test]
    fn pings_following_responses_are_never_strikes() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let t = Instant::now();
        for i in 0..1000 {
            policy.on_response_sent();
            assert_eq!(
                policy.on_ping(t + Duration::from_millis(i)),
                Verdict::Allowed
            );
        }
        // ... and a response forgives earlier strikes.
        let later = t + Duration::from_secs(1);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        policy.on_response_sent();
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::TooMany);
    }
}
