//! A token bucket: `rate` tokens a second, up to `burst`, with the time
//! passed in (the signals a worker may relay, the connections an address
//! may open).

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { tokens: burst, at: now, rate, burst }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Whether a token is there at `now` (none is taken).
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token, which [`TokenBucket::has_token`] found.
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }

    /// Takes a token at `now`; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let has = self.has_token(now);
        if has {
            self.spend();
        }
        has
    }

    /// Whether the bucket is full again by `now` (nothing to remember).
    pub fn full_by(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::full(10.0, 3.0, t);
        assert_eq!((0..5).filter(|_| b.take(t)).count(), 3);
        assert!(!b.has_token(t + Duration::from_millis(50)), "half a token");
        assert!(b.take(t + Duration::from_millis(100)));
        assert!(!b.full_by(t + Duration::from_millis(100)));
        assert!(b.full_by(t + Duration::from_secs(1)));
        assert_eq!((0..5).filter(|_| b.take(t + Duration::from_secs(10))).count(), 3, "full again, not more");
    }
}
