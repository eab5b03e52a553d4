//! The server's PING policy: which client PINGs are too many, decided from
//! the HTTP/2 frame headers passing through the connection. Pure: bytes and
//! instants in, verdicts out; `transport.rs` feeds it from the socket.
//!
//! `h2` answers every PING by itself and has no opinion on how often a peer
//! may send one, so a client could keep the server busy writing PING ACKs
//! (a "PING flood"). gRPC's answer, which grpc-go and grpc-core share, is a
//! *permitted keepalive time*: a client may PING at most once per that
//! interval; a PING that comes sooner is a *strike*, and after a few strikes
//! the server closes the connection with GOAWAY `ENHANCE_YOUR_CALM`. Two
//! details keep honest clients out of trouble:
//!
//! * a PING that follows response DATA or HEADERS from the server is never a
//!   strike: clients legitimately PING in step with what they receive (grpc-go
//!   measures bandwidth-delay that way), and that rate is set by the server;
//! * PING ACKs (the answers to *our* keepalive PINGs) are not PINGs.
//!
//! The frame headers come from [`crate::http2::FrameScanner`], which follows
//! the byte stream without buffering or validating it and reads each header
//! with the crate's one frame-header parser, [`crate::http2::FrameHead`].

use std::time::{Duration, Instant};

/// Default for [`Builder::min_ping_interval`](super::Builder::min_ping_interval):
/// clients may PING once every 10 seconds. Our own client's keepalive
/// ([`client::DEFAULT_KEEPALIVE_INTERVAL`](crate::client::DEFAULT_KEEPALIVE_INTERVAL))
/// stays above it.
pub const DEFAULT_MIN_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Default for [`Builder::max_ping_strikes`](super::Builder::max_ping_strikes):
/// two early PINGs are forgiven (clocks and timers are not exact), the third
/// closes the connection.
pub const DEFAULT_MAX_PING_STRIKES: u32 = 2;

/// What the policy says about a PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fine (or forgiven).
    Allowed,
    /// Too many PINGs too close together: GOAWAY `ENHANCE_YOUR_CALM`.
    TooMany,
}

/// The permitted-keepalive-time rule, for one connection.
#[derive(Debug, Clone)]
pub(crate) struct PingPolicy {
    /// PINGs closer together than this are strikes.
    min_interval: Duration,
    /// Strikes forgiven; one more is [`Verdict::TooMany`].
    max_strikes: u32,
    strikes: u32,
    last_ping: Option<Instant>,
    /// The server sent DATA or HEADERS since the last PING.
    responded: bool,
}

impl PingPolicy {
    pub(crate) fn new(min_interval: Duration, max_strikes: u32) -> Self {
        PingPolicy {
            min_interval,
            max_strikes,
            strikes: 0,
            last_ping: None,
            responded: false,
        }
    }

    /// The server wrote a response frame (DATA or HEADERS).
    pub(crate) fn on_response_sent(&mut self) {
        self.responded = true;
    }

    /// The client sent a PING at `now`.
    pub(crate) fn on_ping(&mut self, now: Instant) -> Verdict {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.responded) {
            // The server has been sending: PINGs in step with that are the
            // client measuring the connection, not flooding it.
            self.strikes = 0;
            return Verdict::Allowed;
        }
        if let Some(last) = last {
            if now.saturating_duration_since(last) < self.min_interval {
                self.strikes += 1;
            }
        }
        if self.strikes > self.max_strikes {
            Verdict::TooMany
        } else {
            Verdict::Allowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_the_permitted_interval_are_fine() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let start = Instant::now();
        for i in 0..100 {
            let now = start + Duration::from_secs(10 * i);
            assert_eq!(policy.on_ping(now), Verdict::Allowed);
        }
    }

    #[test]
    fn the_third_early_ping_after_two_forgiven_is_too_many() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(policy.on_ping(t), Verdict::Allowed); // first: nothing to compare
        assert_eq!(policy.on_ping(t + ms(1)), Verdict::Allowed); // strike 1
        assert_eq!(policy.on_ping(t + ms(2)), Verdict::Allowed); // strike 2
        assert_eq!(policy.on_ping(t + ms(3)), Verdict::TooMany); // strike 3
    }

    #[test]
    fn pings_following_responses_are_never_strikes() {
        let mut policy = PingPolicy::new(Duration::from_secs(10), 2);
        let t = Instant::now();
        for i in 0..1000 {
            policy.on_response_sent();
            assert_eq!(
                policy.on_ping(t + Duration::from_millis(i)),
                Verdict::Allowed
            );
        }
        // ... and a response forgives earlier strikes.
        let later = t + Duration::from_secs(1);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        policy.on_response_sent();
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::Allowed);
        assert_eq!(policy.on_ping(later), Verdict::TooMany);
    }
}
