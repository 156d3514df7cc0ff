//! A gateway's mailbox for clients that are offline: bounded per client and in total, in
//! messages and in bytes, and time-limited; when a bound is reached the oldest message goes
//! first, in O(1). It holds destination ids (which the exit gateway knows anyway) and
//! message bytes, never a sender.
//!
//! Every operation is O(1) amortised, so a gateway never holds the mailbox's lock for long
//! however full it is: messages sit in a per-client queue, and one queue of (sequence
//! number, client) in arrival order finds the oldest message overall. Entries of that queue
//! whose message already left (taken by its client, or evicted from its client's queue)
//! are skipped when they reach its front, and the queue is compacted once such entries
//! outnumber the live ones.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::{ClientId, Error, Timestamp};

/// The bounds of a [`Mailbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Messages kept for one client.
    pub per_client: usize,
    /// Bytes kept for one client.
    pub per_client_bytes: usize,
    /// Messages kept in all.
    pub total: usize,
    /// Bytes kept in all.
    pub total_bytes: usize,
    /// How long a message waits.
    pub ttl: Duration,
}

struct Held {
    seq: u64,
    at: Timestamp,
    msg: Vec<u8>,
}

/// One client's messages, oldest first, and their bytes.
#[derive(Default)]
struct ClientBox {
    q: VecDeque<Held>,
    bytes: usize,
}

impl ClientBox {
    fn front(&self) -> Option<&Held> {
        self.q.front()
    }

    fn pop_front(&mut self) -> Option<Held> {
        let h = self.q.pop_front()?;
        self.bytes -= h.msg.len();
        Some(h)
    }
}

/// What a [`Mailbox::push`] did besides keeping the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Older messages dropped to make room (a bound was reached).
    pub evicted: usize,
    /// Messages dropped because they had waited longer than the ttl.
    pub expired: usize,
}

/// Messages waiting for their clients.
pub struct Mailbox {
    boxes: HashMap<ClientId, ClientBox>,
    /// Arrival order over all clients; may hold entries whose message already left.
    order: VecDeque<(u64, ClientId)>,
    next_seq: u64,
    count: usize,
    bytes: usize,
    limits: MailboxLimits,
}

impl Mailbox {
    /// An empty mailbox with these bounds.
    pub fn new(limits: MailboxLimits) -> Self {
        Mailbox {
            boxes: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            count: 0,
            bytes: 0,
            limits,
        }
    }

