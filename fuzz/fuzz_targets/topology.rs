//! Topology documents (proto/src/topology.rs), as a relay or client reads what the directory
//! serves (net/src/directory.rs `fetch`): `serde_json::from_slice::<SignedTopology>` then
//! `SignedTopology::verify(&[authority], 1, now)` with one fixed authority key. A document
//! not signed by that key stops at the signature check, so the input is also taken as the
//! body text, signed by the fixture authority and verified: that reaches the body's JSON, each
//! node's `SignedDescriptor::verify` and `Topology::new`.
#![no_main]

use lethe_fuzz::{AUTHORITY_SECRET, NOW_UNIX, authority_keys};
use lethe_proto::{Key32, SignedTopology, Topology};
use libfuzzer_sys::fuzz_target;

fn check(t: &Topology) {
    assert!(t.body().valid_until >= NOW_UNIX);
    for n in t.nodes() {
        assert_eq!(t.node(&n.id).map(|m| m.id), Some(n.id));
        assert!(t.node_by_cert(&n.tls_cert).is_some());
    }
    let _ = t.gateways().count();
    let _ = t.mean_delay();
    let _ = t.max_delay();
    let _ = t.client_rates();
    let _ = t.epoch_at(NOW_UNIX);
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static KEYS: Vec<Key32> = authority_keys();
    }
    KEYS.with(|keys| {
        if let Ok(doc) = serde_json::from_slice::<SignedTopology>(data)
            && let Ok(t) = doc.verify(keys, 1, NOW_UNIX)
        {
            check(&t);
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let mut doc = SignedTopology {
            body: text.to_owned(),
            signatures: Vec::new(),
        };
        doc.add_signature(&AUTHORITY_SECRET);
        if let Ok(t) = doc.verify(keys, 1, NOW_UNIX) {
            check(&t);
        }
    });
});
