//! A gateway's mailbox for clients that are offline: bounded per client and in total, and
//! time-limited. It holds destination ids (which the exit gateway knows anyway) and message
//! bytes, never a sender.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::{ClientId, Error, Timestamp};

/// Messages waiting for their clients.
pub struct Mailbox {
    boxes: HashMap<ClientId, VecDeque<(Timestamp, Vec<u8>)>>,
    total: usize,
    per_client: usize,
    max_total: usize,
    ttl: Duration,
}

impl Mailbox {
    /// At most `per_client` messages per client and `max_total` in all, each kept `ttl`.
    pub fn new(per_client: usize, max_total: usize, ttl: Duration) -> Self {
        Mailbox {
            boxes: HashMap::new(),
            total: 0,
            per_client,
            max_total,
            ttl,
        }
    }

    /// Keep `msg` for `client`. When a limit is reached the new message is refused.
    pub fn push(&mut self, now: Timestamp, client: ClientId, msg: Vec<u8>) -> Result<(), Error> {
        if self.total >= self.max_total {
            self.purge(now);
        }
        let q = self.boxes.entry(client).or_default();
        if q.len() >= self.per_client || self.total >= self.max_total {
            return Err(Error::QueueFull {
                capacity: q.len().min(self.per_client),
            });
        }
        q.push_back((now, msg));
        self.total += 1;
        Ok(())
    }

    /// Take every unexpired message for `client`, oldest first, and how many had expired.
    pub fn take(&mut self, now: Timestamp, client: &ClientId) -> (Vec<Vec<u8>>, usize) {
        let Some(q) = self.boxes.remove(client) else {
            return (Vec::new(), 0);
        };
        self.total -= q.len();
        let held = q.len();
        let fresh: Vec<Vec<u8>> = q
            .into_iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= self.ttl)
            .map(|(_, m)| m)
            .collect();
        let expired = held - fresh.len();
        (fresh, expired)
    }

    /// Drop expired messages; returns how many.
    pub fn purge(&mut self, now: Timestamp) -> usize {
        let ttl = self.ttl;
        let mut dropped = 0;
        self.boxes.retain(|_, q| {
            while let Some((t, _)) = q.front() {
                if now.saturating_duration_since(*t) > ttl {
                    q.pop_front();
                    dropped += 1;
                } else {
                    break;
                }
            }
            !q.is_empty()
        });
        self.total -= dropped;
        dropped
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn bounded_per_client_and_in_total_and_expires() {
        let a = ClientId::from_bytes([1; 32]);
        let b = ClientId::from_bytes([2; 32]);
        let c = ClientId::from_bytes([3; 32]);
        let mut m = Mailbox::new(2, 3, Duration::from_secs(10));
        m.push(at(0), a, b"a1".to_vec()).unwrap();
        m.push(at(1), a, b"a2".to_vec()).unwrap();
        assert!(m.push(at(1), a, b"a3".to_vec()).is_err(), "per-client cap");
        m.push(at(2), b, b"b1".to_vec()).unwrap();
        assert!(m.push(at(2), c, b"c1".to_vec()).is_err(), "total cap");
        assert_eq!(m.len(), 3);
        // a1 expired at 11, a2 still fresh
        assert_eq!(m.take(at(11), &a), (vec![b"a2".to_vec()], 1));
        assert_eq!(m.len(), 1);
        assert_eq!(m.take(at(11), &a), (vec![], 0));
        assert_eq!(m.purge(at(100)), 1);
        assert!(m.is_empty());
        // a full mailbox makes room by purging expired messages first
        let mut m = Mailbox::new(5, 1, Duration::from_secs(1));
        m.push(at(0), a, vec![]).unwrap();
        m.push(at(5), b, vec![]).unwrap();
        assert_eq!(m.len(), 1);
    }
}
