//! A relay peeling packets (proto/src/packet.rs `SphinxNode::process`, over
//! proto/src/sphinx.rs `HopKey::peel`), called as node/src/relay.rs `process_with_ring` does:
//! `node.process(bytes, |tag| replay_filter.check_and_insert(tag))`.
//!
//! The first input byte picks a mode (`byte % 4`), the rest is the mode's input:
//!
//! * 0, raw: the bytes as a packet, to `SphinxNode::process` (which takes only
//!   `PACKET_SIZE`) and to `HopKey::peel` (which takes any length above the header plus 32).
//!   Random bytes stop at the MAC; a mutated real packet (seed) gets past it when only the
//!   payload changed.
//! * 1 and 2, crafted: a header with a valid MAC around routing data the fuzzer chooses (any
//!   sender who knows the relay's public key can make one): 32 bytes of ephemeral secret,
//!   300 bytes of plaintext routing data, then the payload. Mode 1 cuts or zero-pads the
//!   payload to `PAYLOAD_SIZE` (`SphinxNode::process`); mode 2 keeps its length
//!   (`HopKey::peel` when it is not `PAYLOAD_SIZE`). This reaches the flag, version, delay,
//!   blinding and payload code behind the MAC.
//! * 3, round trip: a real packet built with `build_packet` over 1 to 5 hops (all this
//!   relay, under different ids), with delays, destination, message and seed from the input,
//!   then peeled hop by hop. Each hop must forward to the next id with the chosen delay (or
//!   refuse a delay above the cap) and the last must deliver the message unchanged.
#![no_main]

use std::time::Duration;

use lethe_fuzz::{RELAY_MAX_DELAY, RELAY_SPHINX_SECRET, craft_packet, relay};
use lethe_proto::packet::{HopSpec, MAX_MESSAGE_LEN, PACKET_SIZE, PAYLOAD_SIZE, build_packet};
use lethe_proto::sphinx::{BETA_LEN, HopKey};
use lethe_proto::{ClientId, Error, NodeId, Processed, SphinxNode};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

thread_local! {
    static RELAY: SphinxNode = relay();
    static KEY: Option<HopKey> = HopKey::new(&RELAY_SPHINX_SECRET).ok();
}

fn never(_: &[u8; 32]) -> bool {
    false
}

fn cap_ns() -> u64 {
    u64::try_from(RELAY_MAX_DELAY.as_nanos()).unwrap_or(u64::MAX)
}

/// Peel with both entry points; a forwarded packet is peeled once more (it must keep its
/// size).
fn peel_any(bytes: &[u8]) {
    RELAY.with(|node| {
        if let Ok(Processed::Forward { packet, .. }) = node.process(bytes, never) {
            assert_eq!(packet.as_bytes().len(), PACKET_SIZE);
            let _ = node.process(packet.as_bytes(), never);
        }
    });
    if bytes.len() != PACKET_SIZE {
        KEY.with(|k| {
            if let Some(k) = k
                && let Ok(lethe_proto::sphinx::Peeled::Forward { packet, .. }) =
                    k.peel(bytes, cap_ns(), never)
            {
                assert_eq!(packet.len(), bytes.len());
            }
        });
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = rest.split_at(n.min(rest.len()));
    *rest = b;
    a
}

fn array<const N: usize>(rest: &mut &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let s = take(rest, N);
    a[..s.len()].copy_from_slice(s);
    a
}

fn crafted(keep_len: bool, mut rest: &[u8]) {
    let eph: [u8; 32] = array(&mut rest);
    let routing = take(&mut rest, BETA_LEN);
    if keep_len {
        let packet = craft_packet(&RELAY_SPHINX_SECRET, eph, routing, rest);
        peel_any(&packet);
    } else {
        let mut payload = rest.to_vec();
        payload.resize(PAYLOAD_SIZE, 0);
        let packet = craft_packet(&RELAY_SPHINX_SECRET, eph, routing, &payload);
        assert_eq!(packet.len(), PACKET_SIZE);
        peel_any(&packet);
    }
}

fn round_trip(mut rest: &[u8]) {
    let [hops] = array::<1>(&mut rest);
    let hops = 1 + usize::from(hops) % 5;
    let seed: [u8; 32] = array(&mut rest);
    let destination = ClientId::from_bytes(array(&mut rest));
    let delays: Vec<Duration> = (0..hops)
        .map(|_| Duration::from_millis(u64::from(u16::from_be_bytes(array(&mut rest)))))
        .collect();
    let message = &rest[..rest.len().min(MAX_MESSAGE_LEN)];
    RELAY.with(|node| {
        let route: Vec<HopSpec> = (0..hops)
            .map(|i| HopSpec {
                id: NodeId::from_bytes([i as u8 + 1; 32]),
                sphinx_key: node.public_key(),
            })
            .collect();
        let mut rng = StdRng::from_seed(seed);
        let mut packet = build_packet(&mut rng, &route, destination, &delays, message)
            .expect("a route of 1 to 5 hops and a short message build");
        for i in 0..hops {
            match node.process(packet.as_bytes(), never) {
                Ok(Processed::Forward {
                    next,
                    delay,
                    packet: p,
                }) => {
                    assert!(i + 1 < hops, "the last hop forwarded");
                    assert_eq!(next, route[i + 1].id);
                    assert_eq!(delay, delays[i]);
                    packet = p;
                }
                Ok(Processed::Deliver {
                    destination: d,
                    message: m,
                }) => {
                    assert_eq!(i + 1, hops, "hop {i} of {hops} delivered");
                    assert_eq!(d, destination);
                    assert_eq!(m, message);
                    return;
                }
                Ok(Processed::Reply { .. }) => panic!("a forward packet came out as a reply"),
                Err(Error::DelayTooLong { .. }) => {
                    assert!(delays[i] > RELAY_MAX_DELAY);
                    return;
                }
                Err(e) => panic!("hop {i} of {hops} refused a real packet: {e}"),
            }
        }
        panic!("never delivered");
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => peel_any(rest),
        1 => crafted(false, rest),
        2 => crafted(true, rest),
        _ => round_trip(rest),
    }
});
