//! Waiting in tests: one bound, [`WAIT`], for everything a test waits for,
//! and helpers that wait for a *condition* rather than for a fixed time.
//!
//! A fixed `sleep` as "wait for X to happen" is either too short (the test
//! fails on a loaded machine) or too long (every run pays for the worst
//! case). These poll the condition every few milliseconds and return as
//! soon as it holds; only a broken test waits the whole [`WAIT`], and then
//! fails saying what it was waiting for.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for anything that should happen: generous, so a
/// loaded two-core machine does not fail a correct test, and finite, so a
/// broken one fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(5);

/// Waits until `condition` holds, checking it every few milliseconds;
/// panics naming `what` after [`WAIT`].
pub async fn wait_until(what: impl Display, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `check` returns `Some`, and returns it; panics naming
/// `what` after [`WAIT`].
pub async fn wait_for_some<T>(what: impl Display, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `future`'s output, if it comes within [`WAIT`]; panics naming `what`
/// otherwise.
pub async fn within<T>(what: impl Display, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// [`wait_until`] for tests on threads (no runtime): blocks the thread.
pub fn wait_until_blocking(what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}
