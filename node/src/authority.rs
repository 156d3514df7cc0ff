//! The directory authorities. Relays upload signed descriptors to every authority. Time is
//! cut into voting rounds (`authority.vote_interval_secs`): at the start of each, every
//! authority freezes the descriptors it holds of relays it reached lately into a signed
//! vote (`GET /v1/held/ROUND`) and fetches its peers' votes; the round's body lists a relay
//! when `threshold` votes hold it ([`lethe_proto::consensus::combine`]), so authorities
//! with the same votes sign the same bytes, whatever was uploaded to each of them alone.
//! Each authority then attaches the signatures of peers that signed that same body
//! (`GET /v1/vote`). Clients and relays accept a document only with `threshold` valid
//! signatures of configured authorities, so one authority alone cannot add, drop or change
//! a relay. An authority serves the newest document with `threshold` signatures while it is
//! valid, and never an expired one. Relays are reached over QUIC with their pinned
//! certificate (the `probe` task below): a relay that runs nothing is not listed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe_net::directory::{DESCRIPTORS_PATH, HELD_PATH, TOPOLOGY_PATH, VOTE_PATH};
use lethe_net::{Sensitive, http, unix_now};
use lethe_proto::consensus::{SignedVote, VoteBody, combine};
use lethe_proto::topology::AuthoritySignature;
use lethe_proto::topology::{CoverParams, NodeDescriptor};
use lethe_proto::{Key32, NodeId, SignedDescriptor, SignedTopology, TopologyBody};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::NodeError;
use crate::config::{AuthoritySection, NodeConfig};
use crate::keys::NodeKeys;

/// Most relays one authority lists.
pub const MAX_NODES: usize = 5000;
/// How far in the future a descriptor's publication time may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;
/// A relay reached is probed again after this long.
pub const PROBE_EVERY_SECS: u64 = 10;
/// A relay not reached yet (or not at the last try) is tried again after this long.
pub const PROBE_RETRY_SECS: u64 = 2;
/// A relay is voted for while it was reached within this long (three probes).
pub const REACHED_WITHIN_SECS: u64 = 3 * PROBE_EVERY_SECS;
/// Rounds whose votes and documents are kept.
const KEEP_ROUNDS: u64 = 4;

/// One authority's signature over the body it computed for a round, for its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// JSON text of the body.
    pub body: String,
    /// The authority's signature over it.
    pub signature: AuthoritySignature,
}

/// A relay's descriptor as this authority holds it.
struct Held {
    signed: SignedDescriptor,
    desc: NodeDescriptor,
    /// Last upload (Unix seconds).
    seen: u64,
    /// Last time the relay answered a probe.
    reached: Option<u64>,
    /// Last time a probe was started.
    probed: Option<u64>,
}

/// A relay to probe: where it is and the certificate it must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The relay.
    pub id: NodeId,
    /// Its address.
    pub address: SocketAddr,
    /// Its pinned certificate hash.
    pub cert: Key32,
}

/// Why a request to the authority fails; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// No document has `threshold` signatures and is still valid.
    #[error("no valid document signed by {threshold} authorities yet")]
    NoDocument { threshold: usize },
    /// The requested round has not started here, or is no longer kept.
    #[error("no vote for round {round} (current round {current})")]
    NoVote { round: u64, current: u64 },
    /// Encoding or signing failed.
    #[error(transparent)]
    Proto(#[from] lethe_proto::Error),
}

/// In-memory state of the authority. Every method takes the time as Unix seconds; nothing
/// here reads a clock or does I/O.
pub struct AuthorityState {
    params: AuthoritySection,
    secret: [u8; 32],
    me: Key32,
    peer_keys: Vec<Key32>,
    nodes: HashMap<NodeId, Held>,
    /// Which relay holds each certificate hash.
    certs: HashMap<Key32, NodeId>,
    /// Verified votes per round, by authority (this one's included).
    votes: BTreeMap<u64, HashMap<Key32, Vec<(NodeDescriptor, SignedDescriptor)>>>,
    /// This authority's own signed vote per round.
    own_votes: BTreeMap<u64, SignedVote>,
    /// The document computed for each round, with the signatures gathered so far.
    docs: BTreeMap<u64, SignedTopology>,
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

