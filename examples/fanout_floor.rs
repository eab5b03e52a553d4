//! A measuring stick, not a chat server: the least work a `ChatStream` fan-out
//! can do on a machine, to find the floor under the yardstick's latency rows
//! (`docs/benchmarks.md` §1, "Row 4's floor").
//!
//! Every server of `ChatStream` must, for each message, read it once and write
//! it once per other member: one `write` on each member's socket, each of them
//! a trip through the kernel's TCP path (on loopback, the receiver's half of
//! that path runs inside the sender's `write` too). This program does that and
//! nothing else:
//!
//! - one OS thread per connection, blocking sockets: no async runtime, no task
//!   wake-ups, no `h2`;
//! - the thread that reads a message writes it to every other connection in a
//!   tight loop, as one ready-made DATA frame shared by all of them;
//! - no names, rooms, validation, history or limits; no HPACK decoding (every
//!   client is taken to have one call, on stream 1); the gRPC message is passed
//!   on unchanged.
//!
//! It still keeps HTTP/2's flow control: a member whose window is used up
//! misses the message (and the program says so on stderr), because writing
//! past a window is a protocol error the client would end the connection for.
//! So it is fit for the yardstick's rows 1–4, where no reader falls that far
//! behind, and not for row 5, whose stalled reader would lose messages here.
//!
//! ```text
//! cargo build --release --example fanout_floor
//! ../shared/bench/run.sh "$PWD/target/release/examples/fanout_floor 127.0.0.1:50104" 127.0.0.1:50104 floor
//! ```
//!
//! It listens on loopback only: it trusts its peers far more than a server may.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{BufMut, BytesMut};
use grpc_chat::framing::{DEFAULT_MAX_RECV_MESSAGE_SIZE, Decoder, Encoding, encode_message};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types (RFC 9113 §6) and the flags used here.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// SETTINGS_INITIAL_WINDOW_SIZE's identifier (RFC 9113 §6.5.2).
const INITIAL_WINDOW_SIZE: u16 = 0x4;
/// "The initial value for the flow-control window is 65,535 octets for both
/// new streams and the overall connection" (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window HTTP/2 allows: 2^31 − 1 (RFC 9113 §6.9.1). It is what
/// this program grants each client, so a sender never waits for a
/// WINDOW_UPDATE from it.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// SETTINGS_MAX_FRAME_SIZE's initial value; this program never raises it, so
/// a bigger frame from a client is a FRAME_SIZE_ERROR (RFC 9113 §4.2).
const MAX_FRAME: usize = 16_384;

/// One client, as the threads that write to it see it.
struct Member {
    id: u64,
    /// A clone of the connection's socket. Every write to a connection goes
    /// through here, under the table's lock, so frames from two threads never
    /// interleave.
    socket: TcpStream,
    /// What the client still lets us send: the smaller of its stream-1 and
    /// connection windows.
    stream_window: i64,
    conn_window: i64,
}

/// Every member that has its response headers, so may be sent messages.
type Table = Arc<Mutex<Vec<Member>>>;

fn lock(table: &Table) -> MutexGuard<'_, Vec<Member>> {
    // A thread that panicked while holding the lock leaves a table that is
    // still consistent (every change to it is one push, retain or field store).
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        None => "127.0.0.1:50104".parse().map_err(io::Error::other)?,
        Some(Ok(addr)) => addr,
        Some(Err(err)) => {
            eprintln!("usage: fanout_floor [127.0.0.1:PORT] ({err})");
            std::process::exit(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("fanout_floor: {addr} is not a loopback address; this is a benchmark stick only");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(addr)?;
    // The bound address, so port 0 works (tests read this line).
    eprintln!("fanout_floor: listening on {}", listener.local_addr()?);
    let table: Table = Arc::new(Mutex::new(Vec::new()));
    for (id, socket) in (0u64..).zip(listener.incoming()) {
        let socket = match socket {
            Ok(socket) => socket,
            Err(err) => {
                eprintln!("fanout_floor: accept: {err}");
                continue;
            }
        };
        let table = Arc::clone(&table);
        std::thread::spawn(move || {
            if let Err(err) = serve(id, socket, &table) {
                if err.kind() != io::ErrorKind::UnexpectedEof {
                    eprintln!("fanout_floor: connection {id}: {err}");
                }
            }
            lock(&table).retain(|m| m.id != id);
        });
    }
    Ok(())
}

/// Appends one frame: the 9-byte header (RFC 9113 §4.1), then the payload,
/// which callers keep within [`MAX_FRAME`] (the client's limit too: it never
/// raises SETTINGS_MAX_FRAME_SIZE in a benchmark).
fn put_frame(dst: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_FRAME);
    dst.put_uint(payload.len() as u64, 3);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
    dst.put_slice(payload);
}

