//! The web front of `chat-server`: a gRPC-Web gateway and the chat page,
//! on their own HTTP/1.1 (and h2c) listener (`--web-addr`).
//!
//! ```text
//!   browser ──HTTP/1.1──▶ web::serve ──┬─ GET /, /app.js …   the page (assets.rs)
//!                                      ├─ OPTIONS            CORS preflight
//!                                      └─ POST application/grpc-web[-text]
//!                                            │ translate.rs: body (base64 in text mode)
//!                                            ▼
//!                          server::LocalConnection::call, in process:
//!                          the native server's routers, limits, statuses
//! ```
//!
//! The gateway does not implement calls itself: it hands each gRPC-Web
//! request, as the native call it stands for, to the [`Server`] it was
//! built with — in process, no HTTP/2 and no socket in between (see
//! `server/local.rs`) — and turns the native response back into gRPC-Web
//! (messages unchanged, trailers moved into the body as a `0x80` frame, see
//! [`framing::grpc_web`](crate::framing::grpc_web)). So routing, services,
//! deadlines, limits and error statuses are the native ones by
//! construction, and a fix there is a fix here.
//!
//! Browsers reach it over HTTP/1.1; other gRPC-Web clients may use HTTP/2
//! (h2c, or TLS with [`Builder::tls`]), where request bodies stream and
//! calls can be full-duplex (see `translate.rs`).
//!
//! Each browser connection is one [`LocalConnection`] to the server, so a
//! misbehaving browser is logged once per connection, as a native client
//! is.

mod assets;
mod translate;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::framing::grpc_web::WebContentType;
use crate::server::{LocalConnection, Server};

/// Default for [`Builder::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default for [`Builder::max_connections`]: as many as the native server
/// takes ([`server::DEFAULT_MAX_CONNECTIONS`](crate::server::DEFAULT_MAX_CONNECTIONS)).
pub const DEFAULT_MAX_CONNECTIONS: usize = crate::server::DEFAULT_MAX_CONNECTIONS;

/// How long a TLS client gets to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body type of every gateway response.
pub(crate) type ResponseBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Request headers a cross-origin gRPC-Web client may send: what gRPC-Web
/// clients add (`x-grpc-web`, `x-user-agent`, `grpc-timeout`), and the chat's
/// own metadata keys.
const ALLOWED_HEADERS: &str = "content-type, x-grpc-web, x-user-agent, grpc-timeout, \
                               authorization, chat-room, chat-last-id, chat-epoch";
/// Response headers a cross-origin client's script may read: without these
/// a browser hides the status of a trailers-only response from the page.
const EXPOSED_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, chat-epoch";

/// Builds a [`Gateway`].
#[derive(Clone)]
pub struct Builder {
    server: Server,
    shutdown_grace: Duration,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Browser connections served at once; more are closed as soon as they
    /// are accepted. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.max_connections = n;
        self
    }

    /// How long open calls get to finish once shutdown begins. Default
    /// [`DEFAULT_SHUTDOWN_GRACE`].
    pub fn shutdown_grace(&mut self, grace: Duration) -> &mut Self {
        self.shutdown_grace = grace;
        self
    }

    /// Serves browsers over TLS with `config`'s certificate instead of
    /// plaintext. The gateway speaks HTTP/1.1 and HTTP/2, so it offers both
    /// by ALPN (`h2`, then `http/1.1`), replacing the list in `config`: a
    /// browser's `fetch` over HTTPS negotiates one of them, and a TLS client
    /// that offers no ALPN at all gets HTTP/1.1.
    pub fn tls(&mut self, config: Arc<rustls::ServerConfig>) -> &mut Self {
        let mut config = rustls::ServerConfig::clone(&config);
        config.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec(), b"http/1.1".to_vec()];
        self.tls = Some(Arc::new(config));
        self
    }

    /// The gateway.
    pub fn build(&mut self) -> Gateway {
        Gateway {
            server: self.server.clone(),
            shutdown_grace: self.shutdown_grace,
            max_connections: self.max_connections,
            tls: self.tls.clone(),
        }
    }
}

/// The gRPC-Web gateway and page server.
#[derive(Clone)]
pub struct Gateway {
    /// Where calls go, in process.
    server: Server,
    shutdown_grace: Duration,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder for a gateway serving calls with `server`'s services, in
    /// process: `server` need not be serving anywhere (a clone of the one
    /// serving native clients shares its services, and so the chat's rooms).
    pub fn builder(server: Server) -> Builder {
        Builder {
            server,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }

    /// Serves browsers on `listener` until `shutdown` completes, then lets
    /// open calls finish for the grace period.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        // Logged when the limit is reached, then not again until there was
        // room once more: a flood gets one line, not one per connection.
        let mut at_limit = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of descriptors and the like: keep serving
                            // those already connected, try again shortly.
                            warn!(%error, "web: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        if !std::mem::replace(&mut at_limit, true) {
                            warn!(
                                limit = self.max_connections,
                                "web: connection limit reached; closing new connections"
                            );
                        }
                        drop(tcp);
                        continue;
                    };
                    at_limit = false;
                    let server = self.server.clone();
                    let stopped = stopped.clone();
                    let tls = self.tls.clone();
                    connections.spawn(async move {
                        let _ = tcp.set_nodelay(true);
                        match tls {
                            None => serve_connection(tcp, peer, &server, stopped).await,
                            Some(config) => {
                                // The handshake runs in the connection's own
                                // task, bounded like the wait for request
                                // headers, so a silent client holds only itself.
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(tls)) => serve_connection(tls, peer, &server, stopped).await,
                                    Ok(Err(error)) => debug!(%peer, %error, "web: TLS handshake failed"),
                                    Err(_) => debug!(%peer, "web: TLS handshake timed out"),
                                }
                            }
                        }
                        drop(slot);
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        info!("web: shutting down");
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("web: connections still open after the grace period: closing them");
            connections.shutdown().await;
        }
        Ok(())
    }
}

