//! Relay descriptors (proto/src/topology.rs), as an authority reads an upload
//! (node/src/authority/routes.rs) and as everyone reads the `nodes` of a document:
//! `serde_json::from_slice::<SignedDescriptor>` then `SignedDescriptor::verify`. So that the
//! fuzzer also gets past the signature, the input is also taken as descriptor text and
//! signed with the fixture relay's identity key (a seed descriptor names that key), then
//! verified: what parses must then be in canonical form.
#![no_main]

use lethe_fuzz::{DESCRIPTOR_DOMAIN, RELAY_IDENTITY_SECRET, sign_text};
use lethe_proto::SignedDescriptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = serde_json::from_slice::<SignedDescriptor>(data)
        && let Ok(n) = d.verify()
    {
        assert_eq!(serde_json::to_string(&n).ok(), Some(d.descriptor.clone()));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signed = SignedDescriptor {
        descriptor: text.to_owned(),
        signature: sign_text(&RELAY_IDENTITY_SECRET, DESCRIPTOR_DOMAIN, text),
    };
    if let Ok(n) = signed.verify() {
        assert_eq!(serde_json::to_string(&n).ok().as_deref(), Some(text));
        assert!(n.validate().is_ok());
    }
});