/// Writes `bytes` to this connection's socket, under the table's lock.
fn send_own(table: &Table, socket: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let _guard = lock(table);
    (&*socket).write_all(bytes)
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one connection's frames until it ends, and fans its messages out.
fn serve(id: u64, mut socket: TcpStream, table: &Table) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut preface = [0u8; 24];
    socket.read_exact(&mut preface)?;
    if &preface != PREFACE {
        return Err(protocol_error("not an HTTP/2 client preface"));
    }
    // Our SETTINGS: the largest stream window; then the connection window
    // raised to the same, so a sender never waits on this program.
    let mut out = BytesMut::new();
    let mut settings = [0u8; 6];
    settings[..2].copy_from_slice(&INITIAL_WINDOW_SIZE.to_be_bytes());
    settings[2..].copy_from_slice(&MAX_WINDOW.to_be_bytes());
    put_frame(&mut out, SETTINGS, 0, 0, &settings);
    let raise = MAX_WINDOW - DEFAULT_WINDOW as u32;
    put_frame(&mut out, WINDOW_UPDATE, 0, 0, &raise.to_be_bytes());
    socket.write_all(&out)?;

    let writer = socket.try_clone()?;
    // The client's windows, kept here until the call starts, then in the table.
    let mut initial_window = DEFAULT_WINDOW;
    let (mut stream_window, mut conn_window) = (DEFAULT_WINDOW, DEFAULT_WINDOW);
    let mut joined = false;
    let mut decoder = Decoder::new(Encoding::Identity);
    decoder.max_message_size(DEFAULT_MAX_RECV_MESSAGE_SIZE);
    let mut grpc = BytesMut::new();
    let mut payload = vec![0u8; MAX_FRAME];
    loop {
        let mut head = [0u8; 9];
        socket.read_exact(&mut head)?;
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = head;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        // "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame
        // exceeds the size defined in SETTINGS_MAX_FRAME_SIZE" (RFC 9113 §4.2).
        let Some(body) = payload.get_mut(..len).filter(|_| len <= MAX_FRAME) else {
            let mut goaway = BytesMut::new();
            put_frame(&mut goaway, GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0x6]);
            let _ = send_own(table, &writer, &goaway);
            return Err(protocol_error("frame larger than SETTINGS_MAX_FRAME_SIZE"));
        };
        socket.read_exact(body)?;
        let body = &*body;
        match kind {
            DATA if stream == 1 => {
                // The gRPC messages may span DATA frames: our own pure decoder
                // (src/framing) takes whole messages out as they complete.
                grpc.extend_from_slice(data_payload(flags, body)?);
                while let Some(message) = decoder.decode(&mut grpc).map_err(io::Error::other)? {
                    fan_out(id, &message, table);
                }
            }
            HEADERS if stream == 1 && !joined => {
                // `:status: 200` is entry 8 of HPACK's static table (RFC 7541
                // Appendix A), one byte; `content-type` (entry 31) is sent as a
                // literal without indexing, so the client's table stays empty.
                let mut block = vec![0x88, 0x0f, 0x10, 16];
                block.extend_from_slice(b"application/grpc");
                let mut frame = BytesMut::new();
                put_frame(&mut frame, HEADERS, END_HEADERS, 1, &block);
                let mut members = lock(table);
                (&writer).write_all(&frame)?;
                members.push(Member {
                    id,
                    socket: writer.try_clone()?,
                    stream_window,
                    conn_window,
                });
                joined = true;
            }
            SETTINGS if flags & ACK == 0 => {
                // Only the client's stream window matters here: it bounds what
                // we may send on stream 1.
                // A change applies to open streams as the difference between
                // the new and the old value (RFC 9113 §6.9.2).
                for setting in body.chunks_exact(6) {
                    if let [0, 4, v0, v1, v2, v3] = *setting {
                        let new = i64::from(u32::from_be_bytes([v0, v1, v2, v3]));
                        let delta = new - initial_window;
                        initial_window = new;
                        stream_window += delta;
                        if let Some(me) = lock(table).iter_mut().find(|m| m.id == id) {
                            me.stream_window += delta;
                        }
                    }
                }
                let mut ack = BytesMut::new();
                put_frame(&mut ack, SETTINGS, ACK, 0, &[]);
                send_own(table, &writer, &ack)?;
            }
            PING if flags & ACK == 0 => {
                let mut pong = BytesMut::new();
                put_frame(&mut pong, PING, ACK, 0, body);
                send_own(table, &writer, &pong)?;
            }
            WINDOW_UPDATE => {
                let [w0, w1, w2, w3] = *body else {
                    return Err(protocol_error("WINDOW_UPDATE of the wrong length"));
                };
                let increment = i64::from(u32::from_be_bytes([w0, w1, w2, w3]) & 0x7fff_ffff);
                let mut members = lock(table);
                let me = members.iter_mut().find(|m| m.id == id);
                let (stream_w, conn_w) = match me {
                    Some(me) => (&mut me.stream_window, &mut me.conn_window),
                    None => (&mut stream_window, &mut conn_window),
                };
                match stream {
                    0 => *conn_w += increment,
                    1 => *stream_w += increment,
                    _ => {}
                }
            }
            GOAWAY => return Ok(()),
            // Anything else (PRIORITY, RST_STREAM, CONTINUATION, more streams)
            // is outside what a benchmark client sends; it is skipped.
            _ => {}
        }
    }
}

