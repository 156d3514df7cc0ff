//! Addresses and keys written as hex (proto/src/address.rs): `ClientAddress::from_str`
//! (`CLIENT.KEY@GATEWAY`, what a user or a peer hands over), `Key32::parse_hex`, `NodeId` and
//! `ClientId` from `str`, and `Key32` from JSON (every key in a descriptor, document or vote).
//! What parses must print back to a string that parses to the same value.
#![no_main]

use lethe_proto::{ClientAddress, ClientId, Key32, NodeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Key32>(data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = s.parse::<ClientAddress>() {
        assert_eq!(a.to_string().parse::<ClientAddress>().ok(), Some(a));
    }
    if let Ok(k) = Key32::parse_hex(s, "fuzz") {
        assert_eq!(Key32::parse_hex(&k.to_hex(), "fuzz").ok(), Some(k));
    }
    let _ = s.parse::<NodeId>();
    let _ = s.parse::<ClientId>();
});