/// What one browser connection keeps: its in-process connection to the
/// server, and whether a refusal was logged yet.
struct Browser {
    peer: SocketAddr,
    calls: LocalConnection,
    refusal_logged: AtomicBool,
}

impl Browser {
    fn new(peer: SocketAddr, server: &Server) -> Self {
        Browser {
            peer,
            calls: server.local_connection(peer),
            refusal_logged: AtomicBool::new(false),
        }
    }

    /// Logs a request refused for what the client sent: the first one of
    /// the connection at `info`, the rest at `debug`, so that a client
    /// repeating a bad request cannot flood the log.
    fn log_refusal(&self, why: &str) {
        if self.refusal_logged.swap(true, Ordering::Relaxed) {
            debug!(peer = %self.peer, why, "web: request refused");
        } else {
            info!(peer = %self.peer, why, "web: request refused (further refusals on this connection are not logged)");
        }
    }
}

/// Serves one browser connection (plain TCP or TLS) until it closes or
/// shutdown has let its last response finish.
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    server: &Server,
    mut stopped: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let browser = Arc::new(Browser::new(peer, server));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let browser = Arc::clone(&browser);
        async move { Ok::<_, std::convert::Infallible>(route(request, &browser).await) }
    });
    // HTTP/1.1 (what a page's fetch uses without TLS) or HTTP/2 with prior
    // knowledge (h2c: other gRPC-Web clients and proxies), told apart by the
    // first bytes.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // A slow or silent client must not hold a connection forever
        // before it has even sent its request headers.
        .header_read_timeout(Duration::from_secs(30));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = &mut connection => {
                if let Err(error) = done {
                    debug!(%peer, %error, "web: connection ended with an error");
                }
                return;
            }
            changed = stopped.changed(), if !stopping => {
                if changed.is_err() || *stopped.borrow() {
                    // Finish the response in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
    }
}

/// What the gateway answers: the page, a preflight, or a translated call.
async fn route(request: Request<Incoming>, browser: &Browser) -> Response<ResponseBody> {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(WebContentType::parse);
    let is_call = request.method() == Method::POST && matches!(content_type, Some(Ok(Some(_))));
    let request = if is_call {
        request
    } else {
        drain_body(request).await
    };
    let mut response = match (request.method(), content_type) {
        (&Method::OPTIONS, _) => preflight(),
        (&Method::POST, Some(Ok(Some(web)))) => translate::call(request, web, browser).await,
        (&Method::POST, Some(Err(error))) => {
            browser.log_refusal(&error.to_string());
            plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("{error}: only protobuf is supported\n"),
            )
        }
        (&Method::POST, _) => {
            browser.log_refusal("POST without a gRPC-Web content-type");
            plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected content-type application/grpc-web[+proto] or application/grpc-web-text[+proto]\n",
            )
        }
        (&Method::GET | &Method::HEAD, _) => assets::serve(request.uri().path()),
        _ => {
            browser.log_refusal("method not allowed");
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
    };
    add_cors(response.headers_mut(), origin);
    response
}

/// How much of a refused request's body is read (and dropped) before the
/// refusal is sent, and for how long at most.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and drops a small request body before it is refused.
///
/// Over HTTP/1.1 a server that answers without reading the body must close
/// the connection after the answer; the client, still writing its body
/// into a socket closed on it, then gets a connection reset ("broken pipe")
/// instead of the answer. Reading a small body first lets the refusal (405,
/// 415, the page's 404) arrive intact and the connection live on; a large
/// or slow one is not waited for.
async fn drain_body(request: Request<Incoming>) -> Request<Incoming> {
    let (parts, mut body) = request.into_parts();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        debug!("web: refused request's body not drained in time");
    }
    Request::from_parts(parts, body)
}

/// Lets a page from another origin call us.
///
/// The allowed origin echoes the caller's `Origin` (or `*` without one):
/// chat calls carry no cookies or ambient credentials — the session token
/// travels in the message — so there is nothing a foreign origin could
/// borrow.
fn add_cors(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.unwrap_or(HeaderValue::from_static("*")),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The answer to a CORS preflight (`OPTIONS`).
fn preflight() -> Response<ResponseBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

pub(crate) fn empty() -> ResponseBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A short plain-text answer.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
