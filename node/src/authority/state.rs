//! What an authority holds: the relays' descriptors, the votes and the documents of the
//! kept rounds, and the round clock. The operations on it are in the sibling files.

use std::collections::{BTreeMap, HashMap};

use lethe_proto::consensus::SignedVote;
use lethe_proto::topology::NodeDescriptor;
use lethe_proto::{Key32, NodeId, SignedDescriptor, SignedTopology};

use crate::config::AuthoritySection;

/// A relay's descriptor as this authority holds it.
pub(super) struct Held {
    pub(super) signed: SignedDescriptor,
    pub(super) desc: NodeDescriptor,
    /// Last upload (Unix seconds).
    pub(super) seen: u64,
    /// Last time the relay answered a probe.
    pub(super) reached: Option<u64>,
    /// Last time a probe was started.
    pub(super) probed: Option<u64>,
}

/// In-memory state of the authority. Every method takes the time as Unix seconds; nothing
/// here reads a clock or does I/O.
pub struct AuthorityState {
    pub(super) params: AuthoritySection,
    pub(super) secret: [u8; 32],
    pub(super) me: Key32,
    pub(super) peer_keys: Vec<Key32>,
    pub(super) nodes: HashMap<NodeId, Held>,
    /// Which relay holds each certificate hash.
    pub(super) certs: HashMap<Key32, NodeId>,
    /// Verified votes per round, by authority (this one's included).
    pub(super) votes: BTreeMap<u64, HashMap<Key32, Vec<(NodeDescriptor, SignedDescriptor)>>>,
    /// This authority's own signed vote per round.
    pub(super) own_votes: BTreeMap<u64, SignedVote>,
    /// The document computed for each round, with the signatures gathered so far.
    pub(super) docs: BTreeMap<u64, SignedTopology>,
}

impl AuthorityState {
    /// An authority signing with `secret`, publishing `params`, counting the votes of
    /// `peer_keys`.
    pub fn new(params: AuthoritySection, secret: [u8; 32], peer_keys: Vec<Key32>) -> Self {
        AuthorityState {
            me: lethe_proto::topology::identity_public_key(&secret),
            params,
            secret,
            peer_keys,
            nodes: HashMap::new(),
            certs: HashMap::new(),
            votes: BTreeMap::new(),
            own_votes: BTreeMap::new(),
            docs: BTreeMap::new(),
        }
    }

    pub(super) fn round_secs(&self) -> u64 {
        self.params.vote_interval_secs.max(1)
    }

    /// The voting round at `now`.
    pub fn round_at(&self, now: u64) -> u64 {
        now / self.round_secs()
    }
}
