//! A live estimate of a relay's anonymity set, in bits, from the events it already sees:
//! a packet entering its pool and a packet (or a round of packets) leaving it.
//!
//! # Method
//!
//! The question is the one an observer of every link of the relay asks about one departing
//! packet: *which of the packets that entered could this be?* The estimate is the Shannon
//! entropy of that guess, in bits, averaged over recent departures.
//!
//! * **Continuous-time (Poisson) mix.** Following the Loopix analysis (Piotrowska et al.,
//!   USENIX Security 2017, section 4): when every packet is held for an exponential delay of
//!   the same mean, the time a packet still has to wait does not depend on how long it has
//!   waited already (memorylessness). At the moment one packet leaves, each of the `n`
//!   packets in the pool was equally likely to be the one, so that departure has
//!   `log2(n)` bits of entropy (0 when it was alone).
//! * **Batch (threshold-and-timer) mix.** A round of `m` packets leaves shuffled, so each of
//!   them has `log2(m)` bits.
//!
//! The estimate is the mean of the per-departure entropies over the departures of the last
//! `window` (kept as a few time buckets, so memory does not grow with the packet rate); it is
//! 0 when nothing departed in the window (an idle relay hides nobody).
//!
//! # Assumptions
//!
//! * Senders draw per-hop delays from the exponential distribution with the network's mean,
//!   as honest clients do. A sender choosing its own delays (e.g. zero) gets less than the
//!   estimate: the relay cannot tell, and the estimate is about honest packets.
//! * The observer cannot tell the relay's own cover packets from others (they are the same
//!   size, encrypted, and follow the same hops), so they count in the pool. An observer who
//!   *is* the relay knows its own cover: for it, only the other packets count.
//! * It is a per-relay figure; a route's anonymity combines the hops and is not computed here.
//!
//! Sans-IO: time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use crate::Timestamp;

/// Buckets the window is cut into: the window slides in steps of `window / BUCKETS`.
const BUCKETS: u64 = 10;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    index: u64,
    bits: f64,
    departures: u64,
}

/// The estimator: feed it every arrival and departure of the relay's pool.
#[derive(Clone, Debug)]
pub struct AnonymityEstimator {
    pool: usize,
    bucket_ns: u64,
    buckets: VecDeque<Bucket>,
}

/// Entropy in bits of a uniform choice among `n` (0 for `n` ≤ 1).
pub fn uniform_bits(n: usize) -> f64 {
    if n <= 1 { 0.0 } else { (n as f64).log2() }
}

