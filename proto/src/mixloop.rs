//! A mix's own cover traffic: loop packets ("mix loops" in Loopix) that the mix builds,
//! holds in its own pool like any packet, and that come back to it after a tour of the
//! network.
//!
//! # Route
//!
//! A mix of layer `L` sends a loop along the path every packet leaving it could take:
//! the mixes of layers `L+1..=3`, an exit gateway, then, as if that gateway were an entry,
//! the mixes of layers `1..L`, and finally itself, which recognises the loop by a secret
//! destination only it knows and drops it. Every link the loop crosses (`L → L+1`,
//! `3 → gateway`, `gateway → 1`, `L-1 → L`) is one real packets cross too, and the loop is a
//! normal-sized Sphinx packet with normal per-hop delays (exponential at mixes, none at the
//! gateway), so on the wire it looks like client traffic. A loop never ends at a gateway:
//! a gateway would keep it in some mailbox. The gateway on the way sees a packet from a
//! layer-3 mix that it forwards to layer 1 instead of delivering it: it can tell a loop from
//! client traffic, as can any mix in the loop that colludes with it.
//!
//! Building a loop costs four hops of Sphinx creation (0.5 to 1 ms of CPU in a release
//! build on the 2-core test machine): drivers build them off their I/O threads.

use std::time::Duration;

use rand::{CryptoRng, Rng};

use crate::error::Missing;
use crate::packet::{HopSpec, Packet, build_packet, sample_delay};
use crate::topology::{MIX_LAYERS, NodeDescriptor, Role, Topology};
use crate::{ClientId, Error, NodeId};

/// A loop packet ready to enter the builder's own pool.
#[derive(Debug)]
pub struct LoopPacket {
    /// Its first hop (where the builder sends it when its hold ends).
    pub next: NodeId,
    /// How long the builder holds it, drawn like a sender's delay for this hop.
    pub hold: Duration,
    /// The packet.
    pub packet: Packet,
}

fn pick<'a, R: Rng + ?Sized>(
    rng: &mut R,
    t: &'a Topology,
    epoch: u64,
    what: Missing,
    ok: impl Fn(&NodeDescriptor) -> bool,
) -> Result<(&'a NodeDescriptor, HopSpec), Error> {
    let usable: Vec<(&NodeDescriptor, HopSpec)> = t
        .nodes()
        .iter()
        .filter(|n| ok(n))
        .filter_map(|n| {
            n.key_for(epoch).map(|k| {
                (
                    n,
                    HopSpec {
                        id: n.id,
                        sphinx_key: k,
                    },
                )
            })
        })
        .collect();
    if usable.is_empty() {
        return Err(Error::NoRoute { what });
    }
    Ok(usable[(rng.next_u64() % usable.len() as u64) as usize])
}

/// The route of a loop from the mix `me`, for packets of `epoch` (see the module docs), and
/// the delay each hop is asked for: exponential with the network's mean at the mixes, none
/// at the gateway and at the final hop (`me`, which only drops it).
pub fn mix_loop_route<R: Rng + ?Sized>(
    rng: &mut R,
    t: &Topology,
    me: &NodeId,
    epoch: u64,
) -> Result<(Vec<HopSpec>, Vec<Duration>), Error> {
    let own = t.node(me).ok_or(Error::UnknownNode { id: *me })?;
    let layer = match (own.role, own.layer) {
        (Role::Mix, Some(l)) if (1..=MIX_LAYERS).contains(&l) => l,
        _ => {
            return Err(Error::NoRoute {
                what: Missing::NotAMix,
            });
        }
    };
    let own_hop = HopSpec {
        id: own.id,
        sphinx_key: own.key_for(epoch).ok_or(Error::NoRoute {
            what: Missing::OwnKey { epoch },
        })?,
    };
    let mut route = Vec::with_capacity(MIX_LAYERS as usize + 1);
    let mut delays = Vec::with_capacity(MIX_LAYERS as usize + 1);
    let mix = |rng: &mut R, l: u8| {
        pick(rng, t, epoch, Missing::Mix { layer: l, epoch }, |n| {
            n.role == Role::Mix && n.layer == Some(l)
        })
    };
    for l in layer + 1..=MIX_LAYERS {
        route.push(mix(rng, l)?.1);
        delays.push(sample_delay(rng, t.mean_delay(), t.max_delay()));
    }
    route.push(
        pick(rng, t, epoch, Missing::GatewayKey { epoch }, |n| {
            n.role == Role::Gateway
        })?
        .1,
    );
    delays.push(Duration::ZERO);
    for l in 1..layer {
        route.push(mix(rng, l)?.1);
        delays.push(sample_delay(rng, t.mean_delay(), t.max_delay()));
    }
    route.push(own_hop);
    delays.push(Duration::ZERO);
    Ok((route, delays))
}

