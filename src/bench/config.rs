//! What a run is asked to do: [`Config`] with its documented defaults, the
//! [`Protocol`] its members speak, and why a run cannot be made ([`Error`]).

use std::fmt;
use std::time::Duration;

/// Default for [`Config::clients`].
pub const DEFAULT_CLIENTS: usize = 100;
/// Default for [`Config::senders`].
pub const DEFAULT_SENDERS: usize = 10;
/// Default for [`Config::messages`].
pub const DEFAULT_MESSAGES: usize = 1000;
/// Default for [`Config::payload`]: bytes of message text.
pub const DEFAULT_PAYLOAD: usize = 64;
/// Default for [`Config::drain`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(3);
/// Default for [`Config::warmup`].
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(20);
/// Default for [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Config::stream_window`]: 2 MiB, what tonic's client (and
/// so `chatload`) advertises, rather than our client's own default, so the
/// two tools put the same flow-control pressure on a server.
pub const DEFAULT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Default for [`Config::conn_window`]: 5 MiB, tonic's client default.
pub const DEFAULT_CONN_WINDOW: u32 = 5 * 1024 * 1024;
/// Default for [`Config::stall_window`]: HTTP/2's initial stream window
/// (RFC 9113 section 6.9.2). With 2 MiB a stalled member would absorb some
/// 25,000 small messages before the server's sends to it blocked: more
/// than most runs send.
pub const DEFAULT_STALL_WINDOW: u32 = 65_535;
/// How long to wait for one connection (TCP and the HTTP/2 handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which RPC of `chat.ChatService` the members use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `ChatStream`: `ChatMessage` both ways; the first message binds the name.
    ChatStream,
    /// `Chat`: typed events; the first is `USER_JOINED`.
    Chat,
}

impl Protocol {
    /// The name on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::ChatStream => "chat-stream",
            Protocol::Chat => "chat",
        }
    }
}

/// What to run. [`Config::new`] fills in the defaults.
///
/// With several servers and rooms, members are spread round-robin over
/// both: member `i` is in room `i % rooms`, and its connection (`i % conns`)
/// goes to server `(i % conns) % addrs.len()`. The first two members of
/// each room probe during the warm-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The servers, `host:port` each (several servers sharing one Redis are
    /// one chat). At least one.
    pub addrs: Vec<String>,
    /// Rooms the members are spread over (named `bench-0`, `bench-1`, …;
    /// with 1, the server's default room).
    pub rooms: usize,
    /// Members (C).
    pub clients: usize,
    /// Members that send (S), members `0..S`.
    pub senders: usize,
    /// Messages each sender sends (M).
    pub messages: usize,
    /// Bytes of message text (the marker, padded).
    pub payload: usize,
    /// Messages per second per sender; 0 sends as fast as the server takes them.
    pub rate: f64,
    /// Which RPC to use.
    pub protocol: Protocol,
    /// HTTP/2 connections, shared round-robin; 0 means one per member.
    pub conns: usize,
    /// Members (the last N) that stop reading after the warm-up.
    pub stall: usize,
    /// Stream window of the stalled members' connections.
    pub stall_window: u32,
    /// Stream window of the other connections.
    pub stream_window: u32,
    /// Connection window of every connection.
    pub conn_window: u32,
    /// End the run when nothing arrived for this long after the last send.
    pub drain: Duration,
    /// Longest warm-up barrier.
    pub warmup: Duration,
    /// The whole run ends by this, whatever the server does.
    pub timeout: Duration,
    /// The server's process, for its CPU time and memory (same machine).
    pub server_pid: Option<u32>,
    /// Members are named `{name_prefix}{index}`.
    pub name_prefix: String,
    /// Free text naming the run in the report.
    pub label: String,
}