impl AnonymityEstimator {
    /// An estimator averaging over the departures of the last `window` (at least a few
    /// nanoseconds; a few seconds is a sensible value for a relay).
    pub fn new(window: Duration) -> Self {
        let ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        AnonymityEstimator {
            pool: 0,
            bucket_ns: (ns / BUCKETS).max(1),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    /// A packet entered the pool.
    pub fn on_arrival(&mut self, _now: Timestamp) {
        self.pool += 1;
    }

    /// A packet left the pool of a continuous-time mix: it could have been any of the packets
    /// in the pool at that moment (itself included).
    pub fn on_departure(&mut self, now: Timestamp) {
        self.record(now, uniform_bits(self.pool), 1);
        self.pool = self.pool.saturating_sub(1);
    }

    /// A batch mix released a shuffled round of `size` packets: each could be any of them.
    pub fn on_round(&mut self, now: Timestamp, size: usize) {
        if size == 0 {
            return;
        }
        self.record(now, uniform_bits(size) * size as f64, size as u64);
        self.pool = self.pool.saturating_sub(size);
    }

    /// A packet left the pool without being sent (dropped at shutdown): no departure.
    pub fn on_discard(&mut self) {
        self.pool = self.pool.saturating_sub(1);
    }

    /// Packets in the pool now.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// The entropy a packet leaving a continuous-time mix right now would have:
    /// `log2(pool)`. Follows the pool without lag (the floor uses it).
    pub fn current_bits(&self) -> f64 {
        uniform_bits(self.pool)
    }

    /// Departures counted in the window ending at `now`.
    pub fn departures(&mut self, now: Timestamp) -> u64 {
        self.expire(now);
        self.buckets.iter().map(|b| b.departures).sum()
    }

    /// The mean entropy, in bits, of the departures in the window ending at `now`; 0 when
    /// none departed.
    pub fn estimate(&mut self, now: Timestamp) -> f64 {
        self.expire(now);
        let (bits, n) = self
            .buckets
            .iter()
            .fold((0.0, 0u64), |(s, c), b| (s + b.bits, c + b.departures));
        if n == 0 { 0.0 } else { bits / n as f64 }
    }

    fn record(&mut self, now: Timestamp, bits: f64, departures: u64) {
        self.expire(now);
        let index = now.as_nanos() / self.bucket_ns;
        match self.buckets.back_mut() {
            // Events come in time order from one driver; a late one joins the newest bucket.
            Some(b) if b.index >= index => {
                b.bits += bits;
                b.departures += departures;
            }
            _ => self.buckets.push_back(Bucket {
                index,
                bits,
                departures,
            }),
        }
    }

    fn expire(&mut self, now: Timestamp) {
        let current = now.as_nanos() / self.bucket_ns;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index + BUCKETS <= current)
        {
            self.buckets.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MixQueue;
    use crate::packet::sample_delay;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn at(n: u64) -> Timestamp {
        Timestamp::ZERO + ms(n)
    }

    #[test]
    fn constant_pool_of_n_gives_log2_n() {
        for n in [1usize, 2, 8, 100] {
            let mut e = AnonymityEstimator::new(ms(1000));
            for _ in 0..n {
                e.on_arrival(at(0));
            }
            // one in, one out every ms: the pool holds n at each departure
            for t in 1..2000 {
                e.on_arrival(at(t));
                e.on_departure(at(t));
            }
            // the pool held n + 1 at each departure (the newcomer counts)
            let want = ((n + 1) as f64).log2();
            let got = e.estimate(at(2000));
            assert!((got - want).abs() < 1e-9, "n={n}: {got} vs {want}");
            assert_eq!(e.pool(), n);
            assert!((e.current_bits() - uniform_bits(n)).abs() < 1e-12);
        }
    }

    #[test]
    fn empty_pool_and_idle_relay_give_zero() {
        let mut e = AnonymityEstimator::new(ms(1000));
        assert_eq!(e.estimate(at(0)), 0.0);
        assert_eq!(e.current_bits(), 0.0);
        // each packet alone in the pool: 0 bits per departure
        for t in 0..100 {
            e.on_arrival(at(t * 10));
            e.on_departure(at(t * 10 + 5));
        }
        assert_eq!(e.estimate(at(1000)), 0.0);
        assert_eq!(e.departures(at(1000)), 90);
        // a loaded relay, then nothing: the estimate falls to 0 once the window has passed
        for _ in 0..16 {
            e.on_arrival(at(2000));
        }
        for _ in 0..16 {
            e.on_departure(at(2001));
        }
        assert!(e.estimate(at(2002)) > 2.0);
        assert_eq!(e.estimate(at(3200)), 0.0);
        assert_eq!(e.departures(at(3200)), 0);
        // a stray departure never underflows
        e.on_departure(at(4000));
        assert_eq!(e.pool(), 0);
    }

    #[test]
    fn batch_rounds_give_log2_of_the_round() {
        let mut e = AnonymityEstimator::new(ms(1000));
        for t in 0..10 {
            for _ in 0..32 {
                e.on_arrival(at(t * 100));
            }
            e.on_round(at(t * 100 + 99), 32);
        }
        assert!((e.estimate(at(1000)) - 5.0).abs() < 1e-9);
        // rounds of different sizes weigh by their packets: (8*3 + 2*1) / 10
        let mut e = AnonymityEstimator::new(ms(1000));
        e.on_round(at(1), 8);
        e.on_round(at(2), 2);
        assert!((e.estimate(at(3)) - 2.6).abs() < 1e-9);
        e.on_round(at(4), 0);
        assert!((e.estimate(at(5)) - 2.6).abs() < 1e-9);
    }

    #[test]
    fn the_window_follows_a_change_of_load() {
        // Pool of 4 for 2 s, then of 64: the estimate moves from 2 bits to 6 within one
        // window, passing through values in between.
        let mut e = AnonymityEstimator::new(ms(1000));
        let mut pool = 0;
        let mut seen_between = false;
        for t in 0..4000u64 {
            let want = if t < 2000 { 4 } else { 64 };
            while pool < want {
                e.on_arrival(at(t));
                pool += 1;
            }
            e.on_departure(at(t));
            e.on_arrival(at(t));
            let v = e.estimate(at(t));
            if t == 1999 {
                assert!((v - 2.0).abs() < 1e-9, "{v}");
            }
            if (2000..3000).contains(&t) && v > 2.5 && v < 5.5 {
                seen_between = true;
            }
        }
        assert!(seen_between);
        assert!((e.estimate(at(4000)) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn a_virtual_poisson_mix_matches_littles_law() {
        // Arrivals every 1 ms, exponential delays of mean 32 ms: the pool holds about 32
        // (Little's law), so departures see about log2(32) = 5 bits, a little less because
        // the pool fluctuates (Jensen).
        let mut rng = StdRng::seed_from_u64(7);
        let mut q = MixQueue::new(100_000);
        let mut e = AnonymityEstimator::new(ms(5000));
        for t in 0..20_000u64 {
            let now = at(t);
            while let Some((_, ())) = q.pop_ready(now) {
                e.on_departure(now);
            }
            q.push(now, (), sample_delay(&mut rng, ms(32), ms(10_000)))
                .unwrap();
            e.on_arrival(now);
        }
        let v = e.estimate(at(20_000));
        assert!((4.5..5.2).contains(&v), "{v}");
        assert_eq!(e.pool(), q.len());
    }
}
