//! The network's map: node descriptors signed by their nodes, and the topology document
//! signed by the directory authorities, plus route selection over it.
//!
//! Signatures cover exact bytes: a descriptor and a document body are carried as JSON text
//! and signed as that text (with a domain-separation prefix), so no canonical encoding is
//! needed. A document lists authority signatures; it is accepted with at least `threshold`
//! valid signatures from distinct configured authorities (one authority and threshold 1
//! today; the format already carries several).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cover::ClientRates;
use crate::error::{Defect, Missing, Refusal};
use crate::packet::{HopSpec, sample_delay};
use crate::{Error, Key32, NodeId};

const DESCRIPTOR_DOMAIN: &[u8] = b"lethe descriptor v1\0";
/// Longest descriptor text accepted (a real one is about 400 bytes).
pub const MAX_DESCRIPTOR_LEN: usize = 1024;
const TOPOLOGY_DOMAIN: &[u8] = b"lethe topology v1\0";

/// Number of mix layers in the stratified topology.
pub const MIX_LAYERS: u8 = 3;

/// What a relay does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Entry for its own clients, exit (final hop) for packets to them.
    Gateway,
    /// A mix of one layer.
    Mix,
}

/// A Sphinx public key and the epoch it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochKey {
    /// Epoch number (unix time / epoch length).
    pub epoch: u64,
    /// X25519 public key.
    pub key: Key32,
}

/// Most Sphinx keys one descriptor lists.
pub const MAX_EPOCH_KEYS: usize = 3;

/// What a relay publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDescriptor {
    /// Ed25519 identity key.
    pub id: NodeId,
    /// Gateway or mix.
    pub role: Role,
    /// Mix layer, 1 to 3; absent for gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// Where its QUIC endpoint listens.
    pub address: SocketAddr,
    /// Its X25519 Sphinx public keys, one per epoch: the current and the next.
    pub sphinx_keys: Vec<EpochKey>,
    /// BLAKE3 of its TLS certificate (DER); peers pin it.
    pub tls_cert: Key32,
    /// Unix time the node signed this descriptor; the authority keeps only the newest and
    /// refuses stale ones, so an old descriptor cannot be replayed.
    pub published: u64,
    /// Its operator family (format 2; issue 15): the family's Ed25519 public key, with
    /// `family_proof`, the family key's signature over this node's id, so no relay can claim
    /// another operator's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Key32>,
    /// See `family`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_proof: Option<String>,
    /// The country its operator declares (ISO 3166-1 alpha-2): a claim, not a proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl NodeDescriptor {
    /// The Sphinx key for `epoch`, if the node published one.
    pub fn key_for(&self, epoch: u64) -> Option<Key32> {
        self.sphinx_keys
            .iter()
            .find(|k| k.epoch == epoch)
            .map(|k| k.key)
    }

    /// Check the role and layer agree, and the keys are few and for distinct epochs.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.sphinx_keys.len();
        let distinct = self
            .sphinx_keys
            .iter()
            .enumerate()
            .all(|(i, k)| self.sphinx_keys[..i].iter().all(|o| o.epoch != k.epoch));
        if n == 0 || n > MAX_EPOCH_KEYS || !distinct {
            return Err(Error::Refused {
                what: "descriptor",
                reason: Refusal::SphinxKeys {
                    max: MAX_EPOCH_KEYS,
                },
            });
        }
        match (self.role, self.layer) {
            (Role::Gateway, None) => Ok(()),
            (Role::Mix, Some(l)) if (1..=MIX_LAYERS).contains(&l) => Ok(()),
            (Role::Gateway, Some(_)) => Err(Error::Refused {
                what: "descriptor",
                reason: Refusal::GatewayLayer,
            }),
            (Role::Mix, _) => Err(Error::Refused {
                what: "descriptor",
                reason: Refusal::MixLayer { max: MIX_LAYERS },
            }),
        }
    }
}

fn signing_input(domain: &[u8], text: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + text.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(text.as_bytes());
    m
}

fn parse_signature(hex_sig: &str, what: &'static str) -> Result<Signature, Error> {
    let bytes = hex::decode(hex_sig).map_err(|e| Error::Malformed {
        what,
        detail: e.into(),
    })?;
    Signature::from_slice(&bytes).map_err(|_| Error::Malformed {
        what,
        detail: Defect::Length {
            got: bytes.len(),
            expected: Signature::BYTE_SIZE,
        },
    })
}

fn verifying_key(k: &Key32, what: &'static str) -> Result<VerifyingKey, Error> {
    VerifyingKey::from_bytes(k.as_bytes()).map_err(|_| Error::Malformed {
        what,
        detail: Defect::Other("not an Ed25519 public key"),
    })
}

/// Check a hex Ed25519 signature by `key` over `message` (strict verification).
pub(crate) fn verify_signature(
    key: &Key32,
    message: &[u8],
    hex_sig: &str,
    what: &'static str,
) -> Result<(), Error> {
    let k = verifying_key(key, what)?;
    let sig = parse_signature(hex_sig, what)?;
    k.verify_strict(message, &sig)
        .map_err(|_| Error::BadSignature { what })
}

/// The public identity key of an Ed25519 secret.
pub fn identity_public_key(secret: &[u8; 32]) -> Key32 {
    Key32(SigningKey::from_bytes(secret).verifying_key().to_bytes())
}

