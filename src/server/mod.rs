//! The gRPC server: accepts TCP connections, speaks HTTP/2 on each (via `h2`),
//! and hands every stream to the service that owns its `:path`.
//!
//! # Layout
//!
//! * `mod.rs` (this file) — [`Server`], the [`Service`] trait generated
//!   routers implement, and the accept loop (with the connection limit: the
//!   excess get GOAWAY).
//! * `builder.rs` — [`Builder`]: every setting, its documented default
//!   constant, the metrics registry and the wire trace a server is handed.
//! * `connection.rs` — one HTTP/2 connection: handshake with explicit
//!   settings, keepalive pings, idle timeout, graceful shutdown (GOAWAY).
//! * `state.rs` — what a connection's task, calls and transport share (the
//!   active-call count, the PING-flood flag, the logged-once flag).
//! * `transport.rs` — what HTTP/2 runs on: TCP or TLS, watched for PINGs.
//! * `ping_policy.rs` — which client PINGs are too many (pure).
//! * `call.rs` — one stream: request header checks (405, 415, path,
//!   `grpc-timeout`, `grpc-encoding`), the four call shapes, deadlines and
//!   cancellation.
//! * `sink.rs` — the response side of a stream: headers, flow-controlled
//!   messages, trailers (or trailers-only).
//! * `outbound.rs` — where a response goes: an `h2` stream, or a call
//!   served in process.
//! * `local.rs` — calls served in process ([`LocalConnection`]): the
//!   gRPC-Web gateway hands its calls to the same routers, limits and
//!   statuses without HTTP/2 in between.
//! * `pipe.rs` — the in-process response pipe such a call answers through
//!   ([`LocalResponse`], [`LocalEvent`]), flow-controlled like a stream.
//!
//! Only this module and `src/client` touch `h2`; they drive the pure
//! [`framing`](crate::framing) code over its streams.
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! use grpc_chat::server::{Server, shutdown_signal};
//! let server = Server::builder()
//!     // .add_service(MyServiceServer::new(MyImpl))
//!     .build();
//! server.serve(listener, shutdown_signal()).await
//! # }
//! ```

mod builder;
mod call;
mod connection;
mod local;
mod outbound;
mod ping_policy;
mod pipe;
mod sink;
mod state;
mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub(crate) use builder::Config;
pub use builder::{
    Builder, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEADER_TABLE_SIZE, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE, DEFAULT_INITIAL_STREAM_WINDOW_SIZE,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONCURRENT_RESET_STREAMS,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS, DEFAULT_MAX_SEND_BUFFER_SIZE,
    DEFAULT_RESET_STREAM_DURATION, DEFAULT_SHUTDOWN_GRACE,
};
pub use call::{ServerCall, bidi_streaming, client_streaming, server_streaming, unary};
pub use local::LocalConnection;
pub use ping_policy::{DEFAULT_MAX_PING_STRIKES, DEFAULT_MIN_PING_INTERVAL};
pub use pipe::{LocalEvent, LocalResponse};
pub use sink::ResponseSink;

/// The future that serves one call, as returned by [`Service::call`].
pub type Dispatch = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Default listen backlog for [`bind`]: connections the kernel completes and
/// queues before the server accepts them. A join storm (thousands of clients
/// connecting at once, as after a restart) overflows a small queue — 128 is
/// what `std` and `tokio` ask for — and then the kernel drops handshakes,
/// falls back to SYN cookies and, when a cookie fails, leaves a client that
/// believes it is connected to a server that never heard of it.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on `addr` with room for `backlog` connections
/// waiting to be accepted (the kernel caps it at `net.core.somaxconn`).
/// `SO_REUSEADDR` is set, as `tokio::net::TcpListener::bind` sets it.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Moves a value out of its box and frees the box at once. Generated routers
/// use it: inside an `async` block, `*boxed` moves the value out but frees
/// the box only when the block's future is dropped — for a chat member, at
/// the end of the call.
#[doc(hidden)]
#[allow(clippy::boxed_local)] // taking the box, and so freeing it, is the point
pub fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// A gRPC service: routes a method name to the code that serves it.
///
/// `build.rs` generates an implementation (`FooServer<T>`) for every service
/// in `proto/`; there is rarely a reason to write one by hand.
pub trait Service: Send + Sync + 'static {
    /// The fully qualified service name, e.g. `grpc.testing.TestService`.
    fn name(&self) -> &'static str;
    /// Serves `call` for `method` (the part of `:path` after the last `/`).
    /// Unknown methods answer with [`ServerCall::unimplemented_method`].
    fn call(&self, method: &str, call: ServerCall) -> Dispatch;
}

