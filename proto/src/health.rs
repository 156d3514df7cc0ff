//! Which relays a client should route around, judged from its own loop cover.
//!
//! A client's loop packets cross one mix of each layer and come back to it. When a relay
//! dies or drops packets, the loops through it stop coming back while the loops through
//! its siblings still do. [`RelayHealth`] keeps the recent loop outcomes (the route, and
//! whether the loop came back in time) and names the **suspects**: relays whose recent
//! loops are mostly lost, and lost far more often than the loops that avoid them.
//!
//! Blame is explained away one relay at a time: the relay whose loss stands out most is
//! named first, then loops through it are set aside before the next is judged. So a mix
//! that is merely on the same loops as a dead one (in another layer) is not blamed for
//! their loss, and two dead mixes in different layers are both found. When loops are lost
//! whatever their route (the client's own link or gateway is down, or the whole network is
//! overloaded), nobody stands out and nobody is named: avoiding relays would not help, and
//! would only narrow the client's routes. A suspect stays one until its loss falls well
//! below the naming threshold (hysteresis), so the set does not flap on chance.
//!
//! Route choice ([`crate::Topology::choose_route_avoiding`]) leaves suspects out of the
//! client's real packets, SURBs and drop cover (which fills payload slots too, so real and
//! payload-cover packets keep one route distribution), while its loops keep crossing every
//! relay: they keep the evidence fresh, so a relay that comes back is cleared within
//! seconds, and one that stays dead stays avoided. Evidence older than
//! [`HealthConfig::window`] is forgotten. What an adversary who drops a client's packets at
//! chosen relays can do with this is in `doc/THREAT_MODEL.md`.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::{NodeId, Timestamp};

/// Thresholds of [`RelayHealth`].
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Outcomes older than this are forgotten.
    pub window: Duration,
    /// Most outcomes kept (the oldest go first).
    pub max_outcomes: usize,
    /// A relay is judged on its most recent loops, at most this many (against twice as many
    /// recent loops that avoid it)...
    pub recent: u32,
    /// ...and on at least this many of each (at least 1).
    pub min_samples: u32,
    /// To be named, a relay lost at least this share of its recent loops...
    pub suspect_loss: f64,
    /// ...and that share exceeds the loss of the loops that avoid it by at least this many
    /// standard errors (a two-proportion z-test, pooled): chance, under loss that strikes
    /// every route alike, rarely goes past 3.
    pub min_z: f64,
    /// A suspect stays one while its loss is at least this...
    pub keep_loss: f64,
    /// ...and its z at least this.
    pub keep_z: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: Duration::from_secs(30),
            max_outcomes: 512,
            recent: 16,
            min_samples: 4,
            suspect_loss: 0.75,
            min_z: 3.0,
            keep_loss: 0.5,
            keep_z: 2.0,
        }
    }
}

#[derive(Clone, Debug)]
struct Outcome {
    key: u64,
    at: Timestamp,
    relays: Vec<NodeId>,
    delivered: bool,
}

/// Recent loop outcomes and the relays they point at. Sans-IO: time is passed in.
#[derive(Clone, Debug)]
pub struct RelayHealth {
    config: HealthConfig,
    outcomes: VecDeque<Outcome>,
    suspects: BTreeSet<NodeId>,
}

impl Default for RelayHealth {
    fn default() -> Self {
        RelayHealth::new(HealthConfig::default())
    }
}

impl RelayHealth {
    /// No outcomes yet, nobody suspected.
    pub fn new(config: HealthConfig) -> Self {
        RelayHealth {
            config,
            outcomes: VecDeque::new(),
            suspects: BTreeSet::new(),
        }
    }

    /// Record whether the loop `key` (any number unique to that loop) through `route` came
    /// back. Recording the same key again replaces its outcome (a loop judged lost that
    /// comes back late). Returns true when the suspects changed.
    pub fn record(&mut self, now: Timestamp, key: u64, route: &[NodeId], delivered: bool) -> bool {
        if let Some(o) = self.outcomes.iter_mut().find(|o| o.key == key) {
            o.delivered = delivered;
        } else {
            let mut relays = route.to_vec();
            relays.sort_unstable();
            relays.dedup();
            self.outcomes.push_back(Outcome {
                key,
                at: now,
                relays,
                delivered,
            });
            while self.outcomes.len() > self.config.max_outcomes {
                self.outcomes.pop_front();
            }
        }
        self.expire_only(now);
        self.judge()
    }

