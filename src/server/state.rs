//! What one server connection's task, its calls and its transport share:
//! [`ConnectionState`], and the [`ActiveCall`] guard that counts a call on it.
//!
//! It has a file of its own so that the three can share it without importing
//! each other: `connection.rs` creates it and drives the other two, `call.rs`
//! holds an [`ActiveCall`] per stream, and `transport.rs` flags a PING flood
//! on it. Defined in `connection.rs`, it made `call.rs` and `transport.rs`
//! import the file that imports them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What a connection's task, its calls and its transport share: one
/// allocation per connection for all three (an idle chat member pays for
/// every one).
#[derive(Debug, Default)]
pub(crate) struct ConnectionState {
    /// Whether this connection has already been logged for misbehaving. A
    /// peer that sends a thousand bad requests gets a thousand error
    /// statuses but one log line at `info`; the rest go to `debug`. That
    /// keeps the log useful for finding offenders, and stops an offender
    /// from filling the disk.
    logged: AtomicBool,
    /// Calls being served, to tell an idle connection.
    active: AtomicUsize,
    /// Set by the transport when the peer breaks the PING policy.
    calm: AtomicBool,
}

impl ConnectionState {
    /// `true` the first time only: whether to log an offence at `info`.
    pub(crate) fn first_offence(&self) -> bool {
        !self.logged.swap(true, Ordering::Relaxed)
    }

    /// Counts a call as active until the returned guard is dropped.
    pub(crate) fn call_started(self: &Arc<Self>) -> ActiveCall {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveCall(Arc::clone(self))
    }

    /// Notes that the peer sent too many PINGs (see
    /// [`Watched`](super::transport::Watched)).
    pub(crate) fn too_many_pings(&self) {
        self.calm.store(true, Ordering::Relaxed);
    }

    /// Whether the peer broke the PING policy: the connection's task then
    /// sends GOAWAY `ENHANCE_YOUR_CALM`.
    pub(crate) fn calmed(&self) -> bool {
        self.calm.load(Ordering::Relaxed)
    }

    /// Whether any call is being served (an idle connection has none).
    pub(crate) fn has_calls(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }
}

/// A call counted as active on its connection while this lives.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<ConnectionState>);

impl ActiveCall {
    /// The connection the call runs on.
    pub(crate) fn connection(&self) -> &ConnectionState {
        &self.0
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
