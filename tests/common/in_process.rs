//! Servers of this package running in the test process.

use std::time::Duration;

use grpc_chat::server::{Server, Service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves `service` on `listener` in a task of the current tokio runtime,
/// with a 200 ms shutdown grace, until the returned sender is used or
/// dropped.
pub fn serve(listener: TcpListener, service: impl Service) -> oneshot::Sender<()> {
    serve_server(listener, server(service))
}

/// A server of `service` with a 200 ms shutdown grace, not serving yet: to
/// [`serve_server`], or to hand to the web gateway (clones share the service).
#[allow(dead_code)] // not every test binary has a gateway
pub fn server(service: impl Service) -> Server {
    Server::builder()
        .shutdown_grace(Duration::from_millis(200))
        .add_service(service)
        .build()
}

/// Serves `server` on `listener` in a task of the current tokio runtime,
/// until the returned sender is used or dropped.
pub fn serve_server(listener: TcpListener, server: Server) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    stop
}

/// [`serve`] on a free 127.0.0.1 port, in a runtime of its own, for tests
/// that are not async themselves. Stopped when dropped.
pub struct InProcessServer {
    pub port: u16,
    // Dropped first: the server stops, then its runtime goes.
    _stop: oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl InProcessServer {
    pub fn start(service: impl Service) -> InProcessServer {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = {
            let _context = runtime.enter();
            serve(listener, service)
        };
        InProcessServer {
            port,
            _stop: stop,
            _runtime: runtime,
        }
    }
}
