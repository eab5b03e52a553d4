//! [`Builder`]: how a [`Server`] is configured. Every setting is a
//! `&mut self -> &mut Self` setter with a documented default constant
//! (`DEFAULT_…`); what a server counts into ([`Builder::metrics`]) and whether
//! it traces its connections ([`Builder::wire_trace`]) are handed in here too,
//! so nothing in `src/server` reaches for a global. The binaries map their
//! flags onto these setters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::ping_policy::{DEFAULT_MAX_PING_STRIKES, DEFAULT_MIN_PING_INTERVAL};
use super::{Inner, Server, Service};
use crate::framing::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
use crate::metrics::Metrics;
use crate::wire_trace::WireTrace;

/// Default for [`Builder::max_concurrent_streams`].
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default for [`Builder::max_header_list_size`]: 16 KiB of headers per request.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Default for [`Builder::initial_stream_window_size`]: 1 MiB, so a large
/// message does not wait for a WINDOW_UPDATE every 64 KiB.
pub const DEFAULT_INITIAL_STREAM_WINDOW_SIZE: u32 = 1024 * 1024;
/// Default for [`Builder::initial_connection_window_size`].
pub const DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE: u32 = 2 * 1024 * 1024;
/// Default for [`Builder::max_frame_size`]: the HTTP/2 minimum, 16 KiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Default for [`Builder::max_send_buffer_size`]: 32 KiB per stream.
pub const DEFAULT_MAX_SEND_BUFFER_SIZE: usize = 32 * 1024;
/// Default for [`Builder::header_table_size`]: 0, asking clients to keep no
/// HPACK dynamic table of the request headers they send us. Chat calls are
/// few and long-lived, so indexing their headers saves next to nothing on
/// the wire, while every entry would be held for the connection's life
/// (about 0.5 KiB per idle member, measured in docs/benchmarks.md §7).
/// Clients that honour it (grpc-go's and `h2`'s do) index nothing. `h2`
/// does not enforce it, though: a client that indexes anyway is still
/// decoded, with a table of at most 4,096 bytes (HTTP/2's default size,
/// which `h2`'s decoder keeps until the client announces a smaller one).
/// What we send is never indexed at all (see `sink::never_indexed`).
pub const DEFAULT_HEADER_TABLE_SIZE: u32 = 0;
/// Default for [`Builder::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default for [`Builder::keepalive_timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`Builder::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`Builder::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Builder::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default for [`Builder::max_connections`]: comfortably above the 10,000
/// members the server is sized for, and below the usual file-descriptor
/// limit of a service (`LimitNOFILE`), so the limit we chose is met before
/// the one the kernel imposes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16 * 1024;
/// Default for [`Builder::max_pending_accept_reset_streams`].
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 64;
/// Default for [`Builder::max_local_error_reset_streams`].
pub const DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Default for [`Builder::max_concurrent_reset_streams`].
pub const DEFAULT_MAX_CONCURRENT_RESET_STREAMS: usize = 50;
/// Default for [`Builder::reset_stream_duration`].
pub const DEFAULT_RESET_STREAM_DURATION: Duration = Duration::from_secs(1);

/// The default of [`Builder::metrics`]: counted into, never read. (The
/// counters are atomics, and a `&'static` keeps every connection's guard
/// free of reference counting.)
static DISCARDED_METRICS: Metrics = Metrics::new();

/// Everything a connection needs to know, shared by all of them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_header_list_size: u32,
    pub(crate) initial_stream_window_size: u32,
    pub(crate) initial_connection_window_size: u32,
    pub(crate) max_frame_size: u32,
    pub(crate) max_send_buffer_size: usize,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    pub(crate) min_ping_interval: Duration,
    pub(crate) max_ping_strikes: u32,
    pub(crate) header_table_size: u32,
    /// `None`: derived from the connection window
    /// ([`crate::http2::data_frame_budget`]).
    pub(crate) data_frame_budget: Option<usize>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) max_connections: usize,
    pub(crate) max_pending_accept_reset_streams: usize,
    pub(crate) max_local_error_reset_streams: usize,
    pub(crate) max_concurrent_reset_streams: usize,
    pub(crate) reset_stream_duration: Duration,
    /// Traces every frame of every connection; `None`: not traced.
    pub(crate) wire_trace: Option<WireTrace>,
    /// Where connections are counted.
    pub(crate) metrics: &'static Metrics,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            initial_stream_window_size: DEFAULT_INITIAL_STREAM_WINDOW_SIZE,
            initial_connection_window_size: DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_send_buffer_size: DEFAULT_MAX_SEND_BUFFER_SIZE,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
            min_ping_interval: DEFAULT_MIN_PING_INTERVAL,
            max_ping_strikes: DEFAULT_MAX_PING_STRIKES,
            header_table_size: DEFAULT_HEADER_TABLE_SIZE,
            data_frame_budget: None,
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
            max_concurrent_reset_streams: DEFAULT_MAX_CONCURRENT_RESET_STREAMS,
            reset_stream_duration: DEFAULT_RESET_STREAM_DURATION,
            wire_trace: None,
            metrics: &DISCARDED_METRICS,
        }
    }
}