impl Config {
    /// The defaults, against `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Config {
            addrs: vec![addr.into()],
            rooms: 1,
            clients: DEFAULT_CLIENTS,
            senders: DEFAULT_SENDERS,
            messages: DEFAULT_MESSAGES,
            payload: DEFAULT_PAYLOAD,
            rate: 0.0,
            protocol: Protocol::ChatStream,
            conns: 0,
            stall: 0,
            stall_window: DEFAULT_STALL_WINDOW,
            stream_window: DEFAULT_STREAM_WINDOW,
            conn_window: DEFAULT_CONN_WINDOW,
            drain: DEFAULT_DRAIN,
            warmup: DEFAULT_WARMUP,
            timeout: DEFAULT_TIMEOUT,
            server_pid: None,
            name_prefix: "cb".into(),
            label: String::new(),
        }
    }

    /// Connections actually used.
    pub(super) fn conns(&self) -> usize {
        if self.conns == 0 || self.conns > self.clients {
            self.clients
        } else {
            self.conns
        }
    }

    /// The room member `member` is in (0-based).
    pub(super) fn room_of(&self, member: usize) -> usize {
        member % self.rooms
    }

    /// The name of room `room` for the `chat-room` metadata; `None` with a
    /// single room (the server's default room, so a server without rooms
    /// can be measured too).
    pub(super) fn room_name(&self, room: usize) -> Option<String> {
        (self.rooms > 1).then(|| format!("bench-{room}"))
    }

    /// The server connection `conn` goes to (an index into `addrs`).
    pub(super) fn server_of_conn(&self, conn: usize) -> usize {
        conn % self.addrs.len()
    }

    /// The server member `member` talks to.
    pub(super) fn server_of(&self, member: usize) -> usize {
        self.server_of_conn(member % self.conns())
    }

    /// Members that read (all but the stalled ones, which are the last).
    pub(super) fn readers(&self) -> usize {
        self.clients - self.stall
    }

    /// Deliveries expected per room: each measured message by every member
    /// of its sender's room that reads, but its sender.
    pub(super) fn expected_per_room(&self) -> Vec<u64> {
        let mut readers = vec![0u64; self.rooms];
        for member in 0..self.readers() {
            readers[self.room_of(member)] += 1;
        }
        let mut expected = vec![0u64; self.rooms];
        for sender in 0..self.senders {
            let room = self.room_of(sender);
            expected[room] += self.messages as u64 * readers[room].saturating_sub(1);
        }
        expected
    }

    /// Checks the combination of settings.
    pub(super) fn validate(&self) -> Result<(), Error> {
        let invalid = |why: &str| Err(Error::Config(why.to_owned()));
        if self.addrs.is_empty() {
            return invalid("need at least one server address");
        }
        if self.rooms == 0 {
            return invalid("need at least one room");
        }
        if self.clients < 2 {
            return invalid("need at least 2 clients (two of them probe during the warm-up)");
        }
        if self.clients.saturating_sub(self.stall) < 2 * self.rooms {
            return invalid(
                "each room needs two members that read (they probe during the warm-up):                  need clients - stall >= 2 * rooms",
            );
        }
        if self.senders == 0 || self.senders > self.clients || self.messages == 0 {
            return invalid("need 1 <= senders <= clients and messages >= 1");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return invalid("rate must be a number >= 0");
        }
        if self.stall > 0 {
            if self.senders + self.stall > self.clients || self.stall + 2 > self.clients {
                return invalid(
                    "stalled members only receive: need senders + stall <= clients, \
                     and at least 2 members that read",
                );
            }
            if self.conns() != self.clients {
                return invalid(
                    "stall needs one connection per member: the stalled members' small \
                     stream window is a setting of their connections",
                );
            }
        }
        Ok(())
    }
}

/// Why a run could not be made.
#[derive(Debug)]
pub enum Error {
    /// The settings do not fit together.
    Config(String),
    /// The machine cannot hold the connections.
    Resources(String),
    /// A connection to the server could not be made.
    Connect(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(why) => write!(f, "invalid settings: {why}"),
            Error::Resources(why) | Error::Connect(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}
