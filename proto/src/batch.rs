//! The mix queue of a batch-round mix: packets are collected for a round of fixed length; at
//! each round boundary every held packet leaves at once, in a uniformly random order. A round
//! never leaves with fewer than `min_packets`: the driver tops the round up with cover packets
//! (see [`BatchQueue::deficit`]) so that even at low traffic each output hides among at least
//! `min_packets` inputs. Time and randomness are passed in; the queue never reads a clock.

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::error::Constraint;
use crate::{Error, Timestamp};

/// The parameters of a batch-round mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// The length of a round: packets leave at each multiple of it after the start.
    pub round: Duration,
    /// The floor `k`: no round leaves with fewer packets (cover makes up the difference).
    pub min_packets: usize,
    /// The most packets held; beyond it the newest is refused.
    pub capacity: usize,
}

impl BatchConfig {
    /// Check that the configuration can ever release a round: the capacity must hold at least
    /// `min_packets` packets.
    pub fn validate(&self) -> Result<(), Error> {
        if self.capacity < self.min_packets.max(1) {
            return Err(Error::Invalid {
                field: "batch.capacity",
                reason: Constraint::AtLeast {
                    got: self.capacity as u64,
                    min: self.min_packets.max(1) as u64,
                },
            });
        }
        Ok(())
    }
}

/// Packets waiting for the end of the current round; bounded.
pub struct BatchQueue<T> {
    cfg: BatchConfig,
    items: Vec<T>,
    boundary: Timestamp,
}

impl<T> BatchQueue<T> {
    /// A queue whose first round ends `cfg.round` after `now`.
    pub fn new(now: Timestamp, cfg: BatchConfig) -> Self {
        BatchQueue {
            cfg,
            items: Vec::new(),
            boundary: now + cfg.round,
        }
    }

    /// The configuration this queue runs with.
    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// Hold `item` until the next round leaves. When full, the new item is refused (and the
    /// caller counts the drop).
    pub fn push(&mut self, item: T) -> Result<(), Error> {
        if self.items.len() >= self.cfg.capacity {
            return Err(Error::BatchFull {
                capacity: self.cfg.capacity,
            });
        }
        self.items.push(item);
        Ok(())
    }

    /// The next round boundary: when [`BatchQueue::pop_round`] should be called.
    pub fn poll_timeout(&self) -> Timestamp {
        self.boundary
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many cover packets must be pushed before the round may leave (0 when the floor is
    /// already met).
    pub fn deficit(&self) -> usize {
        self.cfg.min_packets.saturating_sub(self.items.len())
    }

    /// At or after the round boundary, with at least `min_packets` held: every held item, in a
    /// uniformly random order, and the next boundary is set one round later (or one round
    /// after `now` when the driver is so late that boundary would already have passed, so a
    /// late driver never sees a burst of empty rounds). Otherwise `None`: before the boundary,
    /// or when the floor is not met (push [`BatchQueue::deficit`] cover packets and call again).
    /// A round with `min_packets == 0` and nothing held leaves as an empty batch.
    pub fn pop_round<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> Option<Vec<T>> {
        if now < self.boundary || self.items.len() < self.cfg.min_packets {
            return None;
        }
        let mut round = std::mem::take(&mut self.items);
        round.shuffle(rng);
        let next = self.boundary + self.cfg.round;
        self.boundary = if next > now {
            next
        } else {
            now + self.cfg.round
        };
        Some(round)
    }

    /// Remove everything still held (at shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.items.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn at(n: u64) -> Timestamp {
        Timestamp::ZERO + ms(n)
    }
    fn cfg(round: u64, k: usize, cap: usize) -> BatchConfig {
        BatchConfig {
            round: ms(round),
            min_packets: k,
            capacity: cap,
        }
    }

    #[test]
    fn boundaries_on_a_virtual_clock() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut q = BatchQueue::new(at(5), cfg(100, 0, 10));
        assert_eq!(q.poll_timeout(), at(105));
        q.push(1).unwrap();
        assert_eq!(
            q.pop_round(at(104), &mut rng),
            None,
            "not before the boundary"
        );
        assert_eq!(q.pop_round(at(105), &mut rng), Some(vec![1]));
        assert_eq!(q.poll_timeout(), at(205));
        // A slightly late driver keeps the grid.
        assert_eq!(q.pop_round(at(230), &mut rng), Some(vec![]));
        assert_eq!(q.poll_timeout(), at(305));
        // A driver late by several rounds: the next boundary is one round after now.
        assert_eq!(q.pop_round(at(1000), &mut rng), Some(vec![]));
        assert_eq!(q.poll_timeout(), at(1100));
        assert_eq!(q.pop_round(at(1050), &mut rng), None);
    }

    #[test]
    fn no_round_leaves_below_the_floor() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut q = BatchQueue::new(at(0), cfg(10, 5, 100));
        let mut t = 0;
        let mut rounds = 0;
        for step in 0..200u64 {
            // A trickle of real packets: 0 to 3 per round.
            for i in 0..(step % 4) {
                q.push(step * 10 + i).unwrap();
            }
            t += 10;
            match q.pop_round(at(t), &mut rng) {
                Some(r) => {
                    assert!(r.len() >= 5);
                    rounds += 1;
                }
                None => {
                    let d = q.deficit();
                    assert_eq!(d, 5 - q.len());
                    for c in 0..d {
                        q.push(1_000_000 + c as u64).unwrap();
                    }
                    assert_eq!(q.deficit(), 0);
                    let r = q.pop_round(at(t), &mut rng).expect("topped up");
                    assert!(r.len() >= 5);
                    rounds += 1;
                }
            }
        }
        assert_eq!(rounds, 200);
        assert!(q.is_empty());
    }

    #[test]
    fn round_order_is_a_uniform_shuffle() {
        // Over many rounds of 8 items, each input position lands in each output position
        // about 1/8 of the time (chi-square over the 64 cells), and arrival order is rare.
        let n = 8usize;
        let rounds = 8000;
        let mut rng = StdRng::seed_from_u64(3);
        let mut q = BatchQueue::new(at(0), cfg(1, 0, n));
        let mut counts = vec![vec![0u32; n]; n];
        let mut identity = 0;
        for r in 0..rounds {
            for i in 0..n {
                q.push(i).unwrap();
            }
            let out = q.pop_round(at(r as u64 + 1), &mut rng).expect("round");
            if out.iter().enumerate().all(|(p, &i)| p == i) {
                identity += 1;
            }
            for (pos, &i) in out.iter().enumerate() {
                counts[i][pos] += 1;
            }
        }
        let expected = rounds as f64 / n as f64;
        let chi2: f64 = counts
            .iter()
            .flatten()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 49 degrees of freedom: the 99.9th percentile is about 85.4.
        assert!(chi2 < 85.4, "chi2 {chi2}");
        assert!(identity < 10, "arrival order kept {identity} times");
    }

    #[test]
    fn refuses_the_newest_when_full() {
        let mut q = BatchQueue::new(at(0), cfg(10, 0, 2));
        q.push('a').unwrap();
        q.push('b').unwrap();
        assert!(matches!(q.push('c'), Err(Error::BatchFull { capacity: 2 })));
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain().collect::<Vec<_>>(), vec!['a', 'b']);
        assert!(cfg(10, 3, 2).validate().is_err());
        assert!(cfg(10, 3, 3).validate().is_ok());
    }
}
