//! Where and as whom the client connects ([`SessionConfig`], [`Transport`]:
//! TLS, token, keepalive, the wire trace), with the documented defaults, and
//! how long it waits between attempts ([`Backoff`]).

use std::time::Duration;

/// Default for [`SessionConfig::backoff_min`].
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Default for [`SessionConfig::backoff_max`].
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Default for [`SessionConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Where and as whom to chat.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Server address, `host:port`.
    pub address: String,
    /// The user name sent with `USER_JOINED`.
    pub user: String,
    /// The room (`chat-room` metadata); `None` for the server's default.
    pub room: Option<String>,
    /// Connection attempts before giving up when the first connection cannot
    /// be made; `None` retries for ever. Once connected, reconnecting never
    /// gives up.
    pub startup_attempts: Option<u32>,
    /// The first reconnection delay; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest reconnection delay.
    pub backoff_max: Duration,
    /// How long dialling plus joining may take.
    pub connect_timeout: Duration,
    /// TLS, server name, token, keepalive.
    pub transport: Transport,
}

/// How the client reaches the server and proves who it is.
#[derive(Clone)]
pub struct Transport {
    /// TLS settings; `None` for plaintext.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry, if not the address's host.
    pub server_name: Option<String>,
    /// Sent as `authorization: Bearer <token>` (servers run with
    /// `--auth-tokens` require it).
    pub token: Option<String>,
    /// Keepalive PING interval and ACK timeout, so a dead server or path is
    /// noticed while nobody talks; `None` turns it off.
    pub keepalive: Option<(Duration, Duration)>,
    /// Traces every frame (`--trace-wire`); `None` for no trace.
    pub wire_trace: Option<crate::wire_trace::WireTrace>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            tls: None,
            server_name: None,
            token: None,
            keepalive: Some((
                crate::client::DEFAULT_KEEPALIVE_INTERVAL,
                crate::client::DEFAULT_KEEPALIVE_TIMEOUT,
            )),
            wire_trace: None,
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log line.
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl SessionConfig {
    /// Defaults for everything but who and where.
    pub fn new(address: impl Into<String>, user: impl Into<String>, room: Option<String>) -> Self {
        SessionConfig {
            address: address.into(),
            user: user.into(),
            room,
            startup_attempts: None,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transport: Transport::default(),
        }
    }
}

/// Reconnection delays: `min`, doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }
}