/// How many refused connections (over [`Builder::max_connections`]) may be
/// waiting for their GOAWAY at once; beyond this, a refused connection is
/// closed without one. Telling a peer politely is worth a little work, but
/// not an unbounded amount during a flood.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection gets to complete the handshake and read
/// its GOAWAY.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A gRPC server over HTTP/2. Build it with [`Server::builder`].
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// What every connection task shares.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) services: HashMap<&'static str, Arc<dyn Service>>,
}

impl Server {
    /// A builder with the documented defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Accepts connections on `listener` until `shutdown` completes, then shuts
    /// down gracefully: every connection gets GOAWAY, in-flight calls have
    /// [`Builder::shutdown_grace`] to finish, then the remaining connections are
    /// closed and this returns.
    ///
    /// The listener is bound by the caller, so tests can bind `127.0.0.1:0`
    /// and read the port before serving.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        // One permit per connection served; a connection task holds its
        // permit until it ends.
        let max_connections = self
            .inner
            .config
            .max_connections
            .min(Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        // Connections refused since the limit was last reached (`None`: not
        // at the limit). Logged when the limit is reached and when the
        // server is below it again, not once per connection.
        let mut refused_since_full: Option<u64> = None;
        tokio::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving gRPC");
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        // gRPC messages are small and latency matters more than
                        // packet count: do not let Nagle hold them back.
                        if let Err(e) = socket.set_nodelay(true) {
                            debug!(%peer, error = %e, "set_nodelay failed");
                        }
                        let inner = Arc::clone(&self.inner);
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            let refused = refused_since_full.get_or_insert(0);
                            if *refused == 0 {
                                warn!(
                                    limit = inner.config.max_connections,
                                    %peer,
                                    "connection limit reached: refusing new connections with GOAWAY"
                                );
                            }
                            *refused += 1;
                            refuse(socket, peer, inner, &refusals);
                            continue;
                        };
                        if let Some(refused) = refused_since_full.take() {
                            info!(refused, "below the connection limit again");
                        }
                        // Spawned as it is, not wrapped in another `async`
                        // block: a wrapper would store the arguments (or the
                        // whole future, moved into its `.await`) a second
                        // time, for the connection's life. The slot goes
                        // with it and is freed when the connection ends.
                        connections.spawn(connection::serve(
                            socket,
                            peer,
                            inner,
                            stop_rx.clone(),
                            slot,
                        ));
                    }
                    Err(e) => {
                        // Running out of file descriptors is the usual cause;
                        // back off briefly instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connection tasks so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        info!(
            connections = connections.len(),
            "shutting down: sending GOAWAY"
        );
        let _ = stop_tx.send(true);
        // Each connection enforces the grace period itself; the extra second
        // covers the final flush.
        let grace = self.inner.config.shutdown_grace + Duration::from_secs(1);
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = connections.len(),
                "grace period over: closing remaining connections"
            );
            connections.shutdown().await;
        }
        info!("server stopped");
        Ok(())
    }
}

/// Tells a connection over [`Builder::max_connections`] to go away: the
/// HTTP/2 handshake, then GOAWAY(`NO_ERROR`, last stream 0), in a task of its
/// own bounded in time. While [`MAX_REFUSALS_IN_FLIGHT`] such tasks run, the
/// socket is just closed.
fn refuse(socket: TcpStream, peer: SocketAddr, inner: Arc<Inner>, refusals: &Arc<Semaphore>) {
    // Over TLS a GOAWAY could only be read after a full TLS handshake: that
    // costs the server real CPU for a connection it is refusing anyway, which
    // is what a flood would want. So a TLS client is simply closed on (it sees
    // `UNAVAILABLE` just the same).
    if inner.config.tls.is_some() {
        debug!(%peer, "over the connection limit: TLS connection closed without GOAWAY");
        return;
    }
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        debug!(%peer, "over the connection limit: closed without GOAWAY");
        return;
    };
    tokio::spawn(async move {
        let refused = async {
            let mut conn = connection::h2_builder(&inner.config)
                .handshake::<_, Bytes>(socket)
                .await?;
            conn.abrupt_shutdown(h2::Reason::NO_ERROR);
            // Polling drives the GOAWAY out; streams the peer opened
            // meanwhile are refused with it.
            while let Some(stream) = conn.accept().await {
                stream?;
            }
            Ok::<(), h2::Error>(())
        };
        match tokio::time::timeout(REFUSAL_TIMEOUT, refused).await {
            Ok(Ok(())) => debug!(%peer, "over the connection limit: GOAWAY sent"),
            Ok(Err(e)) => debug!(%peer, error = %e, "over the connection limit: closed"),
            Err(_) => debug!(%peer, "over the connection limit: closed after timeout"),
        }
        drop(permit);
    });
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: the usual `shutdown` argument of
/// [`Server::serve`] for a binary.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