    /// Keep `msg` for `client`, dropping the oldest messages (the client's own first, then
    /// anyone's) while a bound would be exceeded. Refused only if `msg` alone is larger than
    /// a client's byte bound.
    pub fn push(
        &mut self,
        now: Timestamp,
        client: ClientId,
        msg: Vec<u8>,
    ) -> Result<Pushed, Error> {
        let l = self.limits;
        if msg.len() > l.per_client_bytes.min(l.total_bytes) {
            return Err(Error::QueueFull {
                capacity: l.per_client_bytes.min(l.total_bytes),
            });
        }
        let mut out = Pushed {
            expired: self.expire_front(now),
            ..Pushed::default()
        };
        // The client's own bound: its oldest go first.
        if let Some(q) = self.boxes.get_mut(&client) {
            while !q.q.is_empty()
                && (q.q.len() >= l.per_client || q.bytes + msg.len() > l.per_client_bytes)
            {
                if let Some(h) = q.pop_front() {
                    self.count -= 1;
                    self.bytes -= h.msg.len();
                    out.evicted += 1;
                }
            }
        }
        // The mailbox's bound: the oldest of anyone's go first.
        while self.count > 0 && (self.count >= l.total || self.bytes + msg.len() > l.total_bytes) {
            if self.pop_oldest().is_some() {
                out.evicted += 1;
            } else {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.count += 1;
        self.bytes += msg.len();
        self.order.push_back((seq, client));
        let q = self.boxes.entry(client).or_default();
        q.bytes += msg.len();
        q.q.push_back(Held { seq, at: now, msg });
        self.compact();
        Ok(out)
    }

    /// Take every unexpired message for `client`, oldest first, and how many had expired.
    pub fn take(&mut self, now: Timestamp, client: &ClientId) -> (Vec<Vec<u8>>, usize) {
        let Some(q) = self.boxes.remove(client) else {
            return (Vec::new(), 0);
        };
        self.count -= q.q.len();
        self.bytes -= q.bytes;
        let held = q.q.len();
        let ttl = self.limits.ttl;
        let fresh: Vec<Vec<u8>> =
            q.q.into_iter()
                .filter(|h| now.saturating_duration_since(h.at) <= ttl)
                .map(|h| h.msg)
                .collect();
        let expired = held - fresh.len();
        self.compact();
        (fresh, expired)
    }

    /// Drop expired messages; returns how many. O(expired) plus amortised O(1).
    pub fn purge(&mut self, now: Timestamp) -> usize {
        self.expire_front(now)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the arrival-order entry `(seq, client)` still names a held message: a
    /// client's queue only ever loses its oldest messages, or all of them at once.
    fn live(&self, seq: u64, client: &ClientId) -> bool {
        self.boxes
            .get(client)
            .and_then(|q| q.front())
            .is_some_and(|h| h.seq <= seq)
    }

    /// Drop the oldest held message of anyone; returns its time of arrival.
    fn pop_oldest(&mut self) -> Option<Timestamp> {
        while let Some((seq, client)) = self.order.pop_front() {
            if !self.live(seq, &client) {
                continue;
            }
            let q = self.boxes.get_mut(&client)?;
            let h = q.pop_front()?;
            if q.q.is_empty() {
                self.boxes.remove(&client);
            }
            self.count -= 1;
            self.bytes -= h.msg.len();
            return Some(h.at);
        }
        None
    }

    /// Drop messages at the front of the arrival order that waited longer than the ttl.
    fn expire_front(&mut self, now: Timestamp) -> usize {
        let mut dropped = 0;
        while let Some(&(seq, client)) = self.order.front() {
            if !self.live(seq, &client) {
                self.order.pop_front();
                continue;
            }
            let expired = self
                .boxes
                .get(&client)
                .and_then(|q| q.front())
                .is_some_and(|h| now.saturating_duration_since(h.at) > self.limits.ttl);
            if !expired {
                break;
            }
            self.pop_oldest();
            dropped += 1;
        }
        dropped
    }

    /// Forget arrival-order entries of messages that left, once they outnumber the held
    /// ones (so the work is amortised O(1) per message).
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.count + 64 {
            return;
        }
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter(|(seq, client)| self.live(*seq, client))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs(s)
    }

    fn limits(per_client: usize, total: usize, ttl: u64) -> MailboxLimits {
        MailboxLimits {
            per_client,
            per_client_bytes: usize::MAX,
            total,
            total_bytes: usize::MAX,
            ttl: Duration::from_secs(ttl),
        }
    }

    fn id(i: u8) -> ClientId {
        ClientId::from_bytes([i; 32])
    }

    #[test]
    fn bounded_per_client_and_in_total_oldest_first_and_expires() {
        let (a, b, c) = (id(1), id(2), id(3));
        let mut m = Mailbox::new(limits(2, 3, 10));
        m.push(at(0), a, b"a1".to_vec()).unwrap();
        m.push(at(1), a, b"a2".to_vec()).unwrap();
        let p = m.push(at(1), a, b"a3".to_vec()).unwrap();
        assert_eq!(p.evicted, 1, "per-client cap: a1 goes");
        m.push(at(2), b, b"b1".to_vec()).unwrap();
        let p = m.push(at(2), c, b"c1".to_vec()).unwrap();
        assert_eq!(p.evicted, 1, "total cap: the oldest of anyone (a2) goes");
        assert_eq!(m.len(), 3);
        assert_eq!(m.take(at(2), &a), (vec![b"a3".to_vec()], 0));
        assert_eq!(m.len(), 2);
        assert_eq!(m.take(at(2), &a), (vec![], 0));
        // b1 and c1 expire at 13
        assert_eq!(m.take(at(13), &b), (vec![], 1));
        assert_eq!(m.purge(at(100)), 1);
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn bounded_in_bytes_and_refuses_only_what_can_never_fit() {
        let (a, b) = (id(1), id(2));
        let mut m = Mailbox::new(MailboxLimits {
            per_client: 100,
            per_client_bytes: 10,
            total: 100,
            total_bytes: 15,
            ttl: Duration::from_secs(10),
        });
        m.push(at(0), a, vec![1; 6]).unwrap();
        let p = m.push(at(0), a, vec![2; 6]).unwrap();
        assert_eq!((p.evicted, m.bytes()), (1, 6), "a's bytes: the older goes");
        m.push(at(0), b, vec![3; 6]).unwrap();
        let p = m.push(at(0), b, vec![4; 4]).unwrap();
        assert_eq!((p.evicted, m.bytes()), (1, 10), "total bytes: a's goes");
        assert_eq!(m.take(at(0), &a).0.len(), 0);
        assert!(
            m.push(at(0), a, vec![0; 11]).is_err(),
            "larger than a client may hold"
        );
        assert_eq!(m.take(at(0), &b).0, vec![vec![3; 6], vec![4; 4]]);
    }

    #[test]
    fn a_full_mailbox_costs_each_push_o1_and_the_order_queue_stays_bounded() {
        // 10 000 clients, a mailbox of 1 000: every push evicts one message; taking
        // messages leaves stale entries that compaction removes.
        let mut m = Mailbox::new(limits(5, 1000, 3600));
        for i in 0..200_000u64 {
            let c = ClientId::from_bytes({
                let mut b = [0; 32];
                b[..8].copy_from_slice(&(i % 10_000).to_le_bytes());
                b
            });
            m.push(at(i / 100), c, vec![0; 8]).unwrap();
            if i % 3 == 0 {
                m.take(at(i / 100), &c);
            }
            assert!(m.len() <= 1000);
            assert!(m.order.len() <= 2 * m.len() + 65, "order {}", m.order.len());
        }
        assert!(m.len() > 500);
    }

    #[test]
    fn expiry_is_oldest_first_across_clients() {
        let mut m = Mailbox::new(limits(10, 10, 5));
        m.push(at(0), id(1), vec![1]).unwrap();
        m.push(at(3), id(2), vec![2]).unwrap();
        m.push(at(4), id(1), vec![3]).unwrap();
        let p = m.push(at(7), id(3), vec![4]).unwrap();
        assert_eq!(p.expired, 1);
        assert_eq!(m.len(), 3);
        assert_eq!(m.purge(at(10)), 2);
        assert_eq!(m.take(at(10), &id(3)).0, vec![vec![4]]);
    }
}
