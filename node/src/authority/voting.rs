//! Voting rounds: this authority's vote, its peers' votes, the body they agree on and the
//! signatures gathered over it.

use std::collections::HashMap;

use lethe_proto::consensus::{SignedVote, VoteBody, combine};
use lethe_proto::error::Refusal;
use lethe_proto::topology::{AuthoritySignature, CoverParams, NodeDescriptor};
use lethe_proto::{Key32, SignedDescriptor, SignedTopology, TopologyBody};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::state::AuthorityState;
use super::{AuthorityError, KEEP_ROUNDS, REACHED_WITHIN_SECS};

/// One authority's signature over the body it computed for a round, for its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// JSON text of the body.
    pub body: String,
    /// The authority's signature over it.
    pub signature: AuthoritySignature,
}

impl AuthorityState {
    /// This authority's vote for `round`: made (and kept) at the first call during the
    /// round; none for a round not started yet or no longer kept.
    pub fn own_vote(&mut self, round: u64, now: u64) -> Result<SignedVote, AuthorityError> {
        let current = self.round_at(now);
        if let Some(v) = self.own_votes.get(&round) {
            return Ok(v.clone());
        }
        if round != current {
            return Err(AuthorityError::NoVote { round, current });
        }
        self.expire(now);
        let mut held: Vec<(NodeDescriptor, SignedDescriptor)> = self
            .nodes
            .values()
            .filter(|h| {
                h.reached
                    .is_some_and(|r| now.saturating_sub(r) <= REACHED_WITHIN_SECS)
            })
            .map(|h| (h.desc.clone(), h.signed.clone()))
            .collect();
        held.sort_by_key(|(d, _)| d.id);
        let body = VoteBody {
            network: self.params.network.clone(),
            round,
            descriptors: held.iter().map(|(_, s)| s.clone()).collect(),
        };
        let vote = SignedVote::sign(&body, &self.secret)?;
        self.own_votes.insert(round, vote.clone());
        self.votes.entry(round).or_default().insert(self.me, held);
        self.prune(round);
        Ok(vote)
    }

    fn prune(&mut self, current: u64) {
        let oldest = current.saturating_sub(KEEP_ROUNDS - 1);
        self.votes = self.votes.split_off(&oldest);
        self.own_votes = self.own_votes.split_off(&oldest);
        self.docs = self.docs.split_off(&oldest);
    }

    /// Whether this authority holds `key`'s vote for `round`.
    pub fn has_vote(&self, round: u64, key: &Key32) -> bool {
        self.votes.get(&round).is_some_and(|v| v.contains_key(key))
    }

    /// Take a peer's vote for the current round (or the one before); returns its author.
    pub fn add_peer_held(
        &mut self,
        vote: &SignedVote,
        now: u64,
    ) -> Result<Key32, lethe_proto::Error> {
        let (body, parsed) = vote.verify(&self.peer_keys)?;
        let current = self.round_at(now);
        let refuse = |reason| lethe_proto::Error::Refused {
            what: "vote",
            reason,
        };
        if body.network != self.params.network {
            return Err(refuse(Refusal::OtherNetwork));
        }
        if body.round + 1 < current || body.round > current {
            return Err(refuse(Refusal::NotCurrentRound {
                round: body.round,
                current,
            }));
        }
        let pairs = parsed.into_iter().zip(body.descriptors).collect();
        self.votes
            .entry(body.round)
            .or_default()
            .entry(vote.authority)
            .or_insert(pairs);
        Ok(vote.authority)
    }

    /// Compute and sign the current round's body once every peer's vote is in, or, half a
    /// round after its start, with the votes there are if they are at least `threshold`.
    /// Returns whether a body was made.
    pub fn conclude(&mut self, now: u64) -> Result<bool, AuthorityError> {
        let round = self.round_at(now);
        if self.docs.contains_key(&round) {
            return Ok(false);
        }
        self.own_vote(round, now)?;
        let votes = self.votes.get(&round).map_or(0, HashMap::len);
        let all = votes > self.peer_keys.len();
        let late = now >= round * self.round_secs() + self.round_secs() / 2;
        if votes < self.params.threshold || !(all || late) {
            return Ok(false);
        }
        let held: Vec<Vec<(NodeDescriptor, SignedDescriptor)>> = self
            .votes
            .get(&round)
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default();
        let start = round * self.round_secs();
        let epoch_len = self.params.epoch_secs;
        let body = TopologyBody {
            format: lethe_proto::topology::DIRECTORY_FORMAT,
            network: self.params.network.clone(),
            epoch: start / epoch_len,
            // Deterministic (the round's start), and growing with every round.
            serial: start,
            valid_until: self.valid_until(round),
            epoch_secs: epoch_len,
            mean_delay_ms: self.params.mean_delay_ms,
            max_delay_ms: self.params.max_delay_ms,
            cover: CoverParams {
                payload_mean_ms: self.params.cover_payload_mean_ms,
                loop_mean_ms: self.params.cover_loop_mean_ms,
                drop_mean_ms: self.params.cover_drop_mean_ms,
                mix_loop_mean_ms: self.params.cover_mix_loop_mean_ms,
                downstream_mean_ms: self.params.cover_downstream_mean_ms,
                downstream_strict: self.params.cover_downstream_mode
                    == crate::config::DownstreamModeConfig::Strict,
                exit_payload_mean_ms: self.params.cover_exit_payload_mean_ms,
            },
            nodes: combine(&held, self.params.threshold),
            exits: Vec::new(),
            route_rules: Default::default(),
        };
        debug!(round, votes, relays = body.nodes.len(), "round concluded");
        self.docs
            .insert(round, SignedTopology::sign(&body, &self.secret)?);
        Ok(true)
    }

    /// This authority's signature over its newest body, for its peers.
    pub fn vote(&self) -> Option<Vote> {
        let doc = self.docs.values().next_back()?;
        let signature = doc
            .signatures
            .iter()
            .find(|s| s.authority == self.me)?
            .clone();
        Some(Vote {
            body: doc.body.clone(),
            signature,
        })
    }

    /// Attach a peer's signature to the kept body it signed, if it signed exactly one of
    /// ours; returns whether it was added.
    pub fn add_peer_vote(&mut self, vote: Vote) -> bool {
        if !self.peer_keys.contains(&vote.signature.authority) {
            return false;
        }
        let Some(doc) = self.docs.values_mut().rev().find(|d| d.body == vote.body) else {
            return false;
        };
        if doc
            .signatures
            .iter()
            .any(|s| s.authority == vote.signature.authority)
        {
            return false;
        }
        let mut candidate = doc.clone();
        candidate.signatures.push(vote.signature.clone());
        // Keep it only if it really verifies under that key.
        if candidate.verify(&[vote.signature.authority], 1, 0).is_err() {
            return false;
        }
        doc.signatures.push(vote.signature);
        true
    }
}