/// A descriptor as JSON text with its node's signature over that text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDescriptor {
    /// JSON of a [`NodeDescriptor`].
    pub descriptor: String,
    /// Hex Ed25519 signature by `descriptor.id`.
    pub signature: String,
}

impl SignedDescriptor {
    /// Sign `d` with the node's identity secret.
    pub fn sign(d: &NodeDescriptor, identity_secret: &[u8; 32]) -> Result<Self, Error> {
        let text = serde_json::to_string(d).map_err(|e| Error::Malformed {
            what: "descriptor",
            detail: e.into(),
        })?;
        let key = SigningKey::from_bytes(identity_secret);
        let sig = key.sign(&signing_input(DESCRIPTOR_DOMAIN, &text));
        Ok(SignedDescriptor {
            descriptor: text,
            signature: hex::encode(sig.to_bytes()),
        })
    }

    /// Parse and check: valid JSON, sensible fields, and signed by the key it names.
    pub fn verify(&self) -> Result<NodeDescriptor, Error> {
        if self.descriptor.len() > MAX_DESCRIPTOR_LEN {
            return Err(Error::Malformed {
                what: "descriptor",
                detail: Defect::TooLong {
                    got: self.descriptor.len(),
                    max: MAX_DESCRIPTOR_LEN,
                },
            });
        }
        let d: NodeDescriptor =
            serde_json::from_str(&self.descriptor).map_err(|e| Error::Malformed {
                what: "descriptor",
                detail: e.into(),
            })?;
        d.validate()?;
        // Only the canonical encoding: no padding, no reordering, one text per descriptor.
        if serde_json::to_string(&d).ok().as_deref() != Some(self.descriptor.as_str()) {
            return Err(Error::Malformed {
                what: "descriptor",
                detail: Defect::Other("not in canonical form"),
            });
        }
        let key = verifying_key(&d.id.0, "descriptor id")?;
        let sig = parse_signature(&self.signature, "descriptor signature")?;
        key.verify_strict(&signing_input(DESCRIPTOR_DOMAIN, &self.descriptor), &sig)
            .map_err(|_| Error::BadSignature { what: "descriptor" })?;
        Ok(d)
    }
}

/// The version of the signed directory's format this software writes and reads
/// (doc/DIRECTORY.md): 1 had no `format` field; 2 adds it, and is the one change that also
/// holds, as they land, exit services, operator families and countries, and the rules
/// every client applies. A reader refuses a newer format with a message saying so.
pub const DIRECTORY_FORMAT: u32 = 2;

fn format_v1() -> u32 {
    1
}

/// The one field read before the rest: a newer format may have fields this software does
/// not know, and must be refused for its version, not for them.
#[derive(Deserialize)]
struct FormatOnly {
    #[serde(default = "format_v1")]
    format: u32,
}

/// Network-wide parameters and the node list, as the authorities sign them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyBody {
    /// The directory format ([`DIRECTORY_FORMAT`]; 1 when absent).
    #[serde(default = "format_v1")]
    pub format: u32,
    /// Network name, so documents of two networks cannot be mixed up.
    pub network: String,
    /// Epoch number: unix time divided by the epoch length.
    pub epoch: u64,
    /// Changes whenever the content changes within an epoch.
    pub serial: u64,
    /// Unix time after which the document must not be used.
    pub valid_until: u64,
    /// Epoch length in seconds; Sphinx keys change every epoch.
    pub epoch_secs: u64,
    /// Mean per-hop mixing delay senders must use, in milliseconds.
    pub mean_delay_ms: u64,
    /// Largest per-hop delay a relay accepts, in milliseconds.
    pub max_delay_ms: u64,
    /// Cover traffic every client sends (absent in older documents: no cover).
    #[serde(default, skip_serializing_if = "CoverParams::is_off")]
    pub cover: CoverParams,
    /// The nodes, each signed by itself.
    pub nodes: Vec<SignedDescriptor>,
    /// Exit services: where each is reachable now (format 2; published once exits register,
    /// issue 13). Empty in documents that list none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<ExitEntry>,
    /// The route rules every client applies alike (format 2; issue 15). Absent: none.
    #[serde(default, skip_serializing_if = "RouteRules::is_none")]
    pub route_rules: RouteRules,
}

/// An exit service as the directory lists it (format 2, see doc/DIRECTORY.md): a stable id
/// and key, the gateway it is reachable through now, and what it connects to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitEntry {
    /// Its client id (stable across gateways: the hash of its certificate).
    pub id: crate::ClientId,
    /// The key chunks to it are sealed to.
    pub key: crate::RecipientKey,
    /// Its gateway now.
    pub gateway: NodeId,
    /// A summary of its allow-list (`HOST:PORT` patterns, `*` for any).
    pub allow: Vec<String>,
    /// Unix time it said so; the newest wins.
    pub published: u64,
}

/// Rules for choosing routes that the directory publishes, so every client applies the same
/// (format 2; issue 15 fills them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRules {
    /// No two relays of one operator family on a route (unless a layer would be empty).
    #[serde(default)]
    pub distinct_families: bool,
    /// No two relays of one declared country on a route's mixes, where the topology allows.
    #[serde(default)]
    pub distinct_countries: bool,
}

