//! Calls served in process: the gRPC-Web gateway's way to the service
//! router, without HTTP/2 or a socket in between.
//!
//! ```text
//!   gateway (src/web)                           server (this module, call.rs, sink.rs)
//!   LocalConnection::call(http::Request)  ───▶  call::serve: the same header checks,
//!     request body: a RecvBody                  routing, grpc-timeout, grpc-encoding,
//!                                               message limits as an HTTP/2 stream
//!   LocalResponse::poll_event  ◀─── Channel ◀─  sink.rs: headers, DATA, trailers
//!     Headers, Data…, Trailers | Reset          (or trailers-only), flow-controlled
//! ```
//!
//! A call arrives as an `http::Request` whose headers are what an HTTP/2
//! client would have sent, and its body as a [`RecvBody`]: from there on it
//! is served by the same code as a call from the network — the same
//! [`Service`](super::Service) routers, deadlines, limits and statuses, by
//! construction.
//!
//! The response comes back through a [`Channel`] that behaves like an
//! HTTP/2 stream's send side: the server may have at most
//! [`Builder::max_send_buffer_size`](super::Builder::max_send_buffer_size)
//! bytes of DATA queued and not yet taken by the gateway, and waits for
//! room beyond that, so a browser that stops reading makes its own call
//! wait (backpressure), as a native client's closed window does. When the
//! gateway drops the [`LocalResponse`] — the browser went away — the call
//! sees a reset (`CANCEL`) and its handler is dropped, as on RST_STREAM.

use std::net::SocketAddr;
use std::sync::Arc;

use super::outbound::Opening;
use super::pipe::{LocalResponse, pipe};
use super::state::ConnectionState;
use super::{Inner, Server, call};
use crate::rpc::RecvBody;

/// The client side of calls served in process, standing for one client
/// connection (a browser's connection to the gateway): refusals are logged
/// once per `LocalConnection`, as once per HTTP/2 connection.
pub struct LocalConnection {
    server: Arc<Inner>,
    state: Arc<ConnectionState>,
    peer: SocketAddr,
}

impl std::fmt::Debug for LocalConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A connection for calls served in process on behalf of the client at
    /// `peer` (see [`LocalConnection::call`]).
    pub fn local_connection(&self, peer: SocketAddr) -> LocalConnection {
        LocalConnection {
            server: Arc::clone(&self.inner),
            state: Arc::new(ConnectionState::default()),
            peer,
        }
    }
}

impl LocalConnection {
    /// Starts one call and returns its response. `request` carries what an
    /// HTTP/2 request would: method, `:path` in the URI, headers
    /// (`content-type: application/grpc…`, `grpc-timeout`, metadata), and
    /// its body of length-prefixed messages as a [`RecvBody`].
    ///
    /// The call runs in a task of its own, as a call from the network does;
    /// it ends with its status, or when the response is dropped.
    pub fn call(&self, request: http::Request<Box<dyn RecvBody>>) -> LocalResponse {
        let (opening, response) = pipe(self.server.config.max_send_buffer_size);
        let (parts, body) = request.into_parts();
        if let Some(dispatch) = call::serve(
            parts,
            body,
            Opening::Local(opening),
            &self.server,
            self.peer,
            self.state.call_started(),
        ) {
            tokio::spawn(dispatch);
        }
        response
    }
}
