//! The directory authority: relays upload signed descriptors; it publishes one signed
//! topology document per epoch (re-signed with a new serial when membership changes within
//! the epoch). One authority today; documents already carry a list of signatures so that
//! several can co-sign (see `SignedTopology::verify`'s threshold).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lethe_net::directory::{DESCRIPTORS_PATH, TOPOLOGY_PATH};
use lethe_net::{http, unix_now};
use lethe_proto::topology::NodeDescriptor;
use lethe_proto::{NodeId, SignedDescriptor, SignedTopology, TopologyBody};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::NodeError;
use crate::config::{AuthoritySection, NodeConfig};
use crate::keys::NodeKeys;

/// Most relays one authority lists.
pub const MAX_NODES: usize = 5000;
/// How far in the future a descriptor's publication time may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;

/// In-memory state of the authority.
pub struct AuthorityState {
    params: AuthoritySection,
    secret: [u8; 32],
    nodes: HashMap<NodeId, (SignedDescriptor, u64)>,
    serial: u64,
    published: Option<(u64, Vec<u8>, u64)>,
    dirty: bool,
}

impl AuthorityState {
    /// An authority signing with `secret` and publishing `params`.
    pub fn new(params: AuthoritySection, secret: [u8; 32]) -> Self {
        AuthorityState {
            params,
            secret,
            nodes: HashMap::new(),
            serial: 0,
            published: None,
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
        let changed = !held.as_ref().is_some_and(same);
        if changed {
            info!(node = %desc.id.short(), role = ?desc.role, layer = ?desc.layer, "descriptor accepted");
            self.dirty = true;
        }
        self.nodes.insert(desc.id, (d, now));
        Ok(desc.id)
    }

    /// The current document's JSON, re-signed when the epoch or membership changed.
    pub fn document(&mut self, now: u64) -> Result<Vec<u8>, lethe_proto::Error> {
        let epoch_len = self.params.epoch_secs;
        let epoch = now / epoch_len;
        let ttl = self.params.descriptor_ttl_secs;
        let before = self.nodes.len();
        self.nodes
            .retain(|_, (_, seen)| now.saturating_sub(*seen) <= ttl);
        if self.nodes.len() != before {
            self.dirty = true;
        }
        let stale = match &self.published {
            Some((e, _, valid_until)) => *e != epoch || *valid_until <= now,
            None => true,
        };
        if self.dirty || stale {
            let mut nodes: Vec<(NodeId, SignedDescriptor)> = self
                .nodes
                .iter()
                .map(|(id, (d, _))| (*id, d.clone()))
                .collect();
            nodes.sort_by_key(|(id, _)| *id);
            self.serial += 1;
            let valid_until = (epoch + 2) * epoch_len;
            let body = TopologyBody {
                network: self.params.network.clone(),
                epoch,
                serial: self.serial,
                valid_until,
                mean_delay_ms: self.params.mean_delay_ms,
                max_delay_ms: self.params.max_delay_ms,
                nodes: nodes.into_iter().map(|(_, d)| d).collect(),
            };
            let doc = SignedTopology::sign(&body, &self.secret)?;
            let bytes = serde_json::to_vec(&doc).map_err(|e| lethe_proto::Error::Malformed {
                what: "topology",
                detail: e.to_string(),
            })?;
            self.published = Some((epoch, bytes, valid_until));
            self.dirty = false;
        }
        Ok(self
            .published
            .as_ref()
            .map(|(_, b, _)| b.clone())
            .unwrap_or_default())
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
    let handler: http::Handler = Arc::new(move |r: http::Request| {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match (r.method.as_str(), r.path.as_str()) {
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
            _ => http::Response::error(404, "GET /v1/topology or POST /v1/descriptors"),
        }
    });
    info!(%addr, key = %keys.id(), "directory authority serving");
    http::serve(listener, handler, shutdown).await;
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
            sphinx_key: Key32([i; 32]),
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
        st.register(signed(1, 2), 1020).unwrap();
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
            sphinx_key: Key32([8; 32]),
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
}
