//! Joining runs of DATA frames before `h2` reads them, in place.
//!
//! A peer may cut a stream's data into frames as small as one byte (grpc's
//! own HTTP/2 tests use 5). `h2` holds every frame it has read until the
//! call takes it, at a cost of about 200 bytes each beyond the data, and
//! counts that against its DATA-frame budget ([`super::pace`]). But where
//! the frames sit one after the other in the bytes of one socket read, they
//! can be handed to `h2` as one: consecutive DATA frames of the same stream
//! become a single frame carrying their payloads in order.
//!
//! ```text
//!   read:   [DATA s1 "he"] [DATA s1 "ll"] [DATA s1 "o" END_STREAM] [PING]
//!   to h2:  [DATA s1 "hello" END_STREAM]                            [PING]
//! ```
//!
//! Why that changes nothing `h2` or the peer can tell:
//!
//! * Frame boundaries carry no meaning for DATA. RFC 9113 §8.1: "the
//!   message content ... is carried as a sequence of DATA frames"; a frame
//!   is a unit of transport, not of content (gRPC messages already span and
//!   share frames; `framing` never looks at frame edges).
//! * Flow control counts the same octets. RFC 9113 §6.9.1: "The entire DATA
//!   frame payload is included in flow control, including the Pad Length
//!   and Padding fields if present." Frames are joined only when neither is
//!   padded, so the joined payload is exactly the sum, and every
//!   WINDOW_UPDATE `h2` sends is the one it would have sent.
//! * The joined frame stays within the size every HTTP/2 endpoint must
//!   accept: RFC 9113 §4.2: "All implementations MUST be capable of
//!   receiving and minimally processing frames up to 2^14 octets in length".
//! * END_STREAM stays on the last: a frame is joined to one only while that
//!   one does not end the stream.
//!
//! What is left alone: padded frames, empty frames (which `h2` limits by
//! count, and which must stay visible to that limit), frames on stream 0
//! (an error `h2` must see as sent), every other frame type, and any frame
//! not wholly inside the bytes being read (the part before and after a read
//! boundary passes through as it came). Nothing is buffered: the bytes are
//! rewritten where they are, and only ever get shorter.
//!
//! Pure: a byte slice in, its new length out.

use super::frame::{DATA, FLAG_END_STREAM, FLAG_PADDED, FrameHead, HEADER_LEN};
use super::scan::FrameScanner;

/// The largest frame this produces: the size every endpoint must accept
/// (RFC 9113 §4.2), whatever SETTINGS_MAX_FRAME_SIZE it advertised.
pub const MAX_JOINED_FRAME: u32 = 1 << 14;

/// A DATA frame already written out in this pass that later frames of the
/// same stream may join.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Offset of its header in the buffer.
    at: usize,
    stream: u32,
    length: u32,
}

/// A DATA frame that others may join, or that may join one.
fn joinable(head: &FrameHead) -> bool {
    head.kind == DATA && head.stream != 0 && head.length > 0 && head.flags & FLAG_PADDED == 0
}

impl FrameScanner {
    /// Scans `buf`, the next bytes of the stream, like [`FrameScanner::scan`]
    /// (calling `on_head` for every frame header as the peer sent it), and
    /// joins the runs of DATA frames wholly inside it, moving the bytes
    /// that follow forward. Returns the new length of the bytes in `buf`;
    /// what lies beyond it is garbage.
    pub fn scan_joining(&mut self, buf: &mut [u8], mut on_head: impl FnMut(FrameHead)) -> usize {
        let len = buf.len();
        // `read` walks the input; `write` is where output goes (never ahead
        // of `read`, so moving bytes forward never overwrites unread ones).
        let mut read = 0;
        let mut write = 0;

        // First finish whatever an earlier read began (the preface, a
        // header, a payload): those bytes pass through unchanged.
        while read < len && !self.at_boundary() {
            let step = if self.skip > 0 {
                self.skip
            } else if self.filled > 0 {
                HEADER_LEN - self.filled
            } else {
                usize::try_from(self.payload_left).unwrap_or(usize::MAX)
            }
            .min(len - read);
            let (upto, end) = (read, read + step);
            self.scan(buf.get(upto..end).unwrap_or_default(), &mut on_head);
            buf.copy_within(upto..end, write);
            read = end;
            write += step;
        }

        let mut open: Option<Open> = None;
        while read < len {
            let Some(head) = buf.get(read..len).and_then(FrameHead::peek) else {
                break; // a header cut by the end of the read
            };
            let total = HEADER_LEN + head.length as usize;
            if len - read < total {
                break; // a payload cut by the end of the read
            }
            on_head(head);
            match open {
                Some(mut run)
                    if joinable(&head)
                        && head.stream == run.stream
                        && run.length + head.length <= MAX_JOINED_FRAME =>
                {
                    // Append the payload to the open frame and grow its
                    // length (24 bits, big-endian, RFC 9113 §4.1).
                    buf.copy_within(read + HEADER_LEN..read + total, write);
                    write += head.length as usize;
                    run.length += head.length;
                    let [_, l0, l1, l2] = run.length.to_be_bytes();
                    if let Some(length) = buf.get_mut(run.at..run.at + 3) {
                        length.copy_from_slice(&[l0, l1, l2]);
                    }
                    if head.flags & FLAG_END_STREAM != 0 {
                        if let Some(flags) = buf.get_mut(run.at + 4) {
                            *flags |= FLAG_END_STREAM;
                        }
                        open = None;
                    } else {
                        open = Some(run);
                    }
                }
                _ => {
                    buf.copy_within(read..read + total, write);
                    let can_grow = joinable(&head)
                        && head.flags & FLAG_END_STREAM == 0
                        && head.length < MAX_JOINED_FRAME;
                    open = can_grow.then_some(Open {
                        at: write,
                        stream: head.stream,
                        length: head.length,
                    });
                    write += total;
                }
            }
            read += total;
        }

        // The frame cut by the end of the read passes through as it is; the
        // scanner remembers where it stopped.
        if read < len {
            self.scan(buf.get(read..).unwrap_or_default(), &mut on_head);
            buf.copy_within(read..len, write);
            write += len - read;
        }
        write
    }