/// Build one loop packet for the mix `me`, addressed to its secret `loop_id`, with the hold
/// the mix applies to it itself.
pub fn build_mix_loop<R: Rng + CryptoRng + ?Sized>(
    rng: &mut R,
    t: &Topology,
    me: &NodeId,
    epoch: u64,
    loop_id: ClientId,
) -> Result<LoopPacket, Error> {
    let (route, delays) = mix_loop_route(rng, t, me, epoch)?;
    let hold = sample_delay(rng, t.mean_delay(), t.max_delay());
    let packet = build_packet(rng, &route, loop_id, &delays, &[])?;
    Ok(LoopPacket {
        next: route[0].id,
        hold,
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::sphinx_public_key;
    use crate::topology::{EpochKey, TopologyBody, identity_public_key};
    use crate::{Key32, Processed, SphinxNode};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    /// Two gateways (1, 2) and two mixes per layer (12..=17); Sphinx secret of node i: [i; 32].
    fn topology() -> (Topology, HashMap<NodeId, SphinxNode>) {
        let mut nodes = Vec::new();
        let mut sphinx = HashMap::new();
        let mut add = |i: u8, role: Role, layer: Option<u8>| {
            let id = NodeId(identity_public_key(&[i; 32]));
            nodes.push(NodeDescriptor {
                id,
                role,
                layer,
                address: SocketAddr::from(([127, 0, 0, i], 9000)),
                sphinx_keys: vec![EpochKey {
                    epoch: 1,
                    key: sphinx_public_key(&[i; 32]),
                }],
                tls_cert: Key32([100 + i; 32]),
                published: 1,
                family: None,
                family_proof: None,
                country: None,
            });
            sphinx.insert(id, SphinxNode::new([i; 32], Duration::from_secs(1)));
        };
        add(1, Role::Gateway, None);
        add(2, Role::Gateway, None);
        for l in 1..=3u8 {
            for j in 0..2u8 {
                add(10 + l * 2 + j, Role::Mix, Some(l));
            }
        }
        let body = TopologyBody {
            format: crate::topology::DIRECTORY_FORMAT,
            network: "test".into(),
            epoch: 1,
            serial: 1,
            valid_until: 1000,
            epoch_secs: 100,
            mean_delay_ms: 10,
            max_delay_ms: 100,
            cover: Default::default(),
            nodes: Vec::new(),
            exits: Vec::new(),
            route_rules: Default::default(),
        };
        (Topology::new(body, nodes).unwrap(), sphinx)
    }

    fn role_of(t: &Topology, id: &NodeId) -> (Role, Option<u8>) {
        let n = t.node(id).unwrap();
        (n.role, n.layer)
    }

    #[test]
    fn loops_follow_the_stratified_order_and_come_back() {
        let (t, _) = topology();
        let mut rng = StdRng::seed_from_u64(1);
        for i in 12..=17u8 {
            let me = NodeId(identity_public_key(&[i; 32]));
            let layer = t.node(&me).unwrap().layer.unwrap();
            for _ in 0..20 {
                let (route, delays) = mix_loop_route(&mut rng, &t, &me, 1).unwrap();
                assert_eq!(route.len(), 4, "three other hops, then itself");
                assert_eq!(delays.len(), 4);
                assert_eq!(route[3].id, me);
                // the roles along the way: the layers after mine, a gateway, the layers before
                let mut want: Vec<(Role, Option<u8>)> = (layer + 1..=3)
                    .map(|l| (Role::Mix, Some(l)))
                    .chain([(Role::Gateway, None)])
                    .chain((1..layer).map(|l| (Role::Mix, Some(l))))
                    .collect();
                want.push((Role::Mix, Some(layer)));
                let got: Vec<_> = route.iter().map(|h| role_of(&t, &h.id)).collect();
                assert_eq!(got, want);
                for (h, d) in route.iter().zip(&delays) {
                    if role_of(&t, &h.id).0 == Role::Gateway || h.id == me {
                        assert_eq!(*d, Duration::ZERO);
                    }
                    assert!(*d <= t.max_delay());
                }
            }
        }
        // gateways send no mix loops; unknown nodes and epochs have no route
        let gw = NodeId(identity_public_key(&[1; 32]));
        assert!(mix_loop_route(&mut rng, &t, &gw, 1).is_err());
        let me = NodeId(identity_public_key(&[12; 32]));
        assert!(mix_loop_route(&mut rng, &t, &me, 2).is_err());
        let stranger = NodeId::from_bytes([9; 32]);
        assert!(matches!(
            mix_loop_route(&mut rng, &t, &stranger, 1),
            Err(Error::UnknownNode { .. })
        ));
    }

    #[test]
    fn a_loop_packet_crosses_real_hops_and_ends_at_its_builder() {
        let (t, sphinx) = topology();
        let mut rng = StdRng::seed_from_u64(2);
        let loop_id = ClientId::from_bytes([0x5a; 32]);
        for i in [12u8, 15, 17] {
            let me = NodeId(identity_public_key(&[i; 32]));
            let lp = build_mix_loop(&mut rng, &t, &me, 1, loop_id).unwrap();
            assert!(lp.hold <= t.max_delay());
            let (mut at, mut packet) = (lp.next, lp.packet);
            let mut hops = 0;
            loop {
                hops += 1;
                match sphinx[&at].process(packet.as_bytes(), |_| false).unwrap() {
                    Processed::Forward {
                        next, packet: p, ..
                    } => {
                        at = next;
                        packet = p;
                    }
                    Processed::Deliver {
                        destination,
                        message,
                    } => {
                        assert_eq!(at, me, "the loop ends at its builder");
                        assert_eq!(destination, loop_id);
                        assert!(message.is_empty());
                        break;
                    }
                    Processed::Reply { .. } => panic!("a mix loop is not a SURB reply"),
                }
            }
            assert_eq!(hops, 4);
        }
    }
}
