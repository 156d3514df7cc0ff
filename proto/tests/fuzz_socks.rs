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
