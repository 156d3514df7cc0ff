//! A client's loop cover bookkeeping (sans-IO): which loops are in flight, which came back,
//! which are late (lost for route choice) or past their deadline (lost for the stats), how
//! late loops usually are, and which relays the client should route around
//! ([`RelayHealth`]). Time is passed in; the driver logs what changed.
//!
//! Loop messages are an id and its keyed hash under the client's secret, so the client
//! knows its own loops (even from an earlier run, waiting in its mailbox) and nobody else
//! can make one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rand::Rng;

use crate::{NodeId, RelayHealth, Timestamp};

/// Length of a loop or drop cover message: an id and filler.
pub const COVER_MESSAGE_LEN: usize = 64;
/// A loop not back after this long (on top of its own hop delays) is counted as lost.
pub const LOOP_DEADLINE: Duration = Duration::from_secs(20);
/// For route choice ([`RelayHealth`]) a loop not back after its own hop delays plus this
/// long (or plus the usual lateness of this client's loops and four times its deviation,
/// if that is longer: batch mixes and busy links are slow, not dead) already counts as
/// lost; if it comes back later, it counts as returned.
pub const LOOP_LATE: Duration = Duration::from_secs(2);

/// Loop cover packets sent, returned and lost, in all and per relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loops sent.
    pub sent: u64,
    /// Loops that came back.
    pub returned: u64,
    /// Loops that did not come back in time.
    pub lost: u64,
    /// For each relay: (loops through it that were judged, of which lost).
    pub per_relay: HashMap<NodeId, (u64, u64)>,
    /// Loops of an earlier run (or judged lost, then late) that came back.
    pub stale: u64,
    /// Round-trip time of the last loop that came back.
    pub last_rtt: Option<Duration>,
}

struct PendingLoop {
    /// Its key in the [`RelayHealth`] record.
    key: u64,
    sent: Timestamp,
    /// Its hops' delays added up.
    total: Duration,
    /// When it counts as lost for route choice...
    late: Timestamp,
    judged_late: bool,
    /// ...and for [`LoopStats`].
    deadline: Timestamp,
    route: Vec<NodeId>,
}

/// What a message turned out to be ([`LoopTracker::returned`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returned {
    /// Not one of ours: a message for the application.
    NotALoop,
    /// One of ours that was in flight.
    Ours,
    /// One of ours from an earlier run, or already past its deadline.
    Stale,
}

/// The loops of one client.
pub struct LoopTracker {
    key: [u8; 32],
    pending: HashMap<[u8; 32], PendingLoop>,
    stats: LoopStats,
    relays: RelayHealth,
    next_key: u64,
    /// How late returning loops are beyond their hop delays: smoothed mean and mean
    /// deviation in seconds (as RFC 6298 smooths round-trip times).
    lateness: Option<(f64, f64)>,
    /// How many times the set of avoided relays changed.
    changes: u64,
}

impl LoopTracker {
    /// A tracker whose loop messages are keyed with the client secret `key`.
    pub fn new(key: [u8; 32]) -> Self {
        LoopTracker {
            key,
            pending: HashMap::new(),
            stats: LoopStats::default(),
            relays: RelayHealth::default(),
            next_key: 0,
            lateness: None,
            changes: 0,
        }
    }

    /// How long after its hop delays a loop counts as lost for route choice.
    pub fn late_after(&self) -> Duration {
        let usual = self
            .lateness
            // Well inside LOOP_DEADLINE, so every loop is judged before it is forgotten.
            .map_or(0.0, |(mean, dev)| {
                (mean + 4.0 * dev).min(LOOP_DEADLINE.as_secs_f64() / 2.0)
            });
        LOOP_LATE.max(Duration::from_secs_f64(usual))
    }

    fn note_lateness(&mut self, late: Duration) {
        let x = late.as_secs_f64();
        self.lateness = Some(match self.lateness {
            None => (x, x / 2.0),
            Some((mean, dev)) => (
                mean + (x - mean) / 8.0,
                dev + ((x - mean).abs() - dev) / 4.0,
            ),
        });
    }

    /// Record an outcome for route choice; returns whether the avoided relays changed.
    fn judge(&mut self, now: Timestamp, key: u64, route: &[NodeId], delivered: bool) -> bool {
        let changed = self.relays.record(now, key, route, delivered);
        self.changes += u64::from(changed);
        changed
    }

    /// A fresh loop message: its id and the message (id, keyed hash of the id).
    pub fn message<R: Rng + ?Sized>(&self, rng: &mut R) -> ([u8; 32], [u8; COVER_MESSAGE_LEN]) {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let mut msg = [0u8; COVER_MESSAGE_LEN];
        msg[..32].copy_from_slice(&id);
        msg[32..].copy_from_slice(blake3::keyed_hash(&self.key, &id).as_bytes());
        (id, msg)
    }

    /// A loop left at `now` along `route`; its hops' delays add up to `total`.
    pub fn sent(&mut self, now: Timestamp, id: [u8; 32], route: Vec<NodeId>, total: Duration) {
        self.next_key += 1;
        let late_after = self.late_after();
        self.pending.insert(
            id,
            PendingLoop {
                key: self.next_key,
                sent: now,
                total,
                late: now + total + late_after,
                judged_late: false,
                deadline: now + total + LOOP_DEADLINE,
                route,
            },
        );
        self.stats.sent += 1;
    }

