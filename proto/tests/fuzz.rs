//! Property tests over hostile input: the frame codec, packet processing, the directory's
//! documents and client addresses never panic on arbitrary bytes, and never accept a
//! modified document. Bounded: 256 cases each (proptest's default), a few seconds in all.
//! A failing case is saved under `proptest-regressions/` and replayed first on every run.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use lethe_proto::frame::{FRAME_VERSION, FrameKind, HEADER_LEN};
use lethe_proto::packet::{HopSpec, PACKET_SIZE, build_packet, sphinx_public_key};
use lethe_proto::topology::{NodeDescriptor, Role, identity_public_key};
use lethe_proto::{
    ClientAddress, ClientId, EpochKey, Frame, FrameHeader, Key32, NodeId, SignedDescriptor,
    SignedTopology, SphinxNode, TopologyBody,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const NODE_SECRET: [u8; 32] = [7; 32];

fn valid_packet(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let route = [
        HopSpec {
            id: NodeId::from_bytes([1; 32]),
            sphinx_key: sphinx_public_key(&NODE_SECRET),
        },
        HopSpec {
            id: NodeId::from_bytes([2; 32]),
            sphinx_key: sphinx_public_key(&[8; 32]),
        },
    ];
    build_packet(
        &mut rng,
        &route,
        ClientId::from_bytes([3; 32]),
        &[Duration::ZERO; 2],
        b"m",
    )
    .unwrap()
    .into_vec()
}

fn signed_document() -> SignedTopology {
    let secret = [9u8; 32];
    let d = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role: Role::Mix,
        layer: Some(1),
        address: SocketAddr::from(([127, 0, 0, 1], 9000)),
        sphinx_keys: vec![EpochKey {
            epoch: 1,
            key: Key32([1; 32]),
        }],
        tls_cert: Key32([2; 32]),
        published: 1,
        family: None,
        family_proof: None,
        country: None,
    };
    let body = TopologyBody {
        format: lethe_proto::topology::DIRECTORY_FORMAT,
        network: "fuzz".into(),
        epoch: 1,
        serial: 1,
        valid_until: u64::MAX,
        epoch_secs: 60,
        mean_delay_ms: 10,
        max_delay_ms: 100,
        cover: Default::default(),
        nodes: vec![SignedDescriptor::sign(&d, &secret).unwrap()],
        exits: Vec::new(),
        route_rules: Default::default(),
    };
    SignedTopology::sign(&body, &[42; 32]).unwrap()
}

proptest! {
    #[test]
    fn frame_decode_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        if let Ok(Some((frame, used))) = Frame::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            let mut again = Vec::new();
            Frame::encode(frame.kind, frame.body, &mut again).unwrap();
            prop_assert_eq!(&again[..], &bytes[..used]);
        }
    }

    #[test]
    fn frame_headers_are_accepted_exactly_when_valid(b in any::<[u8; HEADER_LEN]>()) {
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let valid = b[0] == FRAME_VERSION
            && match b[1] {
                1 => len == PACKET_SIZE,
                2 => len <= FrameKind::Message.length_bounds().1,
                3 => len == 0,
                _ => false,
            };
        prop_assert_eq!(FrameHeader::parse(b).is_ok(), valid);
    }

    #[test]
    fn processing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let node = SphinxNode::new(NODE_SECRET, Duration::from_secs(1));
        let _ = node.process(&bytes, |_| false);
    }

    #[test]
    fn processing_a_mutated_packet_never_panics(
        seed in 0u64..4,
        flips in proptest::collection::vec((0usize..PACKET_SIZE, 1u8..=255), 1..8),
    ) {
        let mut p = valid_packet(seed);
        for (i, x) in flips {
            p[i] ^= x;
        }
        let node = SphinxNode::new(NODE_SECRET, Duration::from_secs(1));
        let _ = node.process(&p, |_| false);
    }

    #[test]
    fn documents_and_addresses_from_arbitrary_text_never_panic(s in ".{0,400}") {
        if let Ok(doc) = serde_json::from_str::<SignedTopology>(&s) {
            let _ = doc.verify(&[Key32([0; 32])], 1, 0);
        }
        if let Ok(d) = serde_json::from_str::<SignedDescriptor>(&s) {
            let _ = d.verify();
        }
        let _ = s.parse::<ClientAddress>();
    }

    #[test]
    fn a_modified_document_is_never_accepted(i in 0usize..10_000, c in any::<char>()) {
        let doc = signed_document();
        let auth = identity_public_key(&[42; 32]);
        prop_assert!(doc.verify(&[auth], 1, 0).is_ok());
        let mut body: Vec<char> = doc.body.chars().collect();
        let at = i % body.len();
        prop_assume!(body[at] != c);
        body[at] = c;
        let forged = SignedTopology { body: body.into_iter().collect(), ..doc };
        prop_assert!(forged.verify(&[auth], 1, 0).is_err());
    }
}