/// The data of a DATA frame, without its padding (RFC 9113 §6.1).
fn data_payload(flags: u8, body: &[u8]) -> io::Result<&[u8]> {
    const PADDED: u8 = 0x8;
    if flags & PADDED == 0 {
        return Ok(body);
    }
    let (&pad, rest) = body
        .split_first()
        .ok_or_else(|| protocol_error("PADDED DATA frame without a Pad Length"))?;
    // "If the length of the padding is the length of the frame payload or
    // greater, the recipient MUST treat this as a connection error"
    // (RFC 9113 §6.1).
    rest.get(..rest.len().saturating_sub(usize::from(pad)))
        .filter(|_| usize::from(pad) <= rest.len())
        .ok_or_else(|| protocol_error("DATA padding longer than the frame"))
}

/// Writes `message` to every member but `from`, framed once for all of them
/// (one DATA frame, or several for a message bigger than a frame).
fn fan_out(from: u64, message: &[u8], table: &Table) {
    let mut frame = BytesMut::new();
    let mut grpc = BytesMut::new();
    if encode_message(message, None, usize::MAX, &mut grpc).is_err() {
        return;
    }
    for chunk in grpc.chunks(MAX_FRAME) {
        put_frame(&mut frame, DATA, 0, 1, chunk);
    }
    let cost = i64::try_from(grpc.len()).unwrap_or(i64::MAX);
    let mut members = lock(table);
    for member in members.iter_mut().filter(|m| m.id != from) {
        if member.stream_window.min(member.conn_window) < cost {
            eprintln!(
                "fanout_floor: member {} is out of window; message not sent",
                member.id
            );
            continue;
        }
        member.stream_window -= cost;
        member.conn_window -= cost;
        if let Err(err) = (&member.socket).write_all(&frame) {
            eprintln!("fanout_floor: member {}: {err}", member.id);
        }
    }
}
