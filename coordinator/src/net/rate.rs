//! Worker connections per client address and second: a token bucket per
//! address, so one client cannot open sessions (or hold WebRTC set-up slots)
//! faster than the coordinator closes them.

use crate::domain::rate::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses remembered before idle ones (buckets full again) are dropped.
const PRUNE_AT: usize = 4096;

pub struct AddressRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl AddressRate {
    /// `per_second` on average, in bursts of up to `burst`.
    pub fn new(per_second: u32, burst: u32) -> AddressRate {
        AddressRate { per_second: per_second as f64, burst: burst.max(1) as f64, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token of `ip`'s bucket at `now`; false when it is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, bucket| !bucket.full_by(now));
        }
        buckets.entry(ip).or_insert_with(|| TokenBucket::full(self.per_second, self.burst, now)).take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_the_rate_and_addresses_apart() {
        let r = AddressRate::new(10, 20);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        assert_eq!((0..25).filter(|_| r.allow(a, t)).count(), 20, "the burst");
        assert!(r.allow(b, t), "another address has its own bucket");
        assert!(!r.allow(a, t + Duration::from_millis(50)), "half a token");
        assert!(r.allow(a, t + Duration::from_millis(100)));
        assert_eq!((0..30).filter(|_| r.allow(a, t + Duration::from_secs(10))).count(), 20, "full again, not more");
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let r = AddressRate::new(10, 20);
        let t = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            r.allow(IpAddr::from(i.to_be_bytes()), t);
        }
        r.allow("192.0.2.1".parse().unwrap(), t + Duration::from_secs(5));
        assert_eq!(r.buckets.lock().unwrap().len(), 1);
    }
}