impl RouteRules {
    /// No rule set (the default of documents that do not name any).
    pub fn is_none(&self) -> bool {
        *self == RouteRules::default()
    }
}

/// The network-wide cover rates, as mean gaps between sends in milliseconds (0 turns a
/// stream off): the three Loopix client streams, and each mix's own loop stream. Every
/// client (and every mix) uses the same values, so they all look alike on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverParams {
    /// Payload stream: a real packet if one is queued, else a drop cover packet.
    pub payload_mean_ms: u64,
    /// Loop stream: a packet through the whole network back to the sender.
    pub loop_mean_ms: u64,
    /// Drop stream: a packet discarded at a random gateway.
    pub drop_mean_ms: u64,
    /// Each mix's loop stream: a packet through the following layers, a gateway and the
    /// preceding layers back to the mix itself. Absent from older documents (then 0).
    /// Readers from before this field refuse documents that have it (the struct denies
    /// unknown fields): upgrade every node and client before authorities publish it.
    #[serde(default)]
    pub mix_loop_mean_ms: u64,
    /// Downstream cover (format 2; issue 12): the mean gap of the Poisson stream a gateway
    /// sends each connected client (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub downstream_mean_ms: u64,
    /// Whether real packets downstream wait for the stream's slots (`strict`) or may go
    /// above its rate (`burst`, the default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub downstream_strict: bool,
    /// The exit services' own payload stream (format 2; issue 12): mean gap (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exit_payload_mean_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl CoverParams {
    /// No cover at all (the default of documents that do not name it).
    pub fn is_off(&self) -> bool {
        *self == CoverParams::default()
    }

    /// A mix's loop rate in sends per second (0 when off).
    pub fn mix_loop_rate(&self) -> f64 {
        if self.mix_loop_mean_ms == 0 {
            0.0
        } else {
            1000.0 / self.mix_loop_mean_ms as f64
        }
    }

    /// The client rates in sends per second.
    pub fn rates(&self) -> ClientRates {
        let rate = |ms: u64| if ms == 0 { 0.0 } else { 1000.0 / ms as f64 };
        ClientRates {
            payload: rate(self.payload_mean_ms),
            loop_: rate(self.loop_mean_ms),
            drop: rate(self.drop_mean_ms),
        }
    }
}

/// One authority's signature over a document body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySignature {
    /// The authority's Ed25519 public key.
    pub authority: Key32,
    /// Hex signature over the body text.
    pub signature: String,
}

/// A topology document as served by the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTopology {
    /// JSON of a [`TopologyBody`].
    pub body: String,
    /// Authority signatures over `body`.
    pub signatures: Vec<AuthoritySignature>,
}

impl SignedTopology {
    /// Serialize `body` and sign it with one authority's key.
    pub fn sign(body: &TopologyBody, authority_secret: &[u8; 32]) -> Result<Self, Error> {
        let text = serde_json::to_string(body).map_err(|e| Error::Malformed {
            what: "topology",
            detail: e.into(),
        })?;
        let mut doc = SignedTopology {
            body: text,
            signatures: Vec::new(),
        };
        doc.add_signature(authority_secret);
        Ok(doc)
    }

