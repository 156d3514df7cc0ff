//! The directory authorities: relays upload signed descriptors to every authority; each
//! builds the same deterministic document body from the descriptors it holds (nodes sorted,
//! the newest descriptor of each node, serial = newest publication time) and signs it. Each
//! authority fetches its peers' votes (`GET /v1/vote`: their body and signature) and attaches
//! the signatures of peers whose body is identical to its own. Clients and relays accept a
//! document only with `threshold` valid signatures of configured authorities, so one
//! authority alone cannot add, drop or change a node. While peers disagree (for a moment
//! after an upload), an authority keeps serving the last document that had `threshold`
//! signatures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lethe_net::directory::{DESCRIPTORS_PATH, TOPOLOGY_PATH, VOTE_PATH};
use lethe_net::{http, unix_now};
use lethe_proto::topology::AuthoritySignature;
use lethe_proto::topology::{CoverParams, NodeDescriptor};
use lethe_proto::{NodeId, SignedDescriptor, SignedTopology, TopologyBody};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::NodeError;
use crate::config::{AuthoritySection, NodeConfig};
use crate::keys::NodeKeys;

/// Most relays one authority lists.
pub const MAX_NODES: usize = 5000;
/// How far in the future a descriptor's publication time may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;

/// One authority's signed opinion of the current body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// JSON text of the body.
    pub body: String,
    /// The authority's signature over it.
    pub signature: AuthoritySignature,
}

/// In-memory state of the authority.
pub struct AuthorityState {
    params: AuthoritySection,
    secret: [u8; 32],
    nodes: HashMap<NodeId, (SignedDescriptor, u64)>,
    /// Current body (epoch, valid until, signed document so far).
    current: Option<(u64, u64, SignedTopology)>,
    /// The newest document that reached `threshold` signatures.
    last_good: Option<(u64, SignedTopology)>,
    dirty: bool,
}

impl AuthorityState {
    /// An authority signing with `secret` and publishing `params`.
    pub fn new(params: AuthoritySection, secret: [u8; 32]) -> Self {
        AuthorityState {
            params,
            secret,
            nodes: HashMap::new(),
            current: None,
            last_good: None,
            dirty: true,
        }
    }

    /// Accept a descriptor upload if it is validly self-signed, fresh (published within
    /// the descriptor lifetime, not in the future beyond clock skew), not older than the one
    /// held, and does not claim another node's certificate.
    pub fn register(
        &mut self,
        d: SignedDescriptor,
        now: u64,
    ) -> Result<NodeId, lethe_proto::Error> {
        let desc = d.verify()?;
        let refuse = |reason: String| lethe_proto::Error::Invalid {
            field: "descriptor",
            reason,
        };
        if desc.published > now + MAX_CLOCK_SKEW_SECS {
            return Err(refuse("published in the future".into()));
        }
        if desc.published + self.params.descriptor_ttl_secs < now {
            return Err(refuse("stale: published too long ago".into()));
        }
        let held = match self.nodes.get(&desc.id) {
            Some((h, _)) => Some(h.verify()?),
            None => None,
        };
        match &held {
            Some(h) if desc.published < h.published => {
                return Err(refuse("older than the descriptor held".into()));
            }
            None if self.nodes.len() >= MAX_NODES => {
                return Err(refuse(format!("directory is full ({MAX_NODES} nodes)")));
            }
            _ => {}
        }
        let cert_taken = self.nodes.iter().any(|(id, (other, _))| {
            *id != desc.id && other.verify().is_ok_and(|o| o.tls_cert == desc.tls_cert)
        });
        if cert_taken {
            return Err(refuse("certificate already used by another node".into()));
        }
        // A re-registration that only refreshes the publication time changes nothing
        // clients need; the document is re-signed with it at the next epoch.
        let same = |h: &NodeDescriptor| {
            NodeDescriptor {
                published: 0,
                ..h.clone()
            } == NodeDescriptor {
                published: 0,
                ..desc.clone()
            }
        };
        if held.as_ref().is_some_and(|h| h.published == desc.published)
            && self.nodes.get(&desc.id).is_some_and(|(t, _)| *t != d)
        {
            return Err(refuse(
                "conflicts with a different descriptor of the same time".into(),
            ));
        }
        if !held.as_ref().is_some_and(same) {
            info!(node = %desc.id.short(), role = ?desc.role, layer = ?desc.layer, "descriptor accepted");
        }
        // The newest text is kept (every authority keeps the same one), and the body is
        // rebuilt with it.
        if self.nodes.get(&desc.id).is_none_or(|(t, _)| *t != d) {
            self.dirty = true;
        }
        self.nodes.insert(desc.id, (d, now));
        Ok(desc.id)
    }

