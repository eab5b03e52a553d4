//! `grpc.health.v1.Health`: the standard gRPC health checking service.
//!
//! Load balancers, orchestrators and tools such as `grpc-health-probe` ask a
//! server, per service name, whether it is serving. The empty name stands for
//! the server as a whole.
//!
//! The server side has two halves:
//!
//! * [`HealthReporter`] — what the application holds: it says which services
//!   are serving ([`HealthReporter::set_serving`],
//!   [`HealthReporter::set_not_serving`]) and, at shutdown, turns everything
//!   to `NOT_SERVING` ([`HealthReporter::shutdown`]).
//! * [`HealthService`] — the RPCs, reading what the reporter says:
//!
//! ```text
//! Check(service)  known   → that status
//!                 unknown → NOT_FOUND                       (an error, not a status)
//! Watch(service)  known   → status now, then each change    (a stream that stays open)
//!                 unknown → SERVICE_UNKNOWN now, then the real status if it is
//!                           ever registered                 (never an error)
//! ```
//!
//! Each service name owns a `tokio::sync::watch` channel: setting a status is
//! one `send_replace`, and every open `Watch` call is a receiver that wakes
//! on the change. A watch channel keeps only the latest value, which is what
//! health checking wants: a watcher that was slow to read sees the current
//! status, never a backlog of stale ones.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Status;
use crate::pb::grpc_health_v1::health_check_response::ServingStatus;
use crate::pb::grpc_health_v1::{Health, HealthCheckRequest, HealthCheckResponse};
use crate::rpc::{Request, Response};
use crate::server::ResponseSink;

pub use crate::pb::grpc_health_v1::HealthServer;

/// What every clone of a [`HealthReporter`] shares.
#[derive(Debug)]
struct Inner {
    /// One channel per service name a status was set for, or that a `Watch`
    /// call asked about. A channel holding `ServiceUnknown` is only a place for
    /// watchers to wait: [`Health::check`] treats it as unknown.
    services: Mutex<HashMap<String, watch::Sender<ServingStatus>>>,
    /// Becomes `true` at [`HealthReporter::shutdown`]: open `Watch` calls send
    /// their last status and end, so they do not hold their connections open
    /// through the server's shutdown grace period.
    closed: watch::Sender<bool>,
}

/// The application's handle on health statuses: cheap to clone, every clone
/// sees and changes the same statuses.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    inner: Arc<Inner>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReporter {
    /// A reporter that knows no service yet (not even `""`).
    pub fn new() -> Self {
        HealthReporter {
            inner: Arc::new(Inner {
                services: Mutex::new(HashMap::new()),
                closed: watch::Sender::new(false),
            }),
        }
    }

    /// The [`HealthService`] answering from this reporter's statuses.
    pub fn service(&self) -> HealthService {
        HealthService {
            reporter: self.clone(),
        }
    }

    /// Marks `service` (a fully qualified name; `""` for the whole server) as
    /// serving.
    pub fn set_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::Serving);
    }

    /// Marks `service` (`""` for the whole server) as not serving.
    pub fn set_not_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::NotServing);
    }

    /// Sets the status of `service`, registering it if needed, and wakes its
    /// watchers.
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        let mut services = self.inner.services.lock();
        match services.get(service) {
            Some(sender) => {
                // Works with or without receivers; unchanged values still
                // wake watchers, which then re-send the same status: harmless.
                sender.send_replace(status);
            }
            None => {
                services.insert(service.to_owned(), watch::Sender::new(status));
            }
        }
    }

    /// The status of `service`, or `None` if it was never registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let services = self.inner.services.lock();
        match services.get(service).map(|s| *s.borrow()) {
            None | Some(ServingStatus::ServiceUnknown) => None,
            known => known,
        }
    }

    /// Shutdown: every registered service becomes `NOT_SERVING`, and open
    /// `Watch` calls end once they have sent that. Call it before the server
    /// starts draining, so health checkers stop sending new work here first.
    pub fn shutdown(&self) {
        {
            let services = self.inner.services.lock();
            for sender in services.values() {
                sender.send_if_modified(|status| {
                    let known = *status != ServingStatus::ServiceUnknown;
                    if known {
                        *status = ServingStatus::NotServing;
                    }
                    known
                });
            }
        }
        self.inner.closed.send_replace(true);
    }

    /// A receiver of `service`'s status, creating a `ServiceUnknown`
    /// placeholder if there is none yet.
    fn subscribe(&self, service: &str) -> Subscription {
        let mut services = self.inner.services.lock();
        let receiver = services
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(ServingStatus::ServiceUnknown))
            .subscribe();
        Subscription {
            receiver: Some(receiver),
            service: service.to_owned(),
            reporter: self.clone(),
        }
    }
}

