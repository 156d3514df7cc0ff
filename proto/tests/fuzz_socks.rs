//! Property tests of the SOCKS5 codec and the stream layer's chunk encoding: arbitrary and
//! mutated bytes never panic, and valid messages round-trip. Bounded: 256 cases each.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use lethe_proto::socks::{Parsed, TargetAddr, encode_request, parse_greeting, parse_request};
use proptest::prelude::*;

fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| TargetAddr::Ip(SocketAddr::from((Ipv4Addr::from(a), p)))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| TargetAddr::Ip(SocketAddr::from((Ipv6Addr::from(a), p)))),
        ("[a-z0-9.-]{1,63}|\\PC{1,60}", any::<u16>())
            .prop_filter("1 to 255 bytes", |(d, _)| !d.is_empty() && d.len() <= 255)
            .prop_map(|(d, p)| TargetAddr::Domain(d, p)),
    ]
}

proptest! {
    #[test]
    fn socks_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for end in 0..bytes.len().min(300) {
            if let Ok(Parsed::Complete { consumed, .. }) = parse_greeting(&bytes[..end]) {
                prop_assert!(consumed <= end);
            }
            if let Ok(Parsed::Complete { consumed, .. }) = parse_request(&bytes[..end]) {
                prop_assert!(consumed <= end);
            }
        }
    }

    #[test]
    fn requests_round_trip_and_every_prefix_needs_more(
        t in target(),
        extra in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let wire = encode_request(&t);
        for end in 0..wire.len() {
            prop_assert_eq!(parse_request(&wire[..end]).unwrap(), Parsed::NeedMore);
        }
        let mut with_extra = wire.clone();
        with_extra.extend_from_slice(&extra);
        prop_assert_eq!(
            parse_request(&with_extra).unwrap(),
            Parsed::Complete { value: t, consumed: wire.len() }
        );
    }

    #[test]
    fn mutated_requests_never_panic(t in target(), i in any::<usize>(), b in any::<u8>()) {
        let mut wire = encode_request(&t);
        let at = i % wire.len();
        wire[at] = b;
        if let Ok(Parsed::Complete { consumed, .. }) = parse_request(&wire) {
            prop_assert!(consumed <= wire.len());
        }
    }
}

proptest! {
    #[test]
    fn surb_parsing_never_panics(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), lethe_proto::surb::SURB_SIZE),
            proptest::collection::vec(any::<u8>(), 0..800),
        ]
    ) {
        if let Ok(s) = lethe_proto::surb::Surb::from_bytes(&bytes) {
            let _ = s.into_packet(b"x");
        }
    }
}

fn chunk() -> impl Strategy<Value = lethe_proto::stream::Chunk> {
    use lethe_proto::socks::Reply;
    use lethe_proto::stream::{AckFrame, Body, Chunk, MAX_ACK_RANGES};
    use lethe_proto::surb::SURB_SIZE;
    let body = prop_oneof![
        Just(None),
        proptest::option::of(target()).prop_map(|t| Some(Body::Open(t))),
        proptest::collection::vec(any::<u8>(), 0..1000).prop_map(|d| Some(Body::Data(d))),
        Just(Some(Body::Fin)),
        (0u8..=8).prop_map(|c| Reply::from_code(c).map(Body::Reset)),
    ];
    let ack = proptest::option::of(
        (
            0u32..1000,
            proptest::collection::vec((1u32..50, 0u32..50), 0..=MAX_ACK_RANGES),
        )
            .prop_map(|(cumulative, gaps)| {
                let mut at = cumulative;
                let ranges = gaps
                    .into_iter()
                    .map(|(gap, len)| {
                        let first = at + gap;
                        at = first + len;
                        (first, at)
                    })
                    .collect();
                AckFrame { cumulative, ranges }
            }),
    );
    (any::<u64>(), any::<u32>(), body, ack, 0usize..=2).prop_map(
        move |(stream, seq, body, ack, k)| {
            let ack = if body.is_none() {
                Some(ack.unwrap_or_default())
            } else {
                ack
            };
            Chunk {
                stream,
                seq,
                body,
                ack,
                surbs: vec![vec![0x11; SURB_SIZE]; k],
            }
        },
    )
}

proptest! {
    #[test]
    fn chunk_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
        let _ = lethe_proto::stream::Chunk::decode(&bytes);
        // and past the version and kind checks, into the fields
        let mut b = bytes;
        if b.len() >= 3 {
            b[0] = 1;
            b[1] %= 5;
            b[2] %= 4;
            let _ = lethe_proto::stream::Chunk::decode(&b);
        }
    }

    #[test]
    fn chunks_round_trip_and_mutations_never_panic(
        c in chunk(),
        i in any::<usize>(),
        b in any::<u8>(),
        cut in any::<usize>(),
    ) {
        use lethe_proto::stream::Chunk;
        let wire = c.encode().unwrap();
        prop_assert!(wire.len() <= lethe_proto::packet::MAX_MESSAGE_LEN);
        prop_assert_eq!(Chunk::decode(&wire).unwrap(), c);
        let mut m = wire.clone();
        let at = i % m.len();
        m[at] = b;
        let _ = Chunk::decode(&m);
        prop_assert!(Chunk::decode(&wire[..cut % wire.len()]).is_err());
    }
}
