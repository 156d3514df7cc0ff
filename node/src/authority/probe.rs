//! Liveness probes: which relays are due, what a probe found, and the task that reaches
//! each relay over QUIC.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe_net::shutdown::Shutdown;
use lethe_net::{Sensitive, unix_now};
use lethe_proto::{Key32, NodeId, SignedDescriptor};
use tracing::debug;

use super::state::AuthorityState;
use super::{PROBE_EVERY_SECS, PROBE_RETRY_SECS};
use crate::keys::NodeKeys;

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

impl AuthorityState {
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
}

/// Reach each relay over QUIC with its pinned certificate, a few at a time, and record who
/// answered. A probe is an ordinary client connection, closed at once.
pub(super) async fn probe(
    state: Arc<Mutex<AuthorityState>>,
    keys: NodeKeys,
    bind: std::net::IpAddr,
    mut shutdown: Shutdown,
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
            _ = shutdown.wait() => return,
        }
    }
}