/// One `Watch` call's receiver. On drop, removes the service's placeholder if
/// it was only created for watchers and none is left, so clients watching
/// made-up names cannot grow the map without bound.
struct Subscription {
    /// `Some` until dropped.
    receiver: Option<watch::Receiver<ServingStatus>>,
    service: String,
    reporter: HealthReporter,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first so `receiver_count` no longer counts it.
        self.receiver = None;
        let mut services = self.reporter.inner.services.lock();
        let unused = services.get(&self.service).is_some_and(|sender| {
            *sender.borrow() == ServingStatus::ServiceUnknown && sender.receiver_count() == 0
        });
        if unused {
            services.remove(&self.service);
        }
    }
}

/// The `grpc.health.v1.Health` RPCs over a [`HealthReporter`]'s statuses.
/// Serve it with `HealthServer::new(reporter.service())`.
#[derive(Debug, Clone)]
pub struct HealthService {
    reporter: HealthReporter,
}

/// Completes once [`HealthReporter::shutdown`] has run.
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    // The sender lives in `Inner`, which the caller holds, so this cannot
    // fail; if it did, "closed" would be the right reading anyway. The
    // borrowed value is dropped here rather than held across an await.
    let _ = closed.wait_for(|closed| *closed).await.map(|_| ());
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        // The health checking protocol: "If the requested service is unknown,
        // the call will fail with status NOT_FOUND."
        match self.reporter.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::new(
                crate::Code::NotFound,
                format!("unknown service {service:?}"),
            )),
        }
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
        mut sink: ResponseSink<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let service = request.into_inner().service;
        let mut subscription = self.reporter.subscribe(&service);
        let Some(receiver) = subscription.receiver.as_mut() else {
            // Only `Drop` takes the receiver.
            return Ok(());
        };
        let mut closed = self.reporter.inner.closed.subscribe();
        loop {
            let status = *receiver.borrow_and_update();
            // Fails with CANCELLED once the client has gone; a client reset
            // also drops this future wherever it waits.
            sink.send(&response(status)).await?;
            tokio::select! {
                biased;
                changed = receiver.changed() => {
                    if changed.is_err() {
                        // The sender lives in the reporter, which this service
                        // holds: it cannot go away while we wait.
                        return Ok(());
                    }
                }
                () = wait_closed(&mut closed) => {
                    // `shutdown` set NOT_SERVING before closing: send it if
                    // this watcher has not yet.
                    if receiver.has_changed().unwrap_or(false) {
                        let status = *receiver.borrow_and_update();
                        sink.send(&response(status)).await?;
                    }
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_per_service_and_shared_by_clones() {
        let reporter = HealthReporter::new();
        let clone = reporter.clone();
        assert_eq!(reporter.status(""), None);
        clone.set_serving("");
        clone.set_not_serving("a.B");
        assert_eq!(reporter.status(""), Some(ServingStatus::Serving));
        assert_eq!(reporter.status("a.B"), Some(ServingStatus::NotServing));
        reporter.shutdown();
        assert_eq!(clone.status(""), Some(ServingStatus::NotServing));
    }

    #[test]
    fn watching_an_unknown_service_leaves_nothing_behind() {
        let reporter = HealthReporter::new();
        let subscription = reporter.subscribe("no.Such");
        // A placeholder is not a registered service.
        assert_eq!(reporter.status("no.Such"), None);
        assert_eq!(reporter.inner.services.lock().len(), 1);
        drop(subscription);
        assert!(reporter.inner.services.lock().is_empty());
    }

    #[test]
    fn a_watched_service_registered_later_keeps_its_status() {
        let reporter = HealthReporter::new();
        let subscription = reporter.subscribe("late.Svc");
        reporter.set_serving("late.Svc");
        drop(subscription);
        assert_eq!(reporter.status("late.Svc"), Some(ServingStatus::Serving));
    }
}
