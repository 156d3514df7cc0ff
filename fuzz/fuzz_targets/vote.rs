//! Authority votes (proto/src/consensus.rs), as an authority reads a peer's vote
//! (node/src/authority/gather.rs): `serde_json::from_slice::<SignedVote>` then
//! `SignedVote::verify(&[peer])` with one fixed peer key. So that the fuzzer also gets past
//! the vote signature, the input is also taken as the vote text, signed by that peer and
//! verified: that reaches the `VoteBody` JSON and each descriptor's `verify`. A verified vote
//! has one parsed descriptor per listed descriptor, for distinct relays.
#![no_main]

use lethe_fuzz::{AUTHORITY_SECRET, VOTE_DOMAIN, authority_keys, sign_text};
use lethe_proto::consensus::{SignedVote, VoteBody};
use lethe_proto::topology::NodeDescriptor;
use lethe_proto::{Error, Key32};
use libfuzzer_sys::fuzz_target;

fn check(r: Result<(VoteBody, Vec<NodeDescriptor>), Error>) {
    if let Ok((body, parsed)) = r {
        assert_eq!(body.descriptors.len(), parsed.len());
        let mut ids: Vec<_> = parsed.iter().map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), parsed.len());
    }
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static KEYS: Vec<Key32> = authority_keys();
    }
    KEYS.with(|keys| {
        if let Ok(v) = serde_json::from_slice::<SignedVote>(data) {
            check(v.verify(keys));
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let v = SignedVote {
            vote: text.to_owned(),
            authority: keys[0],
            signature: sign_text(&AUTHORITY_SECRET, VOTE_DOMAIN, text),
        };
        check(v.verify(keys));
    });
});