    fn round_secs(&self) -> u64 {
        self.params.vote_interval_secs.max(1)
    }

    /// The voting round at `now`.
    pub fn round_at(&self, now: u64) -> u64 {
        now / self.round_secs()
    }

    /// Accept a descriptor upload if it is validly self-signed, fresh (published within
    /// the descriptor lifetime, not in the future beyond clock skew), not older than the one
    /// held, and does not claim another relay's certificate. O(1) in the number of relays.
    pub fn register(
        &mut self,
        d: SignedDescriptor,
        now: u64,
    ) -> Result<NodeId, lethe_proto::Error> {
        let desc = d.verify()?;
        let refuse = |reason: &str| lethe_proto::Error::Invalid {
            field: "descriptor",
            reason: reason.into(),
        };
        if desc.published > now + MAX_CLOCK_SKEW_SECS {
            return Err(refuse("published in the future"));
        }
        if desc.published + self.params.descriptor_ttl_secs < now {
            return Err(refuse("stale: published too long ago"));
        }
        let held = self.nodes.get(&desc.id);
        match held {
            Some(h) if desc.published < h.desc.published => {
                return Err(refuse("older than the descriptor held"));
            }
            Some(h) if desc.published == h.desc.published && h.signed != d => {
                return Err(refuse(
                    "conflicts with a different descriptor of the same time",
                ));
            }
            None if self.nodes.len() >= MAX_NODES => {
                return Err(refuse("directory is full"));
            }
            _ => {}
        }
        // A certificate belongs to the relay that answers for it. While its holder is
        // reached, another claim is refused; while it is not (offline, or never shown to
        // hold it), a newcomer may claim it too and the probes decide: only the relay that
        // has the certificate's key and describes itself as this descriptor's relay is
        // reached, so nobody can squat a relay's identity while it is away.
        if let Some(other) = self.certs.get(&desc.tls_cert).copied()
            && other != desc.id
            && self.is_reached(&other, now)
        {
            return Err(refuse("certificate already used by another node"));
        }
        let changed =
            held.is_none_or(|h| h.desc.address != desc.address || h.desc.tls_cert != desc.tls_cert);
        if held.is_none() {
            info!(node = %desc.id.short(), role = ?desc.role, layer = ?desc.layer, "descriptor accepted");
        }
        let (reached, probed) = match held {
            // A relay that moved or changed its certificate is reached anew.
            Some(h) if !changed => (h.reached, h.probed),
            _ => (None, None),
        };
        if let Some(old) = held.filter(|h| h.desc.tls_cert != desc.tls_cert)
            && self.certs.get(&old.desc.tls_cert) == Some(&desc.id)
        {
            self.certs.remove(&old.desc.tls_cert);
        }
        self.certs.insert(desc.tls_cert, desc.id);
        let id = desc.id;
        self.nodes.insert(
            id,
            Held {
                signed: d,
                desc,
                seen: now,
                reached,
                probed,
            },
        );
        Ok(id)
    }

    /// Whether `id` answered a probe lately.
    fn is_reached(&self, id: &NodeId, now: u64) -> bool {
        self.nodes
            .get(id)
            .and_then(|h| h.reached)
            .is_some_and(|r| now.saturating_sub(r) <= REACHED_WITHIN_SECS)
    }

    /// Forget relays not re-registered within the descriptor lifetime.
    fn expire(&mut self, now: u64) {
        let ttl = self.params.descriptor_ttl_secs;
        let certs = &mut self.certs;
        self.nodes.retain(|id, h| {
            let keep = now.saturating_sub(h.seen) <= ttl;
            if !keep && certs.get(&h.desc.tls_cert) == Some(id) {
                certs.remove(&h.desc.tls_cert);
            }
            keep
        });
    }