    /// Rebuild and sign the body if descriptors, the epoch or expiry changed.
    fn refresh(&mut self, now: u64) -> Result<&SignedTopology, lethe_proto::Error> {
        let epoch_len = self.params.epoch_secs;
        let epoch = now / epoch_len;
        let ttl = self.params.descriptor_ttl_secs;
        let before = self.nodes.len();
        self.nodes
            .retain(|_, (_, seen)| now.saturating_sub(*seen) <= ttl);
        if self.nodes.len() != before {
            self.dirty = true;
        }
        let stale = self
            .current
            .as_ref()
            .is_none_or(|(e, valid_until, _)| *e != epoch || *valid_until <= now);
        if self.dirty || stale {
            let mut nodes: Vec<(NodeId, SignedDescriptor, u64)> = Vec::new();
            for (id, (d, _)) in &self.nodes {
                nodes.push((*id, d.clone(), d.verify()?.published));
            }
            nodes.sort_by_key(|(id, _, _)| *id);
            let valid_until = (epoch + 2) * epoch_len;
            let body = TopologyBody {
                network: self.params.network.clone(),
                epoch,
                // Deterministic, so that authorities holding the same descriptors sign the
                // same bytes; grows whenever a node publishes a new descriptor.
                serial: nodes.iter().map(|(_, _, p)| *p).max().unwrap_or(0),
                valid_until,
                epoch_secs: epoch_len,
                mean_delay_ms: self.params.mean_delay_ms,
                max_delay_ms: self.params.max_delay_ms,
                cover: CoverParams {
                    payload_mean_ms: self.params.cover_payload_mean_ms,
                    loop_mean_ms: self.params.cover_loop_mean_ms,
                    drop_mean_ms: self.params.cover_drop_mean_ms,
                    mix_loop_mean_ms: self.params.cover_mix_loop_mean_ms,
                },
                nodes: nodes.into_iter().map(|(_, d, _)| d).collect(),
            };
            let doc = SignedTopology::sign(&body, &self.secret)?;
            self.current = Some((epoch, valid_until, doc));
            self.dirty = false;
        }
        match &self.current {
            Some((_, _, doc)) => Ok(doc),
            None => Err(lethe_proto::Error::Malformed {
                what: "topology",
                detail: "no document".into(),
            }),
        }
    }

    /// This authority's vote: its current body and its own signature.
    pub fn vote(&mut self, now: u64) -> Result<Vote, lethe_proto::Error> {
        let doc = self.refresh(now)?;
        let signature = doc
            .signatures
            .first()
            .cloned()
            .ok_or(lethe_proto::Error::Malformed {
                what: "topology",
                detail: "unsigned".into(),
            })?;
        Ok(Vote {
            body: doc.body.clone(),
            signature,
        })
    }

