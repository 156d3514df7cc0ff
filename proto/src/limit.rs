//! Admission control for hostile peers: a token bucket (rate) and per-source counters
//! (concurrency). Time is passed in.

use std::collections::HashMap;
use std::hash::Hash;

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