    /// Add one more authority's signature over the same body.
    pub fn add_signature(&mut self, authority_secret: &[u8; 32]) {
        let key = SigningKey::from_bytes(authority_secret);
        let sig = key.sign(&signing_input(TOPOLOGY_DOMAIN, &self.body));
        self.signatures.push(AuthoritySignature {
            authority: Key32(key.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        });
    }

    /// Accept the document if at least `threshold` distinct keys of `authorities` signed
    /// it, it has not expired at `now_unix`, and every node descriptor is signed by its node.
    pub fn verify(
        &self,
        authorities: &[Key32],
        threshold: usize,
        now_unix: u64,
    ) -> Result<Topology, Error> {
        let message = signing_input(TOPOLOGY_DOMAIN, &self.body);
        let mut valid: Vec<Key32> = Vec::new();
        for s in &self.signatures {
            if !authorities.contains(&s.authority) || valid.contains(&s.authority) {
                continue;
            }
            let Ok(key) = verifying_key(&s.authority, "authority key") else {
                continue;
            };
            let Ok(sig) = parse_signature(&s.signature, "authority signature") else {
                continue;
            };
            if key.verify_strict(&message, &sig).is_ok() {
                valid.push(s.authority);
            }
        }
        if threshold == 0 || valid.len() < threshold {
            return Err(Error::NotEnoughSignatures {
                valid: valid.len(),
                threshold,
            });
        }
        let header: FormatOnly =
            serde_json::from_str(&self.body).map_err(|e| Error::Malformed {
                what: "topology",
                detail: e.into(),
            })?;
        if header.format > DIRECTORY_FORMAT {
            return Err(Error::Refused {
                what: "topology document",
                reason: crate::error::Refusal::NewerFormat {
                    got: header.format,
                    supported: DIRECTORY_FORMAT,
                },
            });
        }
        let body: TopologyBody =
            serde_json::from_str(&self.body).map_err(|e| Error::Malformed {
                what: "topology",
                detail: e.into(),
            })?;
        if body.valid_until < now_unix {
            return Err(Error::Expired {
                valid_until: body.valid_until,
                now: now_unix,
            });
        }
        let nodes = body
            .nodes
            .iter()
            .map(SignedDescriptor::verify)
            .collect::<Result<Vec<_>, _>>()?;
        Topology::new(body, nodes)
    }
}

/// A verified topology, indexed for lookups and route selection.
#[derive(Clone, Debug)]
pub struct Topology {
    body: TopologyBody,
    nodes: Vec<NodeDescriptor>,
    by_id: HashMap<NodeId, usize>,
    by_cert: HashMap<Key32, usize>,
    by_addr: HashMap<std::net::SocketAddr, usize>,
    layers: [Vec<usize>; MIX_LAYERS as usize],
    gateways: Vec<usize>,
}

impl Topology {
    /// Index `nodes` (already verified) under the parameters of `body`.
    pub fn new(body: TopologyBody, nodes: Vec<NodeDescriptor>) -> Result<Self, Error> {
        if body.epoch_secs == 0 {
            return Err(Error::Refused {
                what: "topology",
                reason: Refusal::EpochSecs,
            });
        }
        if body.max_delay_ms < body.mean_delay_ms {
            return Err(Error::Refused {
                what: "topology",
                reason: Refusal::MaxDelay,
            });
        }
        let mut t = Topology {
            body,
            nodes: Vec::new(),
            by_id: HashMap::new(),
            by_cert: HashMap::new(),
            by_addr: HashMap::new(),
            layers: Default::default(),
            gateways: Vec::new(),
        };
        for n in nodes {
            n.validate()?;
            if t.by_id.contains_key(&n.id) {
                return Err(Error::Refused {
                    what: "topology",
                    reason: Refusal::ListedTwice(n.id),
                });
            }
            if t.by_cert.contains_key(&n.tls_cert) {
                return Err(Error::Refused {
                    what: "topology",
                    reason: Refusal::SharedCertificate(n.id),
                });
            }
            let i = t.nodes.len();
            t.by_id.insert(n.id, i);
            t.by_cert.insert(n.tls_cert, i);
            t.by_addr.insert(n.address, i);
            match (n.role, n.layer) {
                (Role::Mix, Some(l)) => t.layers[usize::from(l - 1)].push(i),
                _ => t.gateways.push(i),
            }
            t.nodes.push(n);
        }
        Ok(t)
    }

    /// The signed parameters.
    pub fn body(&self) -> &TopologyBody {
        &self.body
    }

    /// Its place in the order of documents: (epoch, serial); a newer one is greater.
    pub fn version(&self) -> (u64, u64) {
        (self.body.epoch, self.body.serial)
    }

    /// Whether this document may replace `current`: it is not older (a racing fetch or a
    /// replayed document never winds a node back).
    pub fn replaces(&self, current: &Topology) -> bool {
        self.version() >= current.version()
    }
    /// Epoch of the document.
    pub fn epoch(&self) -> u64 {
        self.body.epoch
    }
    /// All nodes.
    pub fn nodes(&self) -> &[NodeDescriptor] {
        &self.nodes
    }
    /// A node by identity.
    pub fn node(&self, id: &NodeId) -> Option<&NodeDescriptor> {
        self.by_id.get(id).map(|&i| &self.nodes[i])
    }
    /// A node by the hash of its TLS certificate.
    pub fn node_by_cert(&self, cert: &Key32) -> Option<&NodeDescriptor> {
        self.by_cert.get(cert).map(|&i| &self.nodes[i])
    }

