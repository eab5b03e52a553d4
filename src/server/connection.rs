//! One HTTP/2 connection on the server side.
//!
//! `h2` does the HTTP/2 framing, HPACK and flow control; this file decides the
//! connection's life:
//!
//! ```text
//!   TCP accepted ──handshake (preface + SETTINGS, bounded in time)──▶ serving
//!   serving: accept streams → spawn one task per call
//!            PING every keepalive interval; no PONG in time → close
//!            no stream for the idle timeout → GOAWAY
//!   shutdown signal → GOAWAY (graceful) → streams finish → closed
//!                                       └ grace period over → closed anyway
//! ```
//!
//! Polling `accept` is also what drives the connection's I/O, so the loop
//! below keeps polling it even while draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::{Inner, call};

/// Serves the connection `socket` until it closes or the server shuts down.
pub(crate) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    server: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &server.config;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_list_size)
        .initial_window_size(config.initial_stream_window_size)
        .initial_connection_window_size(config.initial_connection_window_size)
        .max_frame_size(config.max_frame_size)
        .max_send_buffer_size(config.max_send_buffer_size)
        // Bound what a peer can make us hold: streams it resets before we
        // accept them (the "rapid reset" attack), and streams we had to reset.
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(Some(1024));

    let socket = crate::wire_trace::tap(socket, crate::wire_trace::Side::Server, peer);
    let handshake = builder.handshake::<_, Bytes>(socket);
    let mut conn = match timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            info!(%peer, "HTTP/2 handshake timed out: closing");
            return;
        }
    };
    debug!(%peer, "connection open");
    let _counted = crate::metrics::METRICS.connection_opened();

    // Streams currently being served, to tell an idle connection.
    let active = Arc::new(AtomicUsize::new(0));
    let mut ping_pong = conn.ping_pong();
    let keepalive = async {
        let (Some(interval), Some(pinger)) = (config.keepalive_interval, ping_pong.as_mut()) else {
            return std::future::pending::<&'static str>().await;
        };
        loop {
            sleep(interval).await;
            match timeout(config.keepalive_timeout, pinger.ping(h2::Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                Ok(Err(_)) => return "connection error during keepalive",
                Err(_) => return "keepalive PING not acknowledged in time",
            }
        }
    };
    tokio::pin!(keepalive);

    let idle_check = config.idle_timeout.map(|t| t.min(Duration::from_secs(1)));
    let mut idle_since = Some(Instant::now());
    let mut grace_deadline: Option<Instant> = None;
    let far_future = Instant::now() + Duration::from_secs(86400 * 365);

    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    active.fetch_add(1, Ordering::Relaxed);
                    idle_since = None;
                    let guard = ActiveGuard(Arc::clone(&active));
                    let server = Arc::clone(&server);
                    tokio::spawn(async move {
                        call::serve_stream(request, respond, server, peer).await;
                        drop(guard);
                    });
                }
                Some(Err(e)) => {
                    if e.is_io() || e.is_go_away() {
                        debug!(%peer, error = %e, "connection ended");
                    } else {
                        warn!(%peer, error = %e, "HTTP/2 connection error");
                    }
                    break;
                }
                None => break,
            },
            changed = stop.changed(), if grace_deadline.is_none() => {
                // Either the server is shutting down or it dropped the sender
                // (gone): both mean drain.
                let _ = changed;
                debug!(%peer, "draining: GOAWAY");
                conn.graceful_shutdown();
                grace_deadline = Some(Instant::now() + config.shutdown_grace);
            }
            () = sleep_until(grace_deadline.unwrap_or(far_future)), if grace_deadline.is_some() => {
                info!(%peer, "grace period over: closing connection with calls in flight");
                break;
            }
            reason = &mut keepalive => {
                info!(%peer, reason, "closing connection");
                break;
            }
            () = sleep(idle_check.unwrap_or(Duration::from_secs(3600))), if idle_check.is_some() => {
                let now = Instant::now();
                if active.load(Ordering::Relaxed) > 0 {
                    idle_since = None;
                } else if let (Some(since), Some(limit)) = (idle_since, config.idle_timeout) {
                    if now.duration_since(since) >= limit && grace_deadline.is_none() {
                        debug!(%peer, "idle timeout: GOAWAY");
                        conn.graceful_shutdown();
                        grace_deadline = Some(now + config.shutdown_grace);
                    }
                } else {
                    idle_since = Some(now);
                }
            }
        }
    }
    debug!(%peer, "connection closed");
}

/// Counts a stream as active while its task runs.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