    /// Whether `msg`, arrived at `now`, is one of our loops (then counted), and whether the
    /// avoided relays changed.
    pub fn returned(&mut self, now: Timestamp, msg: &[u8]) -> (Returned, bool) {
        if msg.len() != COVER_MESSAGE_LEN {
            return (Returned::NotALoop, false);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&msg[..32]);
        // blake3::Hash compares in constant time.
        if blake3::keyed_hash(&self.key, &id) != msg[32..] {
            return (Returned::NotALoop, false);
        }
        let Some(p) = self.pending.remove(&id) else {
            self.stats.stale += 1;
            return (Returned::Stale, false);
        };
        self.note_lateness(now.saturating_duration_since(p.sent + p.total));
        let changed = self.judge(now, p.key, &p.route, true);
        let s = &mut self.stats;
        s.returned += 1;
        s.last_rtt = Some(now.saturating_duration_since(p.sent));
        for r in p.route {
            s.per_relay.entry(r).or_default().0 += 1;
        }
        (Returned::Ours, changed)
    }

    /// Judge loops that are late at `now` (lost for route choice) and forget those past
    /// their deadline (lost); returns whether the avoided relays changed.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        let mut changed = false;
        let mut verdicts = Vec::new();
        for p in self.pending.values_mut() {
            if (p.late <= now || p.deadline <= now) && !p.judged_late {
                p.judged_late = true;
                verdicts.push((p.key, p.route.clone()));
            }
        }
        for (key, route) in verdicts {
            changed |= self.judge(now, key, &route, false);
        }
        let mut lost = Vec::new();
        self.pending.retain(|_, p| {
            if p.deadline <= now {
                lost.push(std::mem::take(&mut p.route));
                false
            } else {
                true
            }
        });
        if self.relays.expire(now) {
            self.changes += 1;
            changed = true;
        }
        for route in lost {
            self.stats.lost += 1;
            for r in route {
                let e = self.stats.per_relay.entry(r).or_default();
                e.0 += 1;
                e.1 += 1;
            }
        }
        changed
    }

    /// The relays to avoid at `now` (evidence older than the health window forgotten), and
    /// whether that set just changed.
    pub fn avoided(&mut self, now: Timestamp) -> (BTreeSet<NodeId>, bool) {
        let changed = self.relays.expire(now);
        self.changes += u64::from(changed);
        (self.relays.suspects().clone(), changed)
    }

    /// The relays avoided as of the last judgement.
    pub fn suspects(&self) -> &BTreeSet<NodeId> {
        self.relays.suspects()
    }

    /// How many times the avoided relays changed so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The counts so far.
    pub fn stats(&self) -> &LoopStats {
        &self.stats
    }

    /// Loops in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn loops_are_counted_returned_late_and_lost_on_a_virtual_clock() {
        let mut t = LoopTracker::new([9; 32]);
        let mut rng = StdRng::seed_from_u64(11);
        let a = NodeId::from_bytes([1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        let (id1, msg1) = t.message(&mut rng);
        let (id2, _) = t.message(&mut rng);
        t.sent(at(0), id1, vec![a, b], Duration::from_secs(5));
        t.sent(at(0), id2, vec![a], Duration::ZERO);
        assert_eq!(t.returned(at(5300), &msg1), (Returned::Ours, false));
        assert_eq!(t.stats().last_rtt, Some(Duration::from_millis(5300)));
        assert_eq!(
            t.returned(at(5400), &msg1).0,
            Returned::Stale,
            "a late copy is ours"
        );
        let mut forged = msg1;
        forged[40] ^= 1;
        assert_eq!(t.returned(at(5400), &forged).0, Returned::NotALoop);
        assert_eq!(t.returned(at(5400), &[7; 40]).0, Returned::NotALoop);
        let mut other = LoopTracker::new([8; 32]);
        assert_eq!(other.returned(at(5400), &msg1).0, Returned::NotALoop);
        // id2 (no hop delay) is late after LOOP_LATE (no lateness known beyond 0.3 s).
        assert!(t.late_after() >= LOOP_LATE);
        t.expire(at(5400) + t.late_after());
        assert_eq!(
            (t.stats().lost, t.pending()),
            (0, 1),
            "late: judged, not yet lost"
        );
        t.expire(at(0) + LOOP_DEADLINE + Duration::from_millis(1));
        let s = t.stats();
        assert_eq!((s.sent, s.returned, s.lost, s.stale), (2, 1, 1, 1));
        assert_eq!(s.per_relay[&a], (2, 1));
        assert_eq!(s.per_relay[&b], (1, 0));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn the_usual_lateness_moves_the_late_verdict_but_never_past_half_the_deadline() {
        let mut t = LoopTracker::new([3; 32]);
        let mut rng = StdRng::seed_from_u64(11);
        let r = NodeId::from_bytes([4; 32]);
        // Loops that come back 6 s after their hop delays (a slow batch mix).
        for i in 0..40u64 {
            let (id, msg) = t.message(&mut rng);
            t.sent(at(i * 10_000), id, vec![r], Duration::from_secs(1));
            t.returned(at(i * 10_000 + 7_000), &msg);
        }
        let late = t.late_after();
        assert!(late > Duration::from_secs(5), "{late:?}");
        assert!(late <= LOOP_DEADLINE / 2, "{late:?}");
        assert_eq!(t.stats().lost, 0);
    }
}