/// Configures and builds a [`Server`].
#[derive(Default)]
pub struct Builder {
    config: Config,
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl Builder {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: calls one connection may have open at
    /// once. Default [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    pub fn max_concurrent_streams(&mut self, n: u32) -> &mut Self {
        self.config.max_concurrent_streams = n;
        self
    }

    /// SETTINGS_MAX_HEADER_LIST_SIZE: the largest request header block
    /// accepted. Default [`DEFAULT_MAX_HEADER_LIST_SIZE`].
    pub fn max_header_list_size(&mut self, n: u32) -> &mut Self {
        self.config.max_header_list_size = n;
        self
    }

    /// The flow-control window of each stream. Default
    /// [`DEFAULT_INITIAL_STREAM_WINDOW_SIZE`].
    pub fn initial_stream_window_size(&mut self, n: u32) -> &mut Self {
        self.config.initial_stream_window_size = n;
        self
    }

    /// The flow-control window of the whole connection. Default
    /// [`DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE`].
    pub fn initial_connection_window_size(&mut self, n: u32) -> &mut Self {
        self.config.initial_connection_window_size = n;
        self
    }

    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload accepted. Default
    /// [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn max_frame_size(&mut self, n: u32) -> &mut Self {
        self.config.max_frame_size = n;
        self
    }

    /// Bytes of response data one stream may have handed to HTTP/2 but not
    /// yet written to the socket. Beyond this, senders wait (see
    /// [`ResponseSink::send`](super::ResponseSink::send)): data waits in the application, where it may
    /// be shared between streams, rather than as a per-stream copy in the
    /// connection's queue. Default [`DEFAULT_MAX_SEND_BUFFER_SIZE`].
    pub fn max_send_buffer_size(&mut self, n: usize) -> &mut Self {
        self.config.max_send_buffer_size = n;
        self
    }

    /// How often an HTTP/2 PING checks that the peer is alive; `None` turns
    /// keepalive off. Default [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub fn keepalive_interval(&mut self, interval: Option<Duration>) -> &mut Self {
        self.config.keepalive_interval = interval;
        self
    }

    /// How long to wait for the PING's acknowledgement before closing the
    /// connection. Default [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub fn keepalive_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.config.keepalive_timeout = timeout;
        self
    }

    /// A connection without any open stream for this long is closed with
    /// GOAWAY; `None` keeps idle connections. Default [`DEFAULT_IDLE_TIMEOUT`].
    pub fn idle_timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// A connection that has not completed the HTTP/2 preface and SETTINGS
    /// exchange in this time is dropped. Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// After shutdown starts, how long in-flight calls may take to finish
    /// before their connections are closed. Default [`DEFAULT_SHUTDOWN_GRACE`].
    pub fn shutdown_grace(&mut self, grace: Duration) -> &mut Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// The largest message accepted from a client (after decompression).
    /// Default [`DEFAULT_MAX_RECV_MESSAGE_SIZE`] (4 MiB).
    pub fn max_recv_message_size(&mut self, n: usize) -> &mut Self {
        self.config.max_recv_message_size = n;
        self
    }

    /// The largest message the server will send. Default
    /// [`DEFAULT_MAX_SEND_MESSAGE_SIZE`].
    pub fn max_send_message_size(&mut self, n: usize) -> &mut Self {
        self.config.max_send_message_size = n;
        self
    }

    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table clients may use
    /// for the headers they send us (memory held per connection). Default
    /// [`DEFAULT_HEADER_TABLE_SIZE`]; HTTP/2's own default is 4096.
    pub fn header_table_size(&mut self, n: u32) -> &mut Self {
        self.config.header_table_size = n;
        self
    }

    /// How much framing overhead of small DATA frames a connection may make
    /// us hold unread before `h2` closes it with `GOAWAY(ENHANCE_YOUR_CALM)`
    /// (each frame under 256 bytes costs `256 - its length` until its call
    /// reads it). Default: twice the connection window
    /// ([`crate::http2::data_frame_budget`]; [`crate::http2::pace`] says
    /// why that serves peers that cut their data small, and what it bounds).
    pub fn data_frame_budget(&mut self, budget: usize) -> &mut Self {
        self.config.data_frame_budget = Some(budget);
        self
    }

    /// The permitted keepalive time: a client may PING at most this often.
    /// A PING sooner than this after the previous one, with no response data
    /// sent in between, is a strike; more than [`Builder::max_ping_strikes`]
    /// strikes close the connection with GOAWAY `ENHANCE_YOUR_CALM`. Default
    /// [`DEFAULT_MIN_PING_INTERVAL`].
    pub fn min_ping_interval(&mut self, interval: Duration) -> &mut Self {
        self.config.min_ping_interval = interval;
        self
    }

    /// Early PINGs forgiven before `ENHANCE_YOUR_CALM` (see
    /// [`Builder::min_ping_interval`]). Default [`DEFAULT_MAX_PING_STRIKES`].
    pub fn max_ping_strikes(&mut self, strikes: u32) -> &mut Self {
        self.config.max_ping_strikes = strikes;
        self
    }

    /// Serves TLS with `config` (see [`crate::tls::server_config`], which
    /// offers `h2` by ALPN) instead of plaintext. The TLS handshake counts
    /// towards [`Builder::handshake_timeout`]; a failed one closes that
    /// connection only.
    pub fn tls(&mut self, config: Arc<rustls::ServerConfig>) -> &mut Self {
        self.config.tls = Some(config);
        self
    }

    /// Connections served at once. A connection over the limit is accepted,
    /// given the HTTP/2 handshake and a GOAWAY (`NO_ERROR`, last stream 0:
    /// "nothing you sent was processed, try again later"), then closed — a
    /// gRPC client sees `UNAVAILABLE` and may retry, instead of hanging in
    /// the kernel's accept queue. Reaching the limit is logged once, and
    /// again with the number refused when the server is back below it.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.config.max_connections = n;
        self
    }

    /// Streams the peer may reset before this server accepted them, waiting
    /// in the accept queue; past this the connection is closed with GOAWAY
    /// `ENHANCE_YOUR_CALM`. This is the defence against the "rapid reset"
    /// attack (open a stream, reset it at once, repeat: each costs the server
    /// work but never counts against the concurrent-stream limit). Default
    /// [`DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS`].
    pub fn max_pending_accept_reset_streams(&mut self, n: usize) -> &mut Self {
        self.config.max_pending_accept_reset_streams = n;
        self
    }

    /// Streams this server may reset because of the peer's protocol errors
    /// before it closes the connection with GOAWAY `ENHANCE_YOUR_CALM` (the
    /// "made you reset" attack: malformed frames that each cost a reset).
    /// Default [`DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS`].
    pub fn max_local_error_reset_streams(&mut self, n: usize) -> &mut Self {
        self.config.max_local_error_reset_streams = n;
        self
    }

    /// Reset streams whose state is remembered (to tell late frames for them
    /// from protocol errors); the oldest is forgotten beyond this. Default
    /// [`DEFAULT_MAX_CONCURRENT_RESET_STREAMS`].
    pub fn max_concurrent_reset_streams(&mut self, n: usize) -> &mut Self {
        self.config.max_concurrent_reset_streams = n;
        self
    }

    /// How long a reset stream's state is remembered. Default
    /// [`DEFAULT_RESET_STREAM_DURATION`].
    pub fn reset_stream_duration(&mut self, duration: Duration) -> &mut Self {
        self.config.reset_stream_duration = duration;
        self
    }

    /// Traces every HTTP/2 frame of every connection, as `--trace-wire`
    /// does (see [`crate::wire_trace`]). Default: no trace.
    pub fn wire_trace(&mut self, trace: WireTrace) -> &mut Self {
        self.config.wire_trace = Some(trace);
        self
    }

    /// Counts connections (`chat_connections_total`,
    /// `chat_connections_open`) in `metrics`: the binaries pass the
    /// process's [`crate::metrics::METRICS`], which `--metrics-addr` serves.
    /// Default: a registry of the server's own that nobody reads, so a
    /// server built without this (a test, a library user) counts nothing
    /// anyone sees and touches no global.
    pub fn metrics(&mut self, metrics: &'static Metrics) -> &mut Self {
        self.config.metrics = metrics;
        self
    }

    /// Serves `service` under its [`Service::name`].
    pub fn add_service(&mut self, service: impl Service) -> &mut Self {
        self.services.insert(service.name(), Arc::new(service));
        self
    }

    /// The server, ready to [`Server::serve`].
    pub fn build(&mut self) -> Server {
        Server {
            inner: Arc::new(Inner {
                config: self.config.clone(),
                services: std::mem::take(&mut self.services),
            }),
        }
    }
}
