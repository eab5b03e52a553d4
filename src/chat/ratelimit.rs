//! The per-member rate limit: a token bucket.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per
//! second; each chat message takes one. A member can therefore send a burst
//! of `burst` messages at once, then `rate` per second on average. Time is
//! passed in, so the bucket is pure and tests do not sleep.

use std::time::{Duration, Instant};

/// Default for [`RateLimit::rate`]: messages per second per member.
pub const DEFAULT_RATE: f64 = 10.0;
/// Default for [`RateLimit::burst`].
pub const DEFAULT_BURST: f64 = 20.0;

/// Rate-limit settings. A `rate` of 0 turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub rate: f64,
    /// Messages that may be sent at once.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl RateLimit {
    /// Whether limiting is on.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }
}

/// One member's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: limit.burst.max(1.0),
            last: now,
        }
    }

    /// Takes a token if there is one. `Err` says how long until the next.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.limit.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                rate: 2.0,
                burst: 3.0,
            },
            t0,
        );
        for _ in 0..3 {
            assert!(bucket.try_take(t0).is_ok());
        }
        let wait = bucket.try_take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(bucket.try_take(t1).is_ok());
        assert!(bucket.try_take(t1).is_err());
        // A long pause refills to the burst size, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_take(t2).is_ok());
        }
        assert!(bucket.try_take(t2).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                rate: 0.0,
                burst: 1.0,
            },
            t0,
        );
        for _ in 0..10_000 {
            assert!(bucket.try_take(t0).is_ok());
        }
    }
}