    /// Relays due for a probe at `now` (each is marked as probed).
    pub fn probe_targets(&mut self, now: u64) -> Vec<ProbeTarget> {
        self.expire(now);
        let mut out = Vec::new();
        for h in self.nodes.values_mut() {
            let every = if h.reached.is_some_and(|r| h.probed.is_some_and(|p| r >= p)) {
                PROBE_EVERY_SECS
            } else {
                PROBE_RETRY_SECS
            };
            if h.probed.is_none_or(|p| now >= p + every) {
                h.probed = Some(now);
                out.push(ProbeTarget {
                    id: h.desc.id,
                    address: h.desc.address,
                    cert: h.desc.tls_cert,
                });
            }
        }
        out
    }

    /// A probe of `target` ended: the relay answered (`ok`) or not.
    pub fn probed(&mut self, target: &ProbeTarget, ok: bool, now: u64) {
        if let Some(h) = self.nodes.get_mut(&target.id)
            && ok
            && h.desc.tls_cert == target.cert
            && h.desc.address == target.address
        {
            h.reached = Some(now);
            // It holds the certificate: the claim is its.
            self.certs.insert(target.cert, target.id);
        }
    }

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
        if body.network != self.params.network || body.round + 1 < current || body.round > current {
            return Err(lethe_proto::Error::Invalid {
                field: "vote",
                reason: "another network, or not a current round".into(),
            });
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
            },
            nodes: combine(&held, self.params.threshold),
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

    /// The end of a round's document's validity: the end of the epoch after the round's.
    fn valid_until(&self, round: u64) -> u64 {
        let epoch_len = self.params.epoch_secs;
        (round * self.round_secs() / epoch_len + 2) * epoch_len
    }

    /// The document to serve: the newest with `threshold` signatures that is still valid.
    pub fn document(&self, now: u64) -> Result<Vec<u8>, AuthorityError> {
        let threshold = self.params.threshold;
        let doc = self
            .docs
            .iter()
            .rev()
            .find(|(round, d)| d.signatures.len() >= threshold && self.valid_until(**round) > now)
            .map(|(_, d)| d)
            .ok_or(AuthorityError::NoDocument { threshold })?;
        to_json(doc)
    }
}