    /// A node by the address it publishes (relays connect from the address they listen on).
    pub fn node_at(&self, addr: &std::net::SocketAddr) -> Option<&NodeDescriptor> {
        self.by_addr.get(addr).map(|&i| &self.nodes[i])
    }
    /// The gateways.
    pub fn gateways(&self) -> impl Iterator<Item = &NodeDescriptor> {
        self.gateways.iter().map(|&i| &self.nodes[i])
    }
    /// Mean per-hop delay of the network.
    pub fn mean_delay(&self) -> Duration {
        Duration::from_millis(self.body.mean_delay_ms)
    }
    /// Largest per-hop delay relays accept.
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.body.max_delay_ms)
    }

    /// The client cover rates of the network.
    pub fn client_rates(&self) -> ClientRates {
        self.body.cover.rates()
    }

    /// The exit services' rates: their own payload stream
    /// (`cover.exit_payload_mean_ms`), and the clients' loop and drop streams. Zero
    /// everywhere when the directory publishes no exit rate (the exit then sends its replies
    /// as they are made).
    pub fn exit_rates(&self) -> ClientRates {
        let c = &self.body.cover;
        if c.exit_payload_mean_ms == 0 {
            return ClientRates {
                payload: 0.0,
                loop_: 0.0,
                drop: 0.0,
            };
        }
        CoverParams {
            payload_mean_ms: c.exit_payload_mean_ms,
            ..*c
        }
        .rates()
    }

    /// The epoch at unix time `now`.
    pub fn epoch_at(&self, now_unix: u64) -> u64 {
        now_unix / self.body.epoch_secs
    }

    fn hop(n: &NodeDescriptor, epoch: u64) -> Option<HopSpec> {
        Some(HopSpec {
            id: n.id,
            sphinx_key: n.key_for(epoch)?,
        })
    }

    fn gateway_hop(&self, id: &NodeId, end: &'static str, epoch: u64) -> Result<HopSpec, Error> {
        match self.node(id) {
            Some(n) if n.role == Role::Gateway => Self::hop(n, epoch),
            _ => None,
        }
        .ok_or(Error::NoRoute {
            what: Missing::EndGateway {
                end,
                id: *id,
                epoch,
            },
        })
    }

    /// A route for packets of `epoch`: `entry` gateway, one mix of each layer chosen
    /// uniformly with `rng` among those with a key for that epoch, and the `exit` gateway
    /// (the recipient's).
    pub fn choose_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        entry: &NodeId,
        exit: &NodeId,
        epoch: u64,
    ) -> Result<Vec<HopSpec>, Error> {
        self.choose_route_avoiding(rng, entry, exit, epoch, &BTreeSet::new())
    }

    /// Like [`Topology::choose_route`], but leaving out the mixes in `avoid` (relays the
    /// client found dead, see [`crate::RelayHealth`]). A layer whose every usable mix is to
    /// be avoided is chosen from as if nothing were: a route through a doubtful relay beats
    /// no route. The gateways are the caller's and are never avoided.
    pub fn choose_route_avoiding<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        entry: &NodeId,
        exit: &NodeId,
        epoch: u64,
        avoid: &BTreeSet<NodeId>,
    ) -> Result<Vec<HopSpec>, Error> {
        let mut route = Vec::with_capacity(2 + MIX_LAYERS as usize);
        route.push(self.gateway_hop(entry, "entry", epoch)?);
        for (layer, members) in (1..=MIX_LAYERS).zip(&self.layers) {
            let usable: Vec<HopSpec> = members
                .iter()
                .filter_map(|&i| Self::hop(&self.nodes[i], epoch))
                .collect();
            if usable.is_empty() {
                return Err(Error::NoRoute {
                    what: Missing::Mix { layer, epoch },
                });
            }
            let healthy: Vec<HopSpec> = usable
                .iter()
                .filter(|h| !avoid.contains(&h.id))
                .copied()
                .collect();
            let pick = if healthy.is_empty() {
                &usable
            } else {
                &healthy
            };
            route.push(pick[(rng.next_u64() % pick.len() as u64) as usize]);
        }
        route.push(self.gateway_hop(exit, "exit", epoch)?);
        Ok(route)
    }

    /// Per-hop delays for a route from [`Topology::choose_route`]: zero at the gateways,
    /// exponential with the network's mean (capped at its maximum) at each mix.
    pub fn route_delays<R: Rng + ?Sized>(&self, rng: &mut R, hops: usize) -> Vec<Duration> {
        (0..hops)
            .map(|i| {
                if i == 0 || i + 1 == hops {
                    Duration::ZERO
                } else {
                    sample_delay(rng, self.mean_delay(), self.max_delay())
                }
            })
            .collect()
    }

    /// A route at `now_unix` from `entry` to `exit` that avoids what it can of `avoid`
    /// ([`Topology::choose_route_avoiding`]) with its per-hop delays
    /// ([`Topology::route_delays`]): what every packet and SURB is built over. It uses the
    /// current epoch's keys; just after an epoch boundary, while relays still hold the
    /// previous epoch's keys ([`crate::keyring::overlap_secs`]), a document that does not
    /// list the new keys yet gives a route with the previous ones rather than none. A packet
    /// or SURB so built dies when the overlap ends: a stopgap for a late document (clients
    /// fetch one at least twice an epoch), not a way to build ahead.
    pub fn plan_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        entry: &NodeId,
        exit: &NodeId,
        now_unix: u64,
        avoid: &BTreeSet<NodeId>,
    ) -> Result<(Vec<HopSpec>, Vec<Duration>), Error> {
        let (route, _) = self.current_route(rng, entry, exit, now_unix, avoid)?;
        let delays = self.route_delays(rng, route.len());
        Ok((route, delays))
    }

    /// A route with the current epoch's keys, or the previous epoch's during the overlap
    /// when the document lacks the current ones; and the epoch used.
    fn current_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        entry: &NodeId,
        exit: &NodeId,
        now_unix: u64,
        avoid: &BTreeSet<NodeId>,
    ) -> Result<(Vec<HopSpec>, u64), Error> {
        let epoch = self.epoch_at(now_unix);
        let len = self.body.epoch_secs.max(1);
        let in_overlap = epoch > 0 && now_unix < epoch * len + crate::keyring::overlap_secs(len);
        match self.choose_route_avoiding(rng, entry, exit, epoch, avoid) {
            Err(Error::NoRoute { .. }) if in_overlap => Ok((
                self.choose_route_avoiding(rng, entry, exit, epoch - 1, avoid)?,
                epoch - 1,
            )),
            r => Ok((r?, epoch)),
        }
    }

    /// When (Unix seconds) relays delete the keys of `epoch`: the end of the overlap after
    /// the epoch ([`crate::keyring::overlap_secs`]). A packet or SURB built for `epoch`
    /// cannot be peeled after that.
    pub fn keys_expire_unix(&self, epoch: u64) -> u64 {
        let len = self.body.epoch_secs.max(1);
        (epoch + 1) * len + crate::keyring::overlap_secs(len)
    }

    /// A route for a SURB, which waits at its holder before it is used, so it should live
    /// long: in an epoch's second half, with the next epoch's keys (relays hold them from
    /// the moment they publish them), else as [`Topology::plan_route`]. Returns when the
    /// SURB dies ([`Topology::keys_expire_unix`]), so that its maker can replace it in time.
    /// Every client chooses alike, so the key a SURB was built for says only in which half
    /// of an epoch it was made. Forward packets do not do this: a relay tries the current
    /// key first, so a next-epoch packet would cost it a second X25519.
    #[allow(clippy::type_complexity)]
    pub fn plan_surb_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        entry: &NodeId,
        exit: &NodeId,
        now_unix: u64,
        avoid: &BTreeSet<NodeId>,
    ) -> Result<(Vec<HopSpec>, Vec<Duration>, u64), Error> {
        let epoch = self.epoch_at(now_unix);
        let len = self.body.epoch_secs.max(1);
        if now_unix >= epoch * len + len / 2
            && let Ok(route) = self.choose_route_avoiding(rng, entry, exit, epoch + 1, avoid)
        {
            let delays = self.route_delays(rng, route.len());
            return Ok((route, delays, self.keys_expire_unix(epoch + 1)));
        }
        let (route, used) = self.current_route(rng, entry, exit, now_unix, avoid)?;
        let delays = self.route_delays(rng, route.len());
        Ok((route, delays, self.keys_expire_unix(used)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    pub(crate) fn secret(i: u8) -> [u8; 32] {
        [i; 32]
    }

    fn descriptor(i: u8, role: Role, layer: Option<u8>) -> NodeDescriptor {
        NodeDescriptor {
            id: NodeId(identity_public_key(&secret(i))),
            role,
            layer,
            address: SocketAddr::from(([127, 0, 0, i], 9000)),
            sphinx_keys: vec![EpochKey {
                epoch: 1,
                key: Key32([i; 32]),
            }],
            tls_cert: Key32([100 + i; 32]),
            published: 1,
            family: None,
            family_proof: None,
            country: None,
        }
    }

    fn body(nodes: &[(u8, NodeDescriptor)]) -> TopologyBody {
        TopologyBody {
            format: DIRECTORY_FORMAT,
            network: "test".into(),
            epoch: 1,
            serial: 1,
            valid_until: 1000,
            epoch_secs: 100,
            mean_delay_ms: 10,
            max_delay_ms: 100,
            cover: CoverParams::default(),
            nodes: nodes
                .iter()
                .map(|(i, d)| SignedDescriptor::sign(d, &secret(*i)).unwrap())
                .collect(),
            exits: Vec::new(),
            route_rules: Default::default(),
        }
    }

    fn net() -> Vec<(u8, NodeDescriptor)> {
        let mut v = vec![
            (1, descriptor(1, Role::Gateway, None)),
            (2, descriptor(2, Role::Gateway, None)),
        ];
        for l in 1..=3u8 {
            for j in 0..2u8 {
                let i = 10 + l * 2 + j;
                v.push((i, descriptor(i, Role::Mix, Some(l))));
            }
        }
        v
    }

    const AUTH: u8 = 200;

    #[test]
    fn a_signed_document_verifies_and_routes_are_stratified() {
        let doc = SignedTopology::sign(&body(&net()), &secret(AUTH)).unwrap();
        let auth = identity_public_key(&secret(AUTH));
        let t = doc.verify(&[auth], 1, 999).unwrap();
        assert_eq!(t.nodes().len(), 8);
        let g1 = net()[0].1.id;
        let g2 = net()[1].1.id;
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen_first_layer = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = t.choose_route(&mut rng, &g1, &g2, 1).unwrap();
            assert_eq!(r.len(), 5);
            assert_eq!(r[0].id, g1);
            assert_eq!(r[4].id, g2);
            for (l, hop) in r[1..4].iter().enumerate() {
                let n = t.node(&hop.id).unwrap();
                assert_eq!(n.layer, Some(l as u8 + 1));
            }
            seen_first_layer.insert(r[1].id);
        }
        assert_eq!(seen_first_layer.len(), 2, "both layer-1 mixes get picked");
        // seeded: same seed, same routes
        let a = t
            .choose_route(&mut StdRng::seed_from_u64(5), &g1, &g2, 1)
            .unwrap();
        let b = t
            .choose_route(&mut StdRng::seed_from_u64(5), &g1, &g2, 1)
            .unwrap();
        assert_eq!(a, b);
        let d = t.route_delays(&mut rng, 5);
        assert_eq!(d[0], Duration::ZERO);
        assert_eq!(d[4], Duration::ZERO);
        assert!(d.iter().all(|x| *x <= t.max_delay()));
        // no node has a key for epoch 2: no route
        assert!(t.choose_route(&mut rng, &g1, &g2, 2).is_err());
    }

    #[test]
    fn cover_params_of_older_documents_have_no_mix_loops() {
        let old: CoverParams =
            serde_json::from_str(r#"{"payload_mean_ms":20,"loop_mean_ms":200,"drop_mean_ms":200}"#)
                .unwrap();
        assert_eq!(old.mix_loop_mean_ms, 0);
        assert_eq!(old.mix_loop_rate(), 0.0);
        let new = CoverParams {
            mix_loop_mean_ms: 250,
            ..old
        };
        assert_eq!(new.mix_loop_rate(), 4.0);
        let back: CoverParams =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
        assert!(
            !CoverParams {
                mix_loop_mean_ms: 5,
                ..CoverParams::default()
            }
            .is_off()
        );
    }

    #[test]
    fn avoided_mixes_are_left_out_unless_their_layer_would_be_empty() {
        let doc = SignedTopology::sign(&body(&net()), &secret(AUTH)).unwrap();
        let auth = identity_public_key(&secret(AUTH));
        let t = doc.verify(&[auth], 1, 999).unwrap();
        let (g1, g2) = (net()[0].1.id, net()[1].1.id);
        let mix = |i: u8| net().into_iter().find(|(j, _)| *j == i).unwrap().1.id;
        // one mix of layer 2 avoided; both of layer 3 (no route without one of them)
        let avoid: BTreeSet<NodeId> = [mix(14), mix(16), mix(17)].into_iter().collect();
        let mut rng = StdRng::seed_from_u64(3);
        let mut third = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = t
                .choose_route_avoiding(&mut rng, &g1, &g2, 1, &avoid)
                .unwrap();
            assert_eq!(r[2].id, mix(15), "the avoided layer-2 mix was chosen");
            third.insert(r[3].id);
        }
        assert_eq!(third.len(), 2, "an all-avoided layer is chosen from whole");
        // gateways are never avoided
        let gws: BTreeSet<NodeId> = [g1, g2].into_iter().collect();
        let r = t
            .choose_route_avoiding(&mut rng, &g1, &g2, 1, &gws)
            .unwrap();
        assert_eq!((r[0].id, r[4].id), (g1, g2));
    }

    #[test]
    fn forged_expired_and_unsigned_documents_are_refused() {
        let auth = identity_public_key(&secret(AUTH));
        let doc = SignedTopology::sign(&body(&net()), &secret(AUTH)).unwrap();
        // expired
        assert!(matches!(
            doc.verify(&[auth], 1, 1001),
            Err(Error::Expired { .. })
        ));
        // signed by someone else
        let other = SignedTopology::sign(&body(&net()), &secret(201)).unwrap();
        assert!(matches!(
            other.verify(&[auth], 1, 0),
            Err(Error::NotEnoughSignatures { valid: 0, .. })
        ));
        // body changed after signing
        let mut tampered = doc.clone();
        tampered.body = tampered
            .body
            .replace("\"mean_delay_ms\":10", "\"mean_delay_ms\":0");
        assert_ne!(tampered.body, doc.body);
        assert!(tampered.verify(&[auth], 1, 0).is_err());
        // one signature does not meet a threshold of two, even if repeated
        let mut twice = doc.clone();
        twice.signatures.push(twice.signatures[0].clone());
        let auth2 = identity_public_key(&secret(202));
        assert!(matches!(
            twice.verify(&[auth, auth2], 2, 0),
            Err(Error::NotEnoughSignatures {
                valid: 1,
                threshold: 2
            })
        ));
        let mut both = doc.clone();
        both.add_signature(&secret(202));
        assert!(both.verify(&[auth, auth2], 2, 0).is_ok());
    }

    #[test]
    fn just_after_a_boundary_a_document_without_the_new_keys_still_gives_routes() {
        let (t, g1, g2) = verified_with_gateways(&net());
        let mut rng = StdRng::seed_from_u64(3);
        let none = BTreeSet::new();
        // Epoch 1 (100 s long): its keys.
        let (r, d) = t.plan_route(&mut rng, &g1, &g2, 150, &none).unwrap();
        assert_eq!((r.len(), d.len()), (5, 5));
        // 5 s into epoch 2, whose keys this document lacks: relays still hold epoch 1's for
        // a quarter epoch, so the route uses them.
        let (r, _) = t.plan_route(&mut rng, &g1, &g2, 205, &none).unwrap();
        assert_eq!(r.len(), 5, "epoch 1 keys: the only ones listed");
        // After the overlap: no route, rather than packets no relay can peel.
        assert!(matches!(
            t.plan_route(&mut rng, &g1, &g2, 225, &none),
            Err(Error::NoRoute { .. })
        ));
    }

    /// A document of `nodes` signed by one authority and verified, with its two gateways.
    fn verified_with_gateways(nodes: &[(u8, NodeDescriptor)]) -> (Topology, NodeId, NodeId) {
        let auth = identity_public_key(&secret(AUTH));
        let t = SignedTopology::sign(&body(nodes), &secret(AUTH))
            .unwrap()
            .verify(&[auth], 1, 0)
            .unwrap();
        let (g1, g2) = (
            t.gateways().next().unwrap().id,
            t.gateways().nth(1).unwrap().id,
        );
        (t, g1, g2)
    }

    #[test]
    fn surbs_made_late_in_an_epoch_use_the_next_epochs_keys_and_say_when_they_die() {
        let mut nodes = net();
        // Every relay lists the keys of epochs 1 and 2 (100 s epochs, 25 s overlap).
        for (_, d) in nodes.iter_mut() {
            let k = d.sphinx_keys[0].key;
            d.sphinx_keys.push(EpochKey { epoch: 2, key: k });
        }
        let (t, g1, g2) = verified_with_gateways(&nodes);
        let mut rng = StdRng::seed_from_u64(4);
        let none = BTreeSet::new();
        // First half of epoch 1: its keys, dead at 225 (the end of the overlap after it).
        let (_, _, dies) = t.plan_surb_route(&mut rng, &g1, &g2, 120, &none).unwrap();
        assert_eq!(dies, 225);
        // Second half: epoch 2's keys, which live until 325.
        let (_, _, dies) = t.plan_surb_route(&mut rng, &g1, &g2, 170, &none).unwrap();
        assert_eq!(dies, 325);
        // Forward packets keep the current epoch's keys (relays try that one first).
        assert_eq!(t.keys_expire_unix(t.epoch_at(170)), 225);
        // Without next keys listed, the current ones, and the previous during the overlap.
        let (t1, _, _) = verified_with_gateways(&net());
        let (_, _, dies) = t1.plan_surb_route(&mut rng, &g1, &g2, 170, &none).unwrap();
        assert_eq!(dies, 225);
        let (_, _, dies) = t1.plan_surb_route(&mut rng, &g1, &g2, 205, &none).unwrap();
        assert_eq!(dies, 225);
    }

    #[test]
    fn a_newer_directory_format_is_refused_for_its_version_and_the_first_still_reads() {
        let auth = identity_public_key(&secret(AUTH));
        let doc = SignedTopology::sign(&body(&net()), &secret(AUTH)).unwrap();
        assert!(
            doc.body.starts_with("{\"format\":2,"),
            "{}",
            &doc.body[..30]
        );
        // A future format with a field this software does not know: refused for its version.
        let mut newer = doc.clone();
        newer.body = doc
            .body
            .replacen("\"format\":2,", "\"format\":3,\"exits\":[],", 1);
        newer.signatures.clear();
        newer.add_signature(&secret(AUTH));
        let e = newer.verify(&[auth], 1, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused {
                    reason: crate::error::Refusal::NewerFormat {
                        got: 3,
                        supported: DIRECTORY_FORMAT
                    },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("upgrade"), "{e}");
        // A document of the first format (no field) reads as format 1.
        let mut first = doc.clone();
        first.body = doc.body.replacen("\"format\":2,", "", 1);
        first.signatures.clear();
        first.add_signature(&secret(AUTH));
        assert_eq!(first.verify(&[auth], 1, 0).unwrap().body().format, 1);
    }

    #[test]
    fn a_descriptor_signed_by_the_wrong_key_is_refused() {
        let d = descriptor(1, Role::Gateway, None);
        let good = SignedDescriptor::sign(&d, &secret(1)).unwrap();
        assert_eq!(good.verify().unwrap(), d);
        let bad = SignedDescriptor::sign(&d, &secret(2)).unwrap();
        assert!(matches!(bad.verify(), Err(Error::BadSignature { .. })));
        let mut changed = good.clone();
        changed.descriptor = changed.descriptor.replace("9000", "9001");
        assert!(matches!(changed.verify(), Err(Error::BadSignature { .. })));
        // padded or reordered JSON is refused even with a valid signature over it
        let mut padded = SignedDescriptor::sign(&d, &secret(1)).unwrap();
        padded.descriptor.push(' ');
        let key = SigningKey::from_bytes(&secret(1));
        padded.signature = hex::encode(
            key.sign(&signing_input(DESCRIPTOR_DOMAIN, &padded.descriptor))
                .to_bytes(),
        );
        assert!(
            padded
                .verify()
                .unwrap_err()
                .to_string()
                .contains("canonical")
        );
        let mut long = good.clone();
        long.descriptor = " ".repeat(MAX_DESCRIPTOR_LEN + 1);
        assert!(long.verify().unwrap_err().to_string().contains("at most"));
        let mix_without_layer = descriptor(3, Role::Mix, None);
        let s = SignedDescriptor::sign(&mix_without_layer, &secret(3)).unwrap();
        assert!(s.verify().unwrap_err().to_string().contains("layer"));
    }

    #[test]
    fn two_nodes_with_one_certificate_are_refused() {
        let mut nodes = net();
        nodes[1].1.tls_cert = nodes[0].1.tls_cert;
        let doc = SignedTopology::sign(&body(&nodes), &secret(AUTH)).unwrap();
        let err = doc
            .verify(&[identity_public_key(&secret(AUTH))], 1, 0)
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[test]
    fn missing_layers_and_unknown_gateways_are_errors() {
        let nodes: Vec<_> = net()
            .into_iter()
            .filter(|(_, d)| d.layer != Some(2))
            .collect();
        let doc = SignedTopology::sign(&body(&nodes), &secret(AUTH)).unwrap();
        let t = doc
            .verify(&[identity_public_key(&secret(AUTH))], 1, 0)
            .unwrap();
        let g = nodes[0].1.id;
        let mut rng = StdRng::seed_from_u64(1);
        assert!(
            t.choose_route(&mut rng, &g, &g, 1)
                .unwrap_err()
                .to_string()
                .contains("layer 2")
        );
        let stranger = NodeId::from_bytes([9; 32]);
        assert!(t.choose_route(&mut rng, &stranger, &g, 1).is_err());
    }
}
