//! One HTTP/2 connection on the server side.
//!
//! `h2` does the HTTP/2 framing, HPACK and flow control; this file decides the
//! connection's life:
//!
//! ```text
//!   TCP accepted ──handshake (TLS if configured, then preface + SETTINGS,
//!                  all bounded in time)──▶ serving
//!   serving: accept streams → spawn one task per call
//!            PING every keepalive interval; no PONG in time → close
//!            no stream for the idle timeout → GOAWAY
//!            client PINGs too often → GOAWAY(ENHANCE_YOUR_CALM) → closed
//!   shutdown signal → GOAWAY (graceful) → streams finish → closed
//!                                       └ grace period over → closed anyway
//! ```
//!
//! Polling `accept` is also what drives the connection's I/O, so the loop
//! below keeps polling it even while draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use h2::server::Connection;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::ping_policy::PingPolicy;
use super::state::ConnectionState;
use super::transport::{Transport, Watched};
use super::{Config, Inner, call};
use crate::wire_trace::{Side, Tap};

/// How long a connection told to calm down has to take its GOAWAY before it
/// is dropped.
const CALM_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// TLS (when configured), then the HTTP/2 handshake over the watched
/// transport. The error is a description for the log.
async fn open(
    socket: TcpStream,
    peer: SocketAddr,
    config: &Config,
    state: &Arc<ConnectionState>,
) -> Result<Connection<Watched, Bytes>, String> {
    let transport = match &config.tls {
        None => Transport::Plain(socket),
        Some(tls) => {
            let stream = tokio_rustls::TlsAcceptor::from(Arc::clone(tls))
                .accept(socket)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            // We offer only "h2", so a client that negotiated anything got
            // "h2"; one that offered no ALPN at all is trusted to speak
            // HTTP/2 with prior knowledge, and the preface check below
            // catches it if not.
            if stream.get_ref().1.alpn_protocol().is_none() {
                debug!(%peer, "TLS client offered no ALPN: expecting HTTP/2 anyway");
            }
            Transport::Tls(Box::new(stream))
        }
    };
    let policy = PingPolicy::new(config.min_ping_interval, config.max_ping_strikes);
    // The wire trace sees the bytes after TLS and before the watch: HTTP/2
    // frames as the client sent them (the watch joins runs of DATA frames
    // on their way to h2; see `http2::coalesce`).
    let io = Tap::new(transport, Side::Server, peer, config.wire_trace.as_ref());
    let io = Watched::new(io, policy, Arc::clone(state), peer);
    // Made here, not by the caller: whatever `serve` keeps in scope stays in
    // its future for the connection's whole life, and the builder is only
    // needed for the handshake.
    h2_builder(config)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))
}

/// The `h2` server settings of every connection, each one set explicitly
/// from [`Config`] rather than left to `h2`'s defaults, which may change
/// between versions: what a peer may make us hold is our decision.
pub(crate) fn h2_builder(config: &Config) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        // Streams (calls) the peer may have open at once; HEADERS for one
        // more are answered with RST_STREAM(REFUSED_STREAM).
        .max_concurrent_streams(config.max_concurrent_streams)
        // The largest header block we decode. A bigger one is answered with
        // 431; one that keeps growing over CONTINUATION frames ends the
        // connection (h2 counts both bytes and frames: the "CONTINUATION
        // flood" cannot make us buffer without bound).
        .max_header_list_size(config.max_header_list_size)
        .header_table_size(config.header_table_size)
        .initial_window_size(config.initial_stream_window_size)
        .initial_connection_window_size(config.initial_connection_window_size)
        // Small DATA frames are legal however small: see `http2::pace`.
        .data_frame_budget(config.data_frame_budget.unwrap_or_else(|| {
            crate::http2::data_frame_budget(config.initial_connection_window_size)
        }))
        .max_frame_size(config.max_frame_size)
        .max_send_buffer_size(config.max_send_buffer_size)
        // Bound what a peer can make us hold: streams it resets before we
        // accept them (the "rapid reset" attack), streams we had to reset
        // because of its errors, and the memory of recently reset streams.
        .max_pending_accept_reset_streams(config.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(config.max_local_error_reset_streams))
        .max_concurrent_reset_streams(config.max_concurrent_reset_streams)
        .reset_stream_duration(config.reset_stream_duration);
    builder
}

/// What the connection's `accept` branch found: a stream (or the end), or
/// the transport's word that the peer broke the PING policy.
enum Next<T> {
    Stream(T),
    Calm,
}