/// Every tick: make this round's vote, fetch the peers' votes this authority lacks and
/// their signatures, and conclude the round when it can.
async fn gather(
    state: Arc<Mutex<AuthorityState>>,
    peers: Vec<String>,
    round_secs: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let tick = Duration::from_millis((round_secs * 1000 / 8).clamp(100, 500));
    // Which key answered at each peer's URL (learnt from its first valid vote).
    let mut keys: HashMap<String, Key32> = HashMap::new();
    loop {
        let now = unix_now();
        let round = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let round = st.round_at(now);
            let _ = st.own_vote(round, now);
            round
        };
        for peer in &peers {
            let base = peer.trim_end_matches('/');
            let have = keys.get(peer).is_some_and(|k| {
                let st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.has_vote(round, k)
            });
            if !have
                && let Ok((200, body)) =
                    http::request("GET", &format!("{base}{HELD_PATH}/{round}"), None).await
                && let Ok(vote) = serde_json::from_slice::<SignedVote>(&body)
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                match st.add_peer_held(&vote, unix_now()) {
                    Ok(k) => {
                        keys.insert(peer.clone(), k);
                    }
                    Err(e) => debug!(error = %e, "peer's vote refused"),
                }
            }
            if let Ok((200, body)) = http::request("GET", &format!("{base}{VOTE_PATH}"), None).await
                && let Ok(vote) = serde_json::from_slice::<Vote>(&body)
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.add_peer_vote(vote);
            }
        }
        {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = st.conclude(unix_now()) {
                debug!(error = %e, "round not concluded");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Reach each relay over QUIC with its pinned certificate, a few at a time, and record who
/// answered. A probe is an ordinary client connection, closed at once.
async fn probe(
    state: Arc<Mutex<AuthorityState>>,
    keys: NodeKeys,
    bind: std::net::IpAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(endpoint) = quinn::Endpoint::client(SocketAddr::new(bind, 0)) else {
        tracing::warn!("cannot open a QUIC endpoint: relays are not probed, none is listed");
        return;
    };
    let keys = Arc::new(keys);
    loop {
        let targets = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            st.probe_targets(unix_now())
        };
        for t in targets {
            let (state, endpoint, keys) = (state.clone(), endpoint.clone(), keys.clone());
            tokio::spawn(async move {
                // Reached: the pinned certificate answers at the address, and the relay
                // behind it describes itself as the relay of this descriptor (a copy of
                // another relay's address and certificate is not that relay).
                let ok = tokio::time::timeout(Duration::from_secs(3), async {
                    let conn = lethe_net::tls::connect(&endpoint, &keys.tls, t.address, t.cert)
                        .await
                        .ok()?;
                    let answer = lethe_net::link::ask_describe(&conn).await;
                    conn.close(0u32.into(), b"probe");
                    let d: SignedDescriptor = serde_json::from_slice(&answer.ok()?).ok()?;
                    let d = d.verify().ok()?;
                    Some(d.id == t.id && d.tls_cert == t.cert)
                })
                .await
                .ok()
                .flatten()
                .unwrap_or(false);
                if !ok {
                    debug!(relay = %Sensitive::new(t.address), "relay not reached");
                }
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.probed(&t, ok, unix_now());
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Serve the directory over HTTP until `shutdown`.
pub async fn run(
    cfg: NodeConfig,
    keys: NodeKeys,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let addr = cfg.node.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })?;
    let peer_keys = cfg
        .authority
        .peer_keys
        .iter()
        .map(|k| Key32::parse_hex(k, "authority.peer_keys"))
        .collect::<Result<Vec<_>, _>>()?;
    let state = Arc::new(Mutex::new(AuthorityState::new(
        cfg.authority.clone(),
        keys.identity,
        peer_keys,
    )));
    let gather = tokio::spawn(gather(
        state.clone(),
        cfg.authority.peers.clone(),
        cfg.authority.vote_interval_secs,
        shutdown.clone(),
    ));
    let id = keys.id();
    let prober = tokio::spawn(probe(state.clone(), keys, addr.ip(), shutdown.clone()));
    let json = |v: Result<Vec<u8>, AuthorityError>| match v {
        Ok(v) => http::Response::ok("application/json", v),
        Err(e @ (AuthorityError::NoDocument { .. } | AuthorityError::NoVote { .. })) => {
            http::Response::error(503, e.to_string())
        }
        Err(e) => http::Response::error(500, e.to_string()),
    };
    let handler: http::Handler = Arc::new(move |r: http::Request| {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", VOTE_PATH) => match st.vote() {
                Some(v) => json(to_json(&v)),
                None => http::Response::error(503, "no body signed yet"),
            },
            ("GET", TOPOLOGY_PATH) => json(st.document(now)),
            ("GET", p) if p.starts_with(HELD_PATH) => {
                let round = p[HELD_PATH.len()..]
                    .strip_prefix('/')
                    .and_then(|r| r.parse::<u64>().ok());
                match round {
                    Some(round) => json(st.own_vote(round, now).and_then(|v| to_json(&v))),
                    None => http::Response::error(400, "GET /v1/held/ROUND"),
                }
            }
            ("POST", DESCRIPTORS_PATH) => {
                let parsed: Result<SignedDescriptor, _> = serde_json::from_slice(&r.body);
                match parsed {
                    Ok(d) => match st.register(d, now) {
                        Ok(_) => http::Response::ok("text/plain", "accepted"),
                        Err(e) => {
                            // Anyone can upload: a refusal is theirs to read, not a warning
                            // in our log.
                            debug!(error = %e, "descriptor refused");
                            http::Response::error(400, e.to_string())
                        }
                    },
                    Err(e) => http::Response::error(400, format!("malformed descriptor: {e}")),
                }
            }
            _ => http::Response::error(
                404,
                "GET /v1/topology, GET /v1/vote, GET /v1/held/ROUND or POST /v1/descriptors",
            ),
        }
    });
    info!(%addr, key = %id, "directory authority serving");
    http::serve(listener, handler, shutdown).await;
    gather.abort();
    prober.abort();
    info!("directory authority stopped");
    Ok(())
}

/// JSON of a value the authority serves.
fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, AuthorityError> {
    serde_json::to_vec(v).map_err(|e| {
        lethe_proto::Error::Malformed {
            what: "json",
            detail: e.to_string(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_proto::topology::{Role, identity_public_key};

    fn signed_at(i: u8, port: u16, published: u64) -> SignedDescriptor {
        let secret = [i; 32];
        let d = NodeDescriptor {
            id: NodeId(identity_public_key(&secret)),
            role: Role::Mix,
            layer: Some(1),
            address: ([127, 0, 0, i], port).into(),
            sphinx_keys: vec![lethe_proto::EpochKey {
                epoch: 10,
                key: Key32([i; 32]),
            }],
            tls_cert: Key32([i; 32]),
            published,
        };
        SignedDescriptor::sign(&d, &secret).unwrap()
    }

    fn params(threshold: usize, peers: usize) -> AuthoritySection {
        AuthoritySection {
            epoch_secs: 100,
            descriptor_ttl_secs: 500,
            vote_interval_secs: 10,
            threshold,
            peers: (0..peers).map(|i| format!("http://peer{i}")).collect(),
            ..Default::default()
        }
    }

    /// Probe every due relay and say it answered.
    fn reach_all(st: &mut AuthorityState, now: u64) {
        for t in st.probe_targets(now) {
            st.probed(&t, true, now);
        }
    }

    fn parse(b: Vec<u8>) -> SignedTopology {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn uploads_are_checked_in_constant_time_per_upload() {
        let mut st = AuthorityState::new(params(1, 0), [77; 32], vec![]);
        st.register(signed_at(1, 1, 1000), 1000).unwrap();
        // the same time with other content is a conflict
        assert!(st.register(signed_at(1, 3, 1000), 1000).is_err());
        // a newer descriptor replaces the held one; replaying the older one is refused
        st.register(signed_at(5, 1, 1090), 1100).unwrap();
        st.register(signed_at(5, 2, 1095), 1100).unwrap();
        let err = st.register(signed_at(5, 1, 1090), 1100).unwrap_err();
        assert!(err.to_string().contains("older"), "{err}");
        // stale and future descriptors are refused
        let err = st.register(signed_at(6, 1, 500), 1100).unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");
        let err = st.register(signed_at(6, 1, 2000), 1100).unwrap_err();
        assert!(err.to_string().contains("future"), "{err}");
        // a descriptor claiming the certificate of a relay that answers for it is refused
        reach_all(&mut st, 1100);
        let secret = [8u8; 32];
        let squatter = NodeDescriptor {
            id: NodeId(identity_public_key(&secret)),
            role: Role::Gateway,
            layer: None,
            address: ([127, 0, 0, 8], 1).into(),
            sphinx_keys: vec![lethe_proto::EpochKey {
                epoch: 11,
                key: Key32([8; 32]),
            }],
            tls_cert: Key32([5; 32]),
            published: 1100,
        };
        let err = st
            .register(SignedDescriptor::sign(&squatter, &secret).unwrap(), 1100)
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        // a forged descriptor (signed by another key) is refused
        let mut forged = signed_at(3, 1, 1100);
        forged.signature = signed_at(4, 1, 1100).signature;
        assert!(st.register(forged, 1100).is_err());
    }

    #[test]
    fn a_relay_offline_cannot_be_squatted() {
        let mut st = AuthorityState::new(params(1, 0), [77; 32], vec![]);
        let real = signed_at(5, 1, 1000);
        st.register(real.clone(), 1000).unwrap();
        // A squatter claims relay 5's certificate while relay 5 is not reached.
        let secret = [8u8; 32];
        let squatter = NodeDescriptor {
            id: NodeId(identity_public_key(&secret)),
            role: Role::Mix,
            layer: Some(1),
            address: ([127, 0, 0, 5], 1).into(),
            sphinx_keys: vec![lethe_proto::EpochKey {
                epoch: 10,
                key: Key32([8; 32]),
            }],
            tls_cert: Key32([5; 32]),
            published: 1000,
        };
        let squatter = SignedDescriptor::sign(&squatter, &secret).unwrap();
        st.register(squatter.clone(), 1001).unwrap();
        // The probes: only the real relay describes itself behind that certificate.
        let real_id = real.verify().unwrap().id;
        for t in st.probe_targets(1002) {
            st.probed(&t, t.id == real_id, 1002);
        }
        // Relay 5 comes back and registers again: accepted; the squatter, tried again while
        // relay 5 is reached, is refused.
        st.register(signed_at(5, 1, 1003), 1003).unwrap();
        let err = st.register(squatter, 1004).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        st.conclude(1010).unwrap();
        let t = parse(st.document(1010).unwrap())
            .verify(&[identity_public_key(&[77; 32])], 1, 1010)
            .unwrap();
        let ids: Vec<NodeId> = t.nodes().iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![real_id]);
    }

    #[test]
    fn a_relay_is_listed_only_while_the_authority_reaches_it() {
        let secret = [77u8; 32];
        let auth = identity_public_key(&secret);
        let mut st = AuthorityState::new(params(1, 0), secret, vec![]);
        st.register(signed_at(1, 1, 1000), 1000).unwrap();
        st.register(signed_at(2, 1, 1000), 1000).unwrap();
        // Nothing reached yet: the round's document lists nobody.
        assert!(st.conclude(1000).unwrap());
        let t = parse(st.document(1000).unwrap())
            .verify(&[auth], 1, 1000)
            .unwrap();
        assert_eq!(t.nodes().len(), 0);
        // Relay 1 answers, relay 2 does not.
        for t in st.probe_targets(1005) {
            st.probed(&t, t.id == signed_at(1, 1, 1000).verify().unwrap().id, 1005);
        }
        assert!(st.probe_targets(1006).is_empty(), "not again at once");
        assert_eq!(
            st.probe_targets(1007).len(),
            1,
            "the unreached one is retried"
        );
        assert!(st.conclude(1010).unwrap());
        let doc = parse(st.document(1010).unwrap());
        let t = doc.verify(&[auth], 1, 1010).unwrap();
        assert_eq!((t.nodes().len(), t.epoch(), t.body().serial), (1, 10, 1010));
        // One body per round.
        assert!(!st.conclude(1015).unwrap());
        // Not reached for longer than REACHED_WITHIN_SECS: gone from the next document.
        st.register(signed_at(1, 1, 1040), 1040).unwrap();
        assert!(st.conclude(1040).unwrap());
        let t = parse(st.document(1040).unwrap())
            .verify(&[auth], 1, 1040)
            .unwrap();
        assert_eq!(t.nodes().len(), 0);
    }

    #[test]
    fn different_fakes_at_each_authority_cannot_stop_agreement() {
        let keys = [[71u8; 32], [72u8; 32], [73u8; 32]];
        let auth: Vec<Key32> = keys.iter().map(identity_public_key).collect();
        let mut st: Vec<AuthorityState> = (0..3)
            .map(|i| {
                let peers = auth.iter().copied().filter(|k| *k != auth[i]).collect();
                AuthorityState::new(params(2, 2), keys[i], peers)
            })
            .collect();
        for (i, a) in st.iter_mut().enumerate() {
            a.register(signed_at(1, 1, 1000), 1000).unwrap();
            a.register(signed_at(2, 1, 1000), 1000).unwrap();
            // The attack: a different (validly self-signed) fake at each authority.
            a.register(signed_at(100 + i as u8, 1, 1000), 1000).unwrap();
            reach_all(a, 1000);
        }
        let now = 1010;
        let votes: Vec<SignedVote> = st
            .iter_mut()
            .map(|a| a.own_vote(101, now).unwrap())
            .collect();
        for a in st.iter_mut() {
            assert!(!a.conclude(now).unwrap(), "waits for the peers' votes");
            for v in &votes {
                if !a.has_vote(101, &v.authority) {
                    a.add_peer_held(v, now).unwrap();
                }
            }
            assert!(a.conclude(now).unwrap());
        }
        let sigs: Vec<Vote> = st.iter().map(|a| a.vote().unwrap()).collect();
        for (i, a) in st.iter_mut().enumerate() {
            for (j, v) in sigs.iter().enumerate() {
                assert_eq!(a.add_peer_vote(v.clone()), i != j, "same body: co-signed");
            }
        }
        let docs: Vec<SignedTopology> =
            st.iter().map(|a| parse(a.document(now).unwrap())).collect();
        assert!(docs.windows(2).all(|w| w[0].body == w[1].body));
        let t = docs[0].verify(&auth, 3, now).unwrap();
        assert_eq!(
            t.nodes().len(),
            2,
            "the fakes, each held by one authority, are not listed"
        );
        // A vote from an authority that is not a peer does not count.
        let stranger = SignedVote::sign(
            &VoteBody {
                network: "lethe".into(),
                round: 101,
                descriptors: vec![],
            },
            &[9; 32],
        )
        .unwrap();
        assert!(st[0].add_peer_held(&stranger, now).is_err());
        // A tampered signature (body changed) is not attached.
        let mut forged = st[1].vote().unwrap();
        forged.body = forged.body.replace("\"serial\":1010", "\"serial\":1011");
        assert!(!st[2].add_peer_vote(forged));
    }

    #[test]
    fn a_lone_authority_makes_no_document_and_none_is_served_expired() {
        let keys = [[71u8; 32], [72u8; 32], [73u8; 32]];
        let auth: Vec<Key32> = keys.iter().map(identity_public_key).collect();
        let mut a = AuthorityState::new(params(2, 2), keys[0], auth[1..].to_vec());
        a.register(signed_at(1, 1, 1000), 1000).unwrap();
        reach_all(&mut a, 1000);
        // Its peers are down: half a round later it still has one vote of the two needed.
        assert!(!a.conclude(1016).unwrap());
        let err = a.document(1016).unwrap_err();
        assert!(
            matches!(err, AuthorityError::NoDocument { threshold: 2 }),
            "{err}"
        );
        // With one peer's vote it concludes; with that peer's signature it serves...
        let mut b = AuthorityState::new(params(2, 2), keys[1], vec![auth[0], auth[2]]);
        b.register(signed_at(1, 1, 1000), 1000).unwrap();
        reach_all(&mut b, 1000);
        let vb = b.own_vote(101, 1016).unwrap();
        a.add_peer_held(&vb, 1016).unwrap();
        b.add_peer_held(&a.own_vote(101, 1016).unwrap(), 1016)
            .unwrap();
        assert!(a.conclude(1016).unwrap() && b.conclude(1016).unwrap());
        assert!(a.add_peer_vote(b.vote().unwrap()));
        let doc = parse(a.document(1016).unwrap());
        assert_eq!(doc.verify(&auth, 2, 1016).unwrap().nodes().len(), 1);
        // ... until it expires (two epochs of 100 s): then nothing.
        assert!(a.document(1199).is_ok());
        assert!(matches!(
            a.document(1200),
            Err(AuthorityError::NoDocument { .. })
        ));
    }
}