    /// Forget outcomes that left the window. Returns true when the suspects changed.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        if self.expire_only(now) {
            self.judge()
        } else {
            false
        }
    }

    fn expire_only(&mut self, now: Timestamp) -> bool {
        let before = self.outcomes.len();
        while self
            .outcomes
            .front()
            .is_some_and(|o| now.saturating_duration_since(o.at) > self.config.window)
        {
            self.outcomes.pop_front();
        }
        self.outcomes.len() != before
    }

    /// The relays to route around now.
    pub fn suspects(&self) -> &BTreeSet<NodeId> {
        &self.suspects
    }

    /// Whether `id` is a suspect.
    pub fn is_suspect(&self, id: &NodeId) -> bool {
        self.suspects.contains(id)
    }

    /// Outcomes currently kept.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether no outcome is kept.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    fn judge(&mut self) -> bool {
        let recent = u64::from(self.config.recent.max(1));
        let min = u64::from(self.config.min_samples.max(1));
        let mut named = BTreeSet::new();
        loop {
            // Loops that avoid every suspect named so far.
            let clear: Vec<&Outcome> = self
                .outcomes
                .iter()
                .filter(|o| !o.relays.iter().any(|r| named.contains(r)))
                .collect();
            let relays: BTreeSet<NodeId> = clear
                .iter()
                .flat_map(|o| o.relays.iter().copied())
                .collect();
            // (relay, z, loss)
            let mut best: Option<(NodeId, f64, f64)> = None;
            for id in relays {
                // Its most recent loops, and twice as many of those that avoid it.
                let (mut n, mut lost, mut others, mut others_lost) = (0u64, 0u64, 0u64, 0u64);
                for o in clear.iter().rev() {
                    if o.relays.contains(&id) {
                        if n < recent {
                            n += 1;
                            lost += u64::from(!o.delivered);
                        }
                    } else if others < 2 * recent {
                        others += 1;
                        others_lost += u64::from(!o.delivered);
                    }
                    if n >= recent && others >= 2 * recent {
                        break;
                    }
                }
                if n < min || others < min {
                    continue;
                }
                let loss = lost as f64 / n as f64;
                let z = z_score(lost, n, others_lost, others);
                let (need_loss, need_z) = if self.suspects.contains(&id) {
                    (self.config.keep_loss, self.config.keep_z)
                } else {
                    (self.config.suspect_loss, self.config.min_z)
                };
                // Written so that NaN names nobody.
                if !(loss >= need_loss && z >= need_z) {
                    continue;
                }
                if best.is_none_or(|(_, bz, bl)| z > bz || (z == bz && loss > bl)) {
                    best = Some((id, z, loss));
                }
            }
            match best {
                Some((id, _, _)) => {
                    named.insert(id);
                }
                None => break,
            }
        }
        let changed = named != self.suspects;
        self.suspects = named;
        changed
    }
}