    /// Between frames: nothing begun and unfinished.
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.filled == 0 && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame: length (24) | type | flags | stream (32) | payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn data(flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        frame(DATA, flags, stream, payload)
    }

    /// Runs `chunks` (the reads) through a fresh server-side scanner and
    /// returns what `h2` would read, and the headers `on_head` saw.
    fn joined(chunks: &[Vec<u8>]) -> (Vec<u8>, Vec<FrameHead>) {
        let mut scanner = FrameScanner::from_server();
        let mut out = Vec::new();
        let mut heads = Vec::new();
        for chunk in chunks {
            let mut buf = chunk.clone();
            let n = scanner.scan_joining(&mut buf, |h| heads.push(h));
            out.extend_from_slice(&buf[..n]);
        }
        (out, heads)
    }

    const PING: &[u8] = &[0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    #[test]
    fn a_run_of_data_frames_becomes_one() {
        let read = [
            data(0, 1, b"he"),
            data(0, 1, b"ll"),
            data(FLAG_END_STREAM, 1, b"o"),
            PING.to_vec(),
        ]
        .concat();
        let (out, heads) = joined(&[read]);
        // 00 00 05 | 00 DATA | 01 END_STREAM | 00 00 00 01 | "hello", then the PING.
        assert_eq!(
            out,
            [data(FLAG_END_STREAM, 1, b"hello"), PING.to_vec()].concat()
        );
        // The PING policy still sees every frame the peer sent.
        assert_eq!(heads.len(), 4);
    }

    #[test]
    fn streams_padding_empties_and_end_stream_break_a_run() {
        let frames = [
            data(0, 1, b"a"),
            data(0, 3, b"b"),                    // another stream
            data(FLAG_PADDED, 3, &[1, b'c', 0]), // padded: counted with its padding
            data(0, 3, b"d"),
            data(0, 3, b""), // empty: h2 counts these
            data(0, 3, b"e"),
            data(FLAG_END_STREAM, 3, b"f"), // joins "e", and ends the run
            data(0, 3, b"g"),               // (a peer error h2 will report)
            data(0, 0, b"h"),               // stream 0: h2 must see it
            data(0, 0, b"i"),
        ];
        let (out, _) = joined(&[frames.concat()]);
        let want = [
            data(0, 1, b"a"),
            data(0, 3, b"b"),
            data(FLAG_PADDED, 3, &[1, b'c', 0]),
            data(0, 3, b"d"),
            data(0, 3, b""),
            data(FLAG_END_STREAM, 3, b"ef"),
            data(0, 3, b"g"),
            data(0, 0, b"h"),
            data(0, 0, b"i"),
        ];
        assert_eq!(out, want.concat());
    }

    #[test]
    fn a_joined_frame_stops_at_sixteen_kib() {
        let piece = vec![7u8; 5000];
        let read: Vec<u8> = (0..4).flat_map(|_| data(0, 1, &piece)).collect();
        let (out, _) = joined(&[read]);
        // 5000 × 3 = 15,000 fits; the fourth would make 20,000.
        let want = [data(0, 1, &vec![7u8; 15_000]), data(0, 1, &piece)].concat();
        assert_eq!(out, want);
    }

    #[test]
    fn any_split_into_reads_gives_the_same_data_per_stream() {
        // The preface side: a server reads the client preface first.
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut stream = preface.clone();
        for i in 0..40u8 {
            stream.extend(data(0, 1 + 2 * u32::from(i % 3), &[i; 5]));
            if i % 7 == 0 {
                stream.extend_from_slice(PING);
            }
        }
        // What each stream carries, in order, whatever the frames.
        fn payloads(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
            let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
            let mut at = 24;
            while at + 9 <= bytes.len() {
                let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
                let stream = u32::from_be_bytes([
                    bytes[at + 5],
                    bytes[at + 6],
                    bytes[at + 7],
                    bytes[at + 8],
                ]);
                if bytes[at + 3] == DATA {
                    match out.iter_mut().find(|(s, _)| *s == stream) {
                        Some((_, p)) => p.extend_from_slice(&bytes[at + 9..at + 9 + len]),
                        None => out.push((stream, bytes[at + 9..at + 9 + len].to_vec())),
                    }
                }
                at += 9 + len;
            }
            assert_eq!(at, bytes.len(), "whole frames");
            out
        }
        let want = payloads(&stream);
        for cut in (0..stream.len()).step_by(3) {
            for second in [cut + 1, cut + 14, stream.len()] {
                let second = second.min(stream.len());
                let chunks = [
                    stream[..cut].to_vec(),
                    stream[cut..second].to_vec(),
                    stream[second..].to_vec(),
                ];
                let mut scanner = FrameScanner::from_client();
                let mut out = Vec::new();
                let mut pings = 0;
                for chunk in &chunks {
                    let mut buf = chunk.clone();
                    let n = scanner.scan_joining(&mut buf, |h| pings += usize::from(h.is_ping()));
                    out.extend_from_slice(&buf[..n]);
                }
                assert!(out.len() <= stream.len());
                assert_eq!(&out[..24], &preface[..], "cut {cut}/{second}");
                assert_eq!(payloads(&out), want, "cut {cut}/{second}");
                assert_eq!(pings, 6, "cut {cut}/{second}");
            }
        }
    }
}
