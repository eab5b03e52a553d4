//! The gRPC client: a [`Channel`] (one HTTP/2 connection, many concurrent
//! calls) and the four call shapes on top of it.
//!
//! # Layout
//!
//! * `mod.rs` (this file) — [`Channel`] and its [`Builder`]: connecting,
//!   reconnecting after failure, opening streams with the request headers.
//! * `call.rs` — the calls: [`unary`](Channel::unary),
//!   [`server_streaming`](Channel::server_streaming), [`ClientStreamingCall`],
//!   [`BidiCall`], with their deadlines.
//! * `request.rs` — [`RequestSink`]: request messages under flow control,
//!   half-close, cancel.
//! * `response.rs` — [`ResponseStream`]: response headers checked
//!   (trailers-only, HTTP status, content-type), messages, trailers →
//!   [`Status`].
//! * `stream_error.rs` — what an `h2` stream error means for the call's
//!   status (PROTOCOL-HTTP2.md's RST_STREAM table, the deadline's part).
//!
//! Generated clients (`FooClient`, see `build.rs`) wrap a `Channel` and call
//! these with the right path and types.
//!
//! Dropping a call before it ends sends RST_STREAM(CANCEL): `h2` does this
//! when the last handle on an open stream goes away, so the server stops
//! working on a call nobody waits for.

mod call;
mod request;
mod response;
mod stream_error;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::HeaderValue;
use tokio::net::TcpStream;
use tracing::debug;

pub use call::{BidiCall, ClientStreamingCall};
pub use request::RequestSink;
pub use response::ResponseStream;

use crate::framing::{
    ACCEPT_ENCODING, CONTENT_TYPE_GRPC, DEFAULT_MAX_RECV_MESSAGE_SIZE,
    DEFAULT_MAX_SEND_MESSAGE_SIZE, Encoding, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT,
    MetadataMap, Status, format_timeout,
};
use crate::wire_trace::{Side, Tap, WireTrace};

/// Default for [`Builder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`Builder::initial_stream_window_size`]: 1 MiB.
pub const DEFAULT_INITIAL_STREAM_WINDOW_SIZE: u32 = 1024 * 1024;
/// Default for [`Builder::initial_connection_window_size`]: 2 MiB.
pub const DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE: u32 = 2 * 1024 * 1024;
/// Keepalive interval for [`Builder::keepalive`] where nothing else is
/// wanted: 30 seconds, well above the server's default permitted PING rate
/// ([`server::DEFAULT_MIN_PING_INTERVAL`](crate::server::DEFAULT_MIN_PING_INTERVAL)).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default for the timeout of [`Builder::keepalive`]: 20 seconds.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The `user-agent` sent with every call.
pub const USER_AGENT: &str = concat!("grpc-chat-rust/", env!("CARGO_PKG_VERSION"));