/// How many standard errors loss share `a/n` lies above `b/m` (pooled two-proportion
/// z-test); 0 when the pooled share is 0 or 1 (every loop lost, or none: no difference).
fn z_score(a: u64, n: u64, b: u64, m: u64) -> f64 {
    let (n, m) = (n as f64, m as f64);
    let pooled = (a + b) as f64 / (n + m);
    let var = pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m);
    if var <= 0.0 {
        return 0.0;
    }
    (a as f64 / n - b as f64 / m) / var.sqrt()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(ms))
    }

    /// Loops over gateway 0 and mixes {1,2} x {3,4} x {5,6}, one per 100 ms, alternating
    /// mixes so each combination occurs; `dead` relays lose every loop through them.
    fn feed(h: &mut RelayHealth, from: u64, n: u64, dead: &[u8]) -> bool {
        let mut changed = false;
        for k in from..from + n {
            let route = [
                id(0),
                id(1 + (k % 2) as u8),
                id(3 + ((k / 2) % 2) as u8),
                id(5 + ((k / 4) % 2) as u8),
                id(0),
            ];
            let delivered = !route.iter().any(|r| dead.contains(&r.as_bytes()[0]));
            changed |= h.record(at(k * 100), k, &route, delivered);
        }
        changed
    }

    /// Random loops over gateway 0 and `per_layer` mixes in each of 3 layers (layer l's
    /// mixes are 10*l + 0..per_layer), one per 100 ms from `from`, crossing every mix as
    /// the client's loops do. Returns, per loop, the suspects after it.
    fn random_feed(
        h: &mut RelayHealth,
        rng: &mut StdRng,
        from: u64,
        n: u64,
        per_layer: u8,
        dead: &[u8],
    ) -> Vec<BTreeSet<NodeId>> {
        let mut seen = Vec::new();
        for k in from..from + n {
            let mut route = vec![id(0)];
            for l in 1..=3u8 {
                let all: Vec<u8> = (0..per_layer).map(|j| 10 * l + j).collect();
                route.push(id(all[(rng.next_u64() % all.len() as u64) as usize]));
            }
            route.push(id(0));
            let delivered = !route.iter().any(|r| dead.contains(&r.as_bytes()[0]));
            h.record(at(k * 100), k, &route, delivered);
            seen.push(h.suspects().clone());
        }
        seen
    }

    fn set(ids: &[u8]) -> BTreeSet<NodeId> {
        ids.iter().map(|&i| id(i)).collect()
    }

    #[test]
    fn a_dead_mix_is_named_and_only_it() {
        let mut h = RelayHealth::default();
        assert!(!feed(&mut h, 0, 40, &[]));
        assert!(h.suspects().is_empty());
        assert!(feed(&mut h, 40, 40, &[4]));
        assert_eq!(
            h.suspects().iter().copied().collect::<Vec<_>>(),
            vec![id(4)]
        );
        // mixes on the same lost loops (other layers) and the gateway are not blamed
        assert!(!h.is_suspect(&id(1)) && !h.is_suspect(&id(6)) && !h.is_suspect(&id(0)));
    }

    #[test]
    fn two_dead_mixes_in_different_layers_are_both_named() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[2, 5]);
        assert_eq!(h.suspects(), &set(&[2, 5]));
    }

    #[test]
    fn with_random_routes_the_dead_are_named_steadily_and_nobody_else() {
        // two dead mixes in different layers, 2 and 3 mixes per layer, several seeds
        for (per_layer, dead) in [(2u8, [10u8, 31u8]), (3, [12, 21])] {
            for seed in 0..5 {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut h = RelayHealth::default();
                let seen = random_feed(&mut h, &mut rng, 0, 1000, per_layer, &dead);
                let want = set(&dead);
                // after a warm-up of 10 s of loops: always exactly the dead, no flapping
                let wrong = seen[100..].iter().filter(|s| **s != want).count();
                assert_eq!(
                    wrong, 0,
                    "seed {seed}, {per_layer} per layer: {wrong} of 900 judgements differ"
                );
            }
        }
    }

    #[test]
    fn a_mix_that_comes_back_is_cleared_within_seconds() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut h = RelayHealth::default();
        // 30 s dead (loops keep crossing it, as the client's do), then alive again
        let dead = random_feed(&mut h, &mut rng, 0, 300, 2, &[21]);
        assert!(dead[100..].iter().all(|s| *s == set(&[21])));
        let alive = random_feed(&mut h, &mut rng, 300, 300, 2, &[]);
        let cleared = alive.iter().position(|s| s.is_empty()).unwrap();
        // about 9 returns through it (keep_loss 0.5 of its last 16), some 18 loops
        assert!(cleared <= 60, "cleared only after {cleared} loops");
        assert!(alive[cleared..].iter().all(|s| s.is_empty()), "named again");
    }

    #[test]
    fn when_everything_is_lost_nobody_is_named() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[0]);
        assert!(h.suspects().is_empty());
        // nor when most loops are lost whatever the route (overload), random routes
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut h = RelayHealth::default();
            let mut ever = 0;
            for k in 0..1000u64 {
                let route = [
                    id(0),
                    id(10 + (rng.next_u64() % 2) as u8),
                    id(20 + (rng.next_u64() % 2) as u8),
                    id(30 + (rng.next_u64() % 2) as u8),
                    id(0),
                ];
                h.record(at(k * 100), k, &route, rng.next_u64() % 3 == 0);
                ever += usize::from(!h.suspects().is_empty());
            }
            assert!(ever <= 10, "seed {seed}: someone named in {ever} of 1000");
        }
    }

    #[test]
    fn too_few_loops_name_nobody() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 3, &[4]);
        assert!(h.suspects().is_empty());
        // nor, with a config that asks for no samples at all, the gateway on every lost
        // loop (nothing avoids it to compare with)
        let mut h = RelayHealth::new(HealthConfig {
            min_samples: 0,
            ..HealthConfig::default()
        });
        feed(&mut h, 0, 20, &[0]);
        assert!(h.suspects().is_empty());
    }

    #[test]
    fn a_relay_that_comes_back_is_cleared_once_the_evidence_ages() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[4]);
        assert!(h.is_suspect(&id(4)));
        // it works again: fresh loops through it return, the old losses leave the window
        feed(&mut h, 80, 700, &[]);
        assert!(h.suspects().is_empty());
        // and outcomes are bounded
        assert!(h.len() <= HealthConfig::default().max_outcomes);
    }

    #[test]
    fn expiry_alone_clears_a_suspect() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[4]);
        assert!(h.is_suspect(&id(4)));
        assert!(h.expire(at(80 * 100 + 31_000)));
        assert!(h.suspects().is_empty() && h.is_empty());
    }

    #[test]
    fn a_late_return_replaces_the_loss() {
        let mut h = RelayHealth::default();
        let route = [id(0), id(1), id(3), id(5), id(0)];
        for k in 0..8 {
            h.record(at(k), k, &route, false);
        }
        assert_eq!(h.len(), 8);
        for k in 0..8 {
            h.record(at(100 + k), k, &route, true);
        }
        assert_eq!(h.len(), 8);
        assert!(h.suspects().is_empty());
    }
}