    /// Attach a peer's signature if it signed exactly our current body; returns whether it
    /// was added.
    pub fn add_peer_vote(&mut self, vote: Vote, now: u64) -> bool {
        if self.refresh(now).is_err() {
            return false;
        }
        let Some((_, _, doc)) = self.current.as_mut() else {
            return false;
        };
        if vote.body != doc.body
            || doc
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

    /// The document to serve: the current one once it has `threshold` signatures, else the
    /// last one that had them (while it is valid), else the current one as it is.
    pub fn document(&mut self, now: u64) -> Result<Vec<u8>, lethe_proto::Error> {
        let threshold = self.params.threshold;
        let doc = self.refresh(now)?.clone();
        let out = if doc.signatures.len() >= threshold {
            self.last_good = Some((now, doc.clone()));
            doc
        } else {
            match &self.last_good {
                Some((_, good)) if self.current.as_ref().is_some_and(|(_, vu, _)| *vu > now) => {
                    good.clone()
                }
                _ => doc,
            }
        };
        serde_json::to_vec(&out).map_err(|e| lethe_proto::Error::Malformed {
            what: "topology",
            detail: e.to_string(),
        })
    }
}

/// Fetch each peer's vote every `period` and attach matching signatures.
async fn gather_votes(
    state: Arc<Mutex<AuthorityState>>,
    peers: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = std::time::Duration::from_millis(500);
    loop {
        for peer in &peers {
            let url = format!("{}{}", peer.trim_end_matches('/'), VOTE_PATH);
            if let Ok((200, body)) = http::request("GET", &url, None).await
                && let Ok(vote) = serde_json::from_slice::<Vote>(&body)
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.add_peer_vote(vote, unix_now());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
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
    let state = Arc::new(Mutex::new(AuthorityState::new(
        cfg.authority.clone(),
        keys.identity,
    )));
    let gather = tokio::spawn(gather_votes(
        state.clone(),
        cfg.authority.peers.clone(),
        shutdown.clone(),
    ));
    let handler: http::Handler = Arc::new(move |r: http::Request| {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", VOTE_PATH) => match st.vote(unix_now()).and_then(|v| {
                serde_json::to_vec(&v).map_err(|e| lethe_proto::Error::Malformed {
                    what: "vote",
                    detail: e.to_string(),
                })
            }) {
                Ok(v) => http::Response::ok("application/json", v),
                Err(e) => http::Response::error(500, e.to_string()),
            },
            ("GET", TOPOLOGY_PATH) => match st.document(unix_now()) {
                Ok(doc) => http::Response::ok("application/json", doc),
                Err(e) => http::Response::error(500, e.to_string()),
            },
            ("POST", DESCRIPTORS_PATH) => {
                let parsed: Result<SignedDescriptor, _> = serde_json::from_slice(&r.body);
                match parsed {
                    Ok(d) => match st.register(d, unix_now()) {
                        Ok(_) => http::Response::ok("text/plain", "accepted"),
                        Err(e) => {
                            warn!(error = %e, "descriptor refused");
                            http::Response::error(400, e.to_string())
                        }
                    },
                    Err(e) => http::Response::error(400, format!("malformed descriptor: {e}")),
                }
            }
            _ => http::Response::error(
                404,
                "GET /v1/topology, GET /v1/vote or POST /v1/descriptors",
            ),
        }
    });
    info!(%addr, key = %keys.id(), "directory authority serving");
    http::serve(listener, handler, shutdown).await;
    gather.abort();
    info!("directory authority stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_proto::Key32;
    use lethe_proto::topology::{Role, identity_public_key};

    fn signed(i: u8, port: u16) -> SignedDescriptor {
        signed_at(i, port, 1000)
    }

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

    #[test]
    fn documents_follow_registrations_epochs_and_expiry() {
        let secret = [77u8; 32];
        let auth = identity_public_key(&secret);
        let mut st = AuthorityState::new(
            AuthoritySection {
                epoch_secs: 100,
                descriptor_ttl_secs: 50,
                ..Default::default()
            },
            secret,
        );
        st.register(signed(1, 1), 1000).unwrap();
        st.register(signed(2, 1), 1000).unwrap();
        let parse = |b: Vec<u8>| serde_json::from_slice::<SignedTopology>(&b).unwrap();
        let d1 = parse(st.document(1000).unwrap());
        let t1 = d1.verify(&[auth], 1, 1000).unwrap();
        assert_eq!((t1.nodes().len(), t1.epoch()), (2, 10));
        // unchanged registration: same document
        st.register(signed(1, 1), 1010).unwrap();
        assert_eq!(parse(st.document(1010).unwrap()), d1);
        // changed descriptor: new serial
        st.register(signed_at(1, 2, 1020), 1020).unwrap();
        // the same time with other content is a conflict
        assert!(st.register(signed_at(1, 3, 1020), 1020).is_err());
        let t2 = parse(st.document(1020).unwrap())
            .verify(&[auth], 1, 1020)
            .unwrap();
        assert!(t2.body().serial > t1.body().serial);
        // node 2 not refreshed for more than the ttl: gone; new epoch
        let t3 = parse(st.document(1060).unwrap())
            .verify(&[auth], 1, 1060)
            .unwrap();
        assert_eq!(t3.nodes().len(), 1);
        let t4 = parse(st.document(1100).unwrap()).verify(&[auth], 1, 1100);
        assert!(t4.is_ok());
        // a newer descriptor replaces the held one; replaying the older one is refused
        st.register(signed_at(5, 1, 1090), 1100).unwrap();
        st.register(signed_at(5, 2, 1095), 1100).unwrap();
        let err = st.register(signed_at(5, 1, 1090), 1100).unwrap_err();
        assert!(err.to_string().contains("older"), "{err}");
        // stale and future descriptors are refused
        assert!(
            st.register(signed_at(6, 1, 1000), 1100)
                .unwrap_err()
                .to_string()
                .contains("stale")
        );
        assert!(
            st.register(signed_at(6, 1, 2000), 1100)
                .unwrap_err()
                .to_string()
                .contains("future")
        );
        // a descriptor claiming another node's certificate is refused
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
    fn authorities_holding_the_same_descriptors_co_sign_and_a_lone_one_cannot() {
        let params = AuthoritySection {
            epoch_secs: 100,
            descriptor_ttl_secs: 500,
            threshold: 2,
            peers: vec!["http://b".into(), "http://c".into()],
            ..Default::default()
        };
        let keys = [[71u8; 32], [72u8; 32], [73u8; 32]];
        let auth: Vec<Key32> = keys.iter().map(identity_public_key).collect();
        let mut st: Vec<AuthorityState> = keys
            .iter()
            .map(|k| AuthorityState::new(params.clone(), *k))
            .collect();
        for a in st.iter_mut() {
            a.register(signed_at(1, 1, 1000), 1000).unwrap();
            a.register(signed_at(2, 1, 1000), 1000).unwrap();
        }
        // c alone also lists a node of its own choosing
        st[2].register(signed_at(3, 1, 1000), 1000).unwrap();
        let vote_b = st[1].vote(1000).unwrap();
        let vote_c = st[2].vote(1000).unwrap();
        assert!(
            st[0].add_peer_vote(vote_b.clone(), 1000),
            "same body: co-signed"
        );
        assert!(
            !st[0].add_peer_vote(vote_b, 1000),
            "a signature counts once"
        );
        assert!(
            !st[0].add_peer_vote(vote_c.clone(), 1000),
            "different body: not co-signed"
        );
        let parse = |b: Vec<u8>| serde_json::from_slice::<SignedTopology>(&b).unwrap();
        let doc = parse(st[0].document(1000).unwrap());
        let t = doc.verify(&auth, 2, 1000).unwrap();
        assert_eq!(t.nodes().len(), 2);
        // c's own document (with its extra node) has only its own signature: refused
        let lone = parse(st[2].document(1000).unwrap());
        assert!(lone.verify(&auth, 2, 1000).is_err());
        // a tampered vote (body changed, signature kept) is not attached
        let mut forged = st[1].vote(1000).unwrap();
        forged.body = vote_c.body;
        assert!(!st[2].add_peer_vote(forged, 1000));
        // after a change only a has seen, a keeps serving its last co-signed document
        st[0].register(signed_at(4, 1, 1001), 1001).unwrap();
        let served = parse(st[0].document(1001).unwrap());
        assert_eq!(served, doc);
    }
}