/// Client settings, shared by every call of a channel.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) initial_stream_window_size: u32,
    pub(crate) initial_connection_window_size: u32,
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    /// PING interval and how long to wait for the ACK; `None`: no keepalive.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry, when not the host of
    /// the address.
    pub(crate) server_name: Option<String>,
    /// `:authority` of every call; `None` means the address.
    pub(crate) authority: Option<String>,
    /// Traces every frame of the connection; `None`: not traced.
    pub(crate) wire_trace: Option<WireTrace>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("wire_trace", &self.wire_trace)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Channel`].
#[derive(Debug, Clone)]
pub struct Builder {
    address: String,
    config: Config,
}

impl Builder {
    /// How long to wait for TCP connect plus the HTTP/2 handshake. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The flow-control window of each stream. Default
    /// [`DEFAULT_INITIAL_STREAM_WINDOW_SIZE`].
    pub fn initial_stream_window_size(&mut self, n: u32) -> &mut Self {
        self.config.initial_stream_window_size = n;
        self
    }

    /// The flow-control window of the connection. Default
    /// [`DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE`].
    pub fn initial_connection_window_size(&mut self, n: u32) -> &mut Self {
        self.config.initial_connection_window_size = n;
        self
    }

    /// The largest response message accepted. Default 4 MiB.
    pub fn max_recv_message_size(&mut self, n: usize) -> &mut Self {
        self.config.max_recv_message_size = n;
        self
    }

    /// The largest request message sent. Default unlimited.
    pub fn max_send_message_size(&mut self, n: usize) -> &mut Self {
        self.config.max_send_message_size = n;
        self
    }

    /// Sends an HTTP/2 PING every `interval` and drops the connection when
    /// one is not acknowledged within `timeout`, so a dead server or network
    /// path is noticed even while no call is sending. Off by default (as in
    /// other gRPC clients); servers limit how often a client may PING, so
    /// keep `interval` at or above theirs (ours allows one per
    /// [`server::DEFAULT_MIN_PING_INTERVAL`](crate::server::DEFAULT_MIN_PING_INTERVAL)).
    pub fn keepalive(&mut self, interval: Duration, timeout: Duration) -> &mut Self {
        self.config.keepalive = Some((interval, timeout));
        self
    }

    /// Connects with TLS using `config` (see [`crate::tls::client_config`],
    /// which offers `h2` by ALPN). The server's certificate must name the
    /// host of the address, or [`Builder::server_name`].
    pub fn tls(&mut self, config: Arc<rustls::ClientConfig>) -> &mut Self {
        self.config.tls = Some(config);
        self
    }

    /// With TLS: the name the server's certificate must carry, instead of
    /// the host of the address (grpc-go's `--server_host_override`).
    pub fn server_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.config.server_name = Some(name.into());
        self
    }

    /// The `:authority` sent with every call, instead of the address
    /// dialled: the name a virtual host or a proxy expects (and, in
    /// `tests/wire_doc.rs`, bytes that do not depend on the test's port).
    pub fn authority(&mut self, authority: impl Into<String>) -> &mut Self {
        self.config.authority = Some(authority.into());
        self
    }

    /// Traces every HTTP/2 frame the channel's connections carry, as
    /// `--trace-wire` does (see [`crate::wire_trace`]). Default: no trace.
    pub fn wire_trace(&mut self, trace: WireTrace) -> &mut Self {
        self.config.wire_trace = Some(trace);
        self
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(&self) -> Channel {
        Channel {
            inner: Arc::new(Inner {
                address: self.address.clone(),
                config: self.config.clone(),
                connection: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Connects now, so an unreachable server is reported here.
    pub async fn connect(&self) -> Result<Channel, Status> {
        let channel = self.connect_lazy();
        channel.sender().await?;
        Ok(channel)
    }
}

/// A connection to one server, shared by any number of concurrent calls.
///
/// Cloning is cheap: clones share the connection. If the connection breaks,
/// the next call dials again.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port`.
    address: String,
    config: Config,
    /// The live connection's request handle, if any.
    connection: tokio::sync::Mutex<Option<SendRequest<Bytes>>>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A builder for a channel to `address` (`host:port`).
    pub fn builder(address: impl Into<String>) -> Builder {
        Builder {
            address: address.into(),
            config: Config {
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                initial_stream_window_size: DEFAULT_INITIAL_STREAM_WINDOW_SIZE,
                initial_connection_window_size: DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE,
                max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
                max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
                keepalive: None,
                tls: None,
                server_name: None,
                authority: None,
                wire_trace: None,
            },
        }
    }

    /// Connects to `address` (`host:port`) with default settings.
    pub async fn connect(address: impl Into<String>) -> Result<Channel, Status> {
        Self::builder(address).connect().await
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A request handle on a live connection, dialling if there is none or the
    /// last one broke.
    async fn sender(&self) -> Result<SendRequest<Bytes>, Status> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(sender) = slot.as_ref() {
            match sender.clone().ready().await {
                Ok(ready) => return Ok(ready),
                Err(e) => {
                    debug!(address = %self.inner.address, error = %e, "connection lost: reconnecting");
                    *slot = None;
                }
            }
        }
        let sender = tokio::time::timeout(self.inner.config.connect_timeout, self.dial())
            .await
            .map_err(|_| {
                Status::unavailable(format!("timed out connecting to {}", self.inner.address))
            })??;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn dial(&self) -> Result<SendRequest<Bytes>, Status> {
        let address = &self.inner.address;
        let socket = TcpStream::connect(address.as_str())
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {address}: {e}")))?;
        let _ = socket.set_nodelay(true);
        let Some(tls) = &self.inner.config.tls else {
            return self.handshake(socket).await;
        };
        let name = match &self.inner.config.server_name {
            Some(name) => name.as_str(),
            None => host_of(address),
        };
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| Status::unavailable(format!("invalid TLS server name {name:?}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(server_name, socket)
            .await
            .map_err(|e| {
                Status::unavailable(format!("TLS handshake with {address} failed: {e}"))
            })?;
        // RFC 9113 §3.2: HTTP/2 over TLS is identified by ALPN "h2". A server
        // that chose something else would not understand our frames.
        match stream.get_ref().1.alpn_protocol() {
            Some(crate::tls::ALPN_H2) | None => {}
            Some(other) => {
                return Err(Status::unavailable(format!(
                    "{address} negotiated ALPN {:?}, not h2",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        self.handshake(stream).await
    }

    /// The HTTP/2 handshake over `io`, then the connection's driver task.
    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Bytes>, Status>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let address = &self.inner.address;
        // The wire trace sees the frames as the server sent them; above it,
        // runs of DATA frames are joined and reads paced on their way to h2,
        // so a server that cuts its responses small is read as fast as it
        // writes (see `http2::pace`).
        let io = Tap::new(
            io,
            Side::Client,
            address,
            self.inner.config.wire_trace.as_ref(),
        );
        let io = crate::http2::Paced::from_server(io);
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(self.inner.config.initial_stream_window_size)
            .initial_connection_window_size(self.inner.config.initial_connection_window_size)
            // A server may cut a response into DATA frames as small as it
            // likes (grpc's HTTP/2 tests use 5 bytes): see `http2::pace`.
            .data_frame_budget(crate::http2::data_frame_budget(
                self.inner.config.initial_connection_window_size,
            ))
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| {
                Status::unavailable(format!("HTTP/2 handshake with {address} failed: {e}"))
            })?;
        let keepalive = self.inner.config.keepalive;
        let pinger = keepalive.and_then(|_| connection.ping_pong());
        let address = address.clone();
        // The connection future does the socket I/O for every stream; it runs
        // until the connection closes, or a keepalive PING goes unanswered.
        tokio::spawn(async move {
            let alive = keep_alive(pinger, keepalive);
            tokio::select! {
                closed = &mut connection => {
                    if let Err(e) = closed {
                        debug!(%address, error = %e, "connection closed with error");
                    }
                }
                why = alive => {
                    // Dropping the connection fails every call on it, and the
                    // next call dials again.
                    debug!(%address, why, "closing connection");
                }
            }
        });
        sender.ready().await.map_err(|e| {
            Status::unavailable(format!("connection to {} failed: {e}", self.inner.address))
        })
    }

    /// Opens a stream for `path` and sends the request headers.
    pub(crate) async fn open(
        &self,
        path: &str,
        metadata: &MetadataMap,
        timeout: Option<Duration>,
        compression: Option<Encoding>,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), Status> {
        let scheme = if self.inner.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // `:authority` is the address dialled unless the builder set one.
        let authority = self.inner.config.authority.as_ref();
        let uri = format!(
            "{scheme}://{}{}",
            authority.unwrap_or(&self.inner.address),
            path
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_GRPC),
        );
        // PROTOCOL-HTTP2.md: "TE → "te" "trailers" # Used to detect incompatible
        // proxies" — a proxy that drops trailers would lose every status.
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        headers.insert(
            GRPC_ACCEPT_ENCODING,
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        if let Some(encoding) = compression.filter(|e| *e != Encoding::Identity) {
            headers.insert(GRPC_ENCODING, HeaderValue::from_static(encoding.as_str()));
        }
        if let Some(timeout) = timeout {
            if let Ok(value) = HeaderValue::from_str(&format_timeout(timeout)) {
                headers.insert(GRPC_TIMEOUT, value);
            }
        }
        metadata.write_headers(&mut headers);
        let request = || {
            let mut request = http::Request::post(uri.as_str())
                .body(())
                .map_err(|e| Status::internal(format!("invalid request for {path}: {e}")))?;
            *request.headers_mut() = headers.clone();
            Ok::<_, Status>(request)
        };

        let mut sender = self.sender().await?;
        match sender.send_request(request()?, false) {
            Ok(opened) => Ok(opened),
            Err(e) => {
                // The connection may have died between `ready` and now (a
                // GOAWAY, say): one more try on a fresh connection.
                debug!(error = %e, "send_request failed: retrying on a new connection");
                self.inner.connection.lock().await.take();
                let mut sender = self.sender().await?;
                sender
                    .send_request(request()?, false)
                    .map_err(|e| Status::unavailable(format!("cannot start call {path}: {e}")))
            }
        }
    }
}

/// PINGs every `interval`; returns why the connection should close when a
/// PING goes unanswered for `timeout`. Never returns without keepalive.
async fn keep_alive(
    pinger: Option<h2::PingPong>,
    keepalive: Option<(Duration, Duration)>,
) -> &'static str {
    let (Some(mut pinger), Some((interval, timeout))) = (pinger, keepalive) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pinger.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return "connection error during keepalive",
            Err(_) => return "keepalive PING not acknowledged in time",
        }
    }
}

/// The host part of `host:port` (`[::1]:443` → `::1`).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}