/// Serves the connection `socket` until it closes or the server shuts down.
///
/// Not an `async fn`: an `async fn` copies its arguments into its future's
/// locals and keeps the originals too, and this future lives as long as the
/// connection — every idle chat member pays for each byte of it.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    server: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        // Held until the connection ends: it counts against `max_connections`.
        // (Borrowed, not moved: moving it would store it twice.)
        let _held = &slot;
        let config = &server.config;
        // Fired by the transport when the client breaks the PING policy.
        let state = Arc::new(ConnectionState::default());
        // One deadline covers TLS and HTTP/2 together: a peer that stalls in
        // either holds nothing for longer than the handshake timeout.
        let handshake = open(socket, peer, config, &state);
        let mut conn = match timeout(config.handshake_timeout, handshake).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                // Only this connection is affected; it is closed by dropping it.
                info!(%peer, error = %e, "handshake failed: closing");
                return;
            }
            Err(_) => {
                info!(%peer, "handshake timed out: closing");
                return;
            }
        };
        debug!(%peer, "connection open");
        let _counted = config.metrics.connection_opened();

        // Keepalive: a PING `keepalive_interval` after the last answer,
        // answered within `keepalive_timeout` or the connection is closed —
        // how a peer that vanished without a FIN (killed, unplugged) is found.
        // Driven by the connection's one timer (below): `ping_due` while
        // waiting to send, `pong_by` while waiting for the answer.
        let mut pinger = config.keepalive_interval.and(conn.ping_pong());
        let mut ping_due = config
            .keepalive_interval
            .filter(|_| pinger.is_some())
            .map(|interval| Instant::now() + interval);
        let mut pong_by: Option<Instant> = None;

        let idle_check = config.idle_timeout.map(|t| t.min(Duration::from_secs(1)));
        let mut idle_since = Some(Instant::now());
        let mut grace_deadline: Option<Instant> = None;
        let mut calmed = false;
        let far_future = Instant::now() + Duration::from_secs(86400 * 365);
        // One timer serves the idle check, the keepalive and the end of a
        // grace period, reset to whichever comes first: every connection
        // carries its timers for its whole life (memory per idle member), and
        // re-arming one costs less than making new ones on every event.
        let first_check = idle_check.map_or(far_future, |c| Instant::now() + c);
        let timer = sleep_until(ping_due.map_or(first_check, |due| due.min(first_check)));
        tokio::pin!(timer);

        loop {
            tokio::select! {
                // Polling `accept` drives the connection's I/O, and with it
                // the transport, which raises the PING-policy flag as it
                // reads: so the flag is checked right there, and needs no
                // waker of its own. (Only when no stream is ready: a ready
                // one is taken first, and the next pass looks again.)
                next = std::future::poll_fn(|cx| {
                    let polled = conn.poll_accept(cx);
                    if polled.is_pending() && !calmed && state.calmed() {
                        return Poll::Ready(Next::Calm);
                    }
                    polled.map(Next::Stream)
                }) => match next {
                    Next::Stream(Some(Ok((request, respond)))) => {
                        idle_since = None;
                        // The headers are checked here; the task holds only the
                        // call itself, which counts as active until it ends.
                        if let Some(dispatch) = call::serve_stream(
                            request,
                            respond,
                            &server,
                            peer,
                            state.call_started(),
                        ) {
                            tokio::spawn(dispatch);
                        }
                    }
                    Next::Stream(Some(Err(e))) => {
                        if e.is_go_away() && !e.is_remote() && e.reason() != Some(h2::Reason::NO_ERROR) {
                            // We sent the GOAWAY: the peer broke a rule (a
                            // CONTINUATION flood, rapid resets, a malformed
                            // frame). Once per connection, since this ends it.
                            warn!(%peer, error = %e, "closed the connection: HTTP/2 protocol violation");
                        } else if e.is_io() || e.is_go_away() {
                            debug!(%peer, error = %e, "connection ended");
                        } else {
                            warn!(%peer, error = %e, "HTTP/2 connection error");
                        }
                        break;
                    }
                    Next::Stream(None) => break,
                    Next::Calm => {
                        // h2 answers PINGs itself; the transport counted them
                        // and found too many. GOAWAY(ENHANCE_YOUR_CALM) ends
                        // every stream at once; the connection closes once it
                        // is written.
                        calmed = true;
                        conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                        let close_by = Instant::now() + CALM_CLOSE_TIMEOUT;
                        grace_deadline = Some(grace_deadline.map_or(close_by, |d| d.min(close_by)));
                        let first = close_by.min(timer.deadline());
                        timer.as_mut().reset(first);
                    }
                },
                changed = stop.changed(), if grace_deadline.is_none() => {
                    // Either the server is shutting down or it dropped the sender
                    // (gone): both mean drain.
                    let _ = changed;
                    debug!(%peer, "draining: GOAWAY");
                    conn.graceful_shutdown();
                    let end = Instant::now() + config.shutdown_grace;
                    grace_deadline = Some(end);
                    let first = end.min(timer.deadline());
                    timer.as_mut().reset(first);
                }
                pong = std::future::poll_fn(|cx| match pinger.as_mut() {
                    Some(pinger) => pinger.poll_pong(cx),
                    None => std::task::Poll::Pending,
                }), if pong_by.is_some() => {
                    if pong.is_err() {
                        info!(%peer, "connection error during keepalive: closing connection");
                        break;
                    }
                    pong_by = None;
                    ping_due = config.keepalive_interval.map(|interval| Instant::now() + interval);
                    if let Some(due) = ping_due {
                        let first = due.min(timer.deadline());
                        timer.as_mut().reset(first);
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if grace_deadline.is_some_and(|end| now >= end) {
                        info!(%peer, "grace period over: closing connection with calls in flight");
                        break;
                    }
                    if pong_by.is_some_and(|by| now >= by) {
                        info!(%peer, "keepalive PING not acknowledged in time: closing connection");
                        break;
                    }
                    if ping_due.is_some_and(|due| now >= due) {
                        if let Some(pinger) = pinger.as_mut() {
                            if pinger.send_ping(h2::Ping::opaque()).is_err() {
                                info!(%peer, "connection error during keepalive: closing connection");
                                break;
                            }
                            ping_due = None;
                            pong_by = Some(now + config.keepalive_timeout);
                        }
                    }
                    if state.has_calls() {
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
                    let next_check = idle_check.map_or(far_future, |c| now + c);
                    let next = [grace_deadline, ping_due, pong_by]
                        .into_iter()
                        .flatten()
                        .fold(next_check, Instant::min);
                    timer.as_mut().reset(next);
                }
            }
        }
        debug!(%peer, "connection closed");
    }
}
