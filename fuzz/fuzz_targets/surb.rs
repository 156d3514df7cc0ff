//! SURBs (proto/src/surb.rs), as an exit reads them from a client's chunk
//! (node/src/exit.rs): `Surb::from_bytes` on the first `SURB_SIZE` bytes (and on the whole
//! input, for other lengths); when that parses, `Surb::into_packet` with the rest of the input
//! as the reply message (cut to `MAX_MESSAGE_LEN`), and the packet is then peeled by the
//! relay the seeds' SURBs start at. The bytes after the first `SURB_SIZE` are also opened as a
//! sealed reply payload by a fixed `SurbKey::recover` (what a client does with the body of a
//! Reply frame from its gateway).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use lethe_fuzz::relay;
use lethe_proto::packet::{HopSpec, MAX_MESSAGE_LEN, PACKET_SIZE};
use lethe_proto::surb::{SURB_SIZE, Surb, SurbKey};
use lethe_proto::{ClientId, NodeId, SphinxNode};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

thread_local! {
    static RELAY: SphinxNode = relay();
}

/// A SURB key of the fixture relay (the creator's side).
fn key() -> Option<&'static SurbKey> {
    static KEY: OnceLock<Option<SurbKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let public = relay().public_key();
        let route = [HopSpec {
            id: NodeId::from_bytes([1; 32]),
            sphinx_key: public,
        }];
        Surb::create(
            &mut StdRng::seed_from_u64(7),
            &route,
            ClientId::from_bytes([2; 32]),
            &[Duration::ZERO],
        )
        .ok()
        .map(|(_, k)| k)
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let _ = Surb::from_bytes(data);
    let (head, rest) = data.split_at(data.len().min(SURB_SIZE));
    if let Some(k) = key() {
        let _ = k.recover(rest);
    }
    let Ok(surb) = Surb::from_bytes(head) else {
        return;
    };
    let _ = surb.first_hop();
    assert_eq!(surb.to_bytes(), head);
    let message = &rest[..rest.len().min(MAX_MESSAGE_LEN)];
    if let Ok((_, packet)) = surb.into_packet(message) {
        assert_eq!(packet.as_bytes().len(), PACKET_SIZE);
        RELAY.with(|node| {
            let _ = node.process(packet.as_bytes(), |_| false);
        });
    }
});
