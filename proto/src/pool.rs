//! The mixing pool a relay holds packets in: a continuous-time queue (each packet leaves at
//! its own delay) or batch rounds. One type for the relay's scheduler and the simulator.

use std::time::Duration;

use crate::batch::{BatchConfig, BatchQueue};
use crate::queue::MixQueue;
use crate::{Error, Timestamp};

/// A relay's mixing pool.
pub enum Pool<T> {
    /// Continuous-time mixing: each packet leaves at its arrival plus its own delay.
    Poisson(MixQueue<T>),
    /// Batch rounds: packets leave together, shuffled, at each round with enough of them.
    Batch(BatchQueue<T>),
}

impl<T> Pool<T> {
    /// A continuous-time pool of at most `capacity` packets.
    pub fn poisson(capacity: usize) -> Self {
        Pool::Poisson(MixQueue::new(capacity))
    }

    /// A batch pool whose first round starts at `now`.
    pub fn batch(now: Timestamp, cfg: BatchConfig) -> Self {
        Pool::Batch(BatchQueue::new(now, cfg))
    }

    /// Whether a packet's own delay matters (batch rounds ignore it: the cap was checked
    /// when the packet was processed).
    pub fn uses_delays(&self) -> bool {
        matches!(self, Pool::Poisson(_))
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        match self {
            Pool::Poisson(q) => q.len(),
            Pool::Batch(b) => b.len(),
        }
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take a packet that arrived at `arrival` with its requested `delay`. Returns when it
    /// leaves in a continuous-time pool (`None` for a batch pool: at a round), or
    /// [`Error::QueueFull`] / [`Error::BatchFull`].
    pub fn push(
        &mut self,
        arrival: Timestamp,
        item: T,
        delay: Duration,
    ) -> Result<Option<Timestamp>, Error> {
        match self {
            Pool::Poisson(q) => q.push(arrival, item, delay).map(Some),
            Pool::Batch(b) => b.push(item).map(|()| None),
        }
    }

    /// When the pool must be looked at next: the next packet's release, or the next round.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Pool::Poisson(q) => q.poll_timeout(),
            Pool::Batch(b) => Some(b.poll_timeout()),
        }
    }

    /// Drop every packet held (at shutdown); returns how many.
    pub fn drain(&mut self) -> usize {
        match self {
            Pool::Poisson(q) => q.drain().count(),
            Pool::Batch(b) => b.drain().count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_poisson_pool_says_when_each_packet_leaves_and_a_batch_pool_when_its_round_is() {
        let mut p: Pool<u32> = Pool::poisson(2);
        assert!(p.uses_delays());
        assert_eq!(
            p.push(at(10), 1, Duration::from_millis(5)).unwrap(),
            Some(at(15))
        );
        assert_eq!(
            p.push(at(10), 2, Duration::from_millis(1)).unwrap(),
            Some(at(11))
        );
        assert!(matches!(
            p.push(at(10), 3, Duration::ZERO),
            Err(Error::QueueFull { capacity: 2 })
        ));
        assert_eq!(p.poll_timeout(), Some(at(11)));
        assert_eq!(p.drain(), 2);
        assert!(p.is_empty());

        let cfg = BatchConfig {
            round: Duration::from_millis(100),
            min_packets: 1,
            capacity: 4,
        };
        let mut b: Pool<u32> = Pool::batch(at(0), cfg);
        assert!(!b.uses_delays());
        assert_eq!(b.push(at(10), 1, Duration::from_secs(9)).unwrap(), None);
        assert_eq!(b.poll_timeout(), Some(at(100)));
        assert_eq!(b.len(), 1);
    }
}
