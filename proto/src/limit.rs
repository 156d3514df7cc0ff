//! Admission control for hostile peers: a token bucket (rate), token buckets per source
//! prefix, and per-source counters (concurrency). Sources count by network prefix
//! ([`source_prefix`]): one IPv4 address, or one IPv6 /64, the block one subscriber usually
//! gets, so a host cannot multiply its share by using more addresses of its own /64. Time
//! is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::Timestamp;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: f64, now: Timestamp) -> Self {
        TokenBucket {
            rate: rate_per_sec.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The prefix that `ip` counts under: an IPv4 address itself (/32), the /64 of an IPv6
/// address, and an IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as that IPv4 address.
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl TokenBucket {
    /// Whether the bucket would be full at `now` (its owner has been idle long enough).
    pub fn is_full(&self, now: Timestamp) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * self.rate >= self.burst
    }
}

/// One token bucket per key (a source prefix), created full on first use. When more than
/// `max_keys` are held, those that have refilled (idle sources) are forgotten, so memory
/// follows the active sources and a forgotten one loses nothing.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    buckets: HashMap<K, TokenBucket>,
    rate: f64,
    burst: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Copy> KeyedBuckets<K> {
    /// `rate` tokens per second per key, bursts of `burst`.
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        KeyedBuckets {
            buckets: HashMap::new(),
            rate,
            burst,
            max_keys: max_keys.max(1),
        }
    }

    /// Take one of `k`'s tokens if it has one.
    pub fn try_take(&mut self, k: K, now: Timestamp) -> bool {
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(&k) {
            self.buckets.retain(|_, b| !b.is_full(now));
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(k)
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .try_take(now)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Concurrent holders per key (a source address) and in total, each capped.
#[derive(Debug)]
pub struct Counters<K> {
    per_key: HashMap<K, usize>,
    total: usize,
    max_per_key: usize,
    max_total: usize,
}

impl<K: Hash + Eq + Copy> Counters<K> {
    /// At most `max_per_key` for one key and `max_total` in all.
    pub fn new(max_per_key: usize, max_total: usize) -> Self {
        Counters {
            per_key: HashMap::new(),
            total: 0,
            max_per_key,
            max_total,
        }
    }

    /// Count one more for `k` unless a cap is reached.
    pub fn acquire(&mut self, k: K) -> bool {
        let n = self.per_key.get(&k).copied().unwrap_or(0);
        if n >= self.max_per_key || self.total >= self.max_total {
            return false;
        }
        self.per_key.insert(k, n + 1);
        self.total += 1;
        true
    }

    /// Give one back for `k`.
    pub fn release(&mut self, k: K) {
        if let Some(n) = self.per_key.get_mut(&k) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_key.remove(&k);
            }
        }
    }

    /// Held in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Timestamp::ZERO;
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5);
        // 100 ms later: one more token
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t1));
        // a long pause refills only up to the burst
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(t2)).count(), 5);
        // time going backwards gives nothing
        assert!(!b.try_take(t0));
    }

    #[test]
    fn sources_count_by_prefix() {
        let p = |s: &str| source_prefix(s.parse().unwrap());
        assert_eq!(p("192.0.2.7"), p("192.0.2.7"));
        assert_ne!(p("192.0.2.7"), p("192.0.2.8"), "IPv4: one address each");
        assert_eq!(
            p("2001:db8:1:2:aaaa::1"),
            p("2001:db8:1:2:ffff:1:2:3"),
            "one IPv6 /64"
        );
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_eq!(p("::ffff:192.0.2.7"), p("192.0.2.7"));
        // A /64 full of addresses shares one budget.
        let mut b = KeyedBuckets::new(10.0, 10.0, 100);
        let t = Timestamp::ZERO;
        let taken = (0..100u16)
            .filter(|i| b.try_take(p(&format!("2001:db8::{i:x}")), t))
            .count();
        assert_eq!(taken, 10);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn keyed_buckets_forget_idle_sources_only() {
        let t0 = Timestamp::ZERO;
        let mut b = KeyedBuckets::new(1.0, 2.0, 2);
        assert!(b.try_take(1, t0) && b.try_take(1, t0) && !b.try_take(1, t0));
        assert!(b.try_take(2, t0));
        // Full map: key 3 arrives; 1 and 2 are not refilled yet, so nothing is forgotten
        // (1's empty bucket must not come back full).
        assert!(b.try_take(3, t0));
        assert_eq!(b.len(), 3);
        assert!(!b.try_take(1, t0));
        // Later, idle keys have refilled and are dropped when room is needed.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.try_take(4, t1));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn counters_cap_per_key_and_in_total() {
        let mut c = Counters::new(2, 3);
        assert!(c.acquire(1));
        assert!(c.acquire(1));
        assert!(!c.acquire(1), "per-key cap");
        assert!(c.acquire(2));
        assert!(!c.acquire(3), "total cap");
        c.release(1);
        assert!(c.acquire(3));
        assert_eq!(c.total(), 3);
        c.release(9); // unknown: ignored
        assert_eq!(c.total(), 3);
        c.release(1);
        c.release(2);
        c.release(3);
        assert_eq!(c.total(), 0);
    }
}
