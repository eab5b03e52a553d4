//! Servers of this package running in the test process.
//!
//! [`start`] (or [`start_with`], to configure the server first, or
//! [`start_server`], for a server already built) is how a test starts one:
//! on a free 127.0.0.1 port, in a task of the current tokio runtime, with a
//! 200 ms shutdown grace, stopped when the returned [`Running`] is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use grpc_chat::server::{Builder, Server, Service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The shutdown grace of the servers started here: short, so a test's end
/// is not held up by calls still open.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// A server started by [`start`]; stopped when dropped.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as `127.0.0.1:<port>`, what `Channel::connect` takes.
    pub address: String,
    /// The server, to hand to the web gateway (clones share its services).
    pub server: Server,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Keeps the server running until the test's runtime ends, and returns
    /// its address.
    pub fn detach(mut self) -> String {
        if let Some(stop) = self.stop.take() {
            std::mem::forget(stop);
        }
        std::mem::take(&mut self.address)
    }
}

/// Serves `service` on a free port (see the module docs).
pub async fn start(service: impl Service) -> Running {
    start_with(service, |_| {}).await
}

/// [`start`], with `configure` applied to the server's builder first.
pub async fn start_with(service: impl Service, configure: impl FnOnce(&mut Builder)) -> Running {
    let mut builder = Server::builder();
    builder.shutdown_grace(SHUTDOWN_GRACE).add_service(service);
    configure(&mut builder);
    start_server(builder.build()).await
}

/// Serves `server` on a free port (see the module docs).
pub async fn start_server(server: Server) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    Running {
        addr,
        address: addr.to_string(),
        server: server.clone(),
        stop: Some(serve_server(listener, server)),
    }
}

/// A server of `service` with the 200 ms shutdown grace, not serving yet:
/// to hand to the web gateway alone, or to [`start_server`].
pub fn server(service: impl Service) -> Server {
    Server::builder()
        .shutdown_grace(SHUTDOWN_GRACE)
        .add_service(service)
        .build()
}

/// Serves `service` on `listener` in a task of the current tokio runtime,
/// with the 200 ms shutdown grace, until the returned sender is used or
/// dropped. For tests that bind their own listener.
pub fn serve(listener: TcpListener, service: impl Service) -> oneshot::Sender<()> {
    serve_server(listener, server(service))
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
