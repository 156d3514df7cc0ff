//! Descriptor uploads: checked, kept (the newest of each relay) and forgotten when they
//! are not renewed.

use lethe_proto::error::{Refusal, Staleness};
use lethe_proto::{NodeId, SignedDescriptor};
use tracing::info;

use super::state::{AuthorityState, Held};
use super::{MAX_CLOCK_SKEW_SECS, MAX_NODES, REACHED_WITHIN_SECS};

impl AuthorityState {
    /// Accept a descriptor upload if it is validly self-signed, fresh (published within
    /// the descriptor lifetime, not in the future beyond clock skew), not older than the one
    /// held, and does not claim another relay's certificate. O(1) in the number of relays.
    pub fn register(
        &mut self,
        d: SignedDescriptor,
        now: u64,
    ) -> Result<NodeId, lethe_proto::Error> {
        let desc = d.verify()?;
        let refuse = |reason| lethe_proto::Error::Refused {
            what: "descriptor",
            reason,
        };
        let stale = |why| lethe_proto::Error::Stale {
            what: "descriptor",
            why,
        };
        let published = desc.published;
        if published > now + MAX_CLOCK_SKEW_SECS {
            return Err(refuse(Refusal::InFuture { published, now }));
        }
        let lifetime_secs = self.params.descriptor_ttl_secs;
        if published + lifetime_secs < now {
            return Err(stale(Staleness::PastLifetime {
                published,
                lifetime_secs,
                now,
            }));
        }
        let held = self.nodes.get(&desc.id);
        match held {
            Some(h) if published < h.desc.published => {
                return Err(stale(Staleness::OlderThanHeld {
                    published,
                    held: h.desc.published,
                }));
            }
            Some(h) if published == h.desc.published && h.signed != d => {
                return Err(refuse(Refusal::Conflict));
            }
            None if self.nodes.len() >= MAX_NODES => {
                return Err(refuse(Refusal::DirectoryFull { max: MAX_NODES }));
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
            return Err(refuse(Refusal::CertificateTaken));
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
    pub(super) fn expire(&mut self, now: u64) {
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
}
