//! The authority's unit tests: uploads, probes, rounds and the documents served.

use lethe_proto::consensus::{SignedVote, VoteBody};
use lethe_proto::error::{ErrorKind, Staleness};
use lethe_proto::topology::{NodeDescriptor, Role, identity_public_key};
use lethe_proto::{Key32, NodeId, SignedDescriptor, SignedTopology};

use super::*;
use crate::config::AuthoritySection;

fn signed_at(i: u8, port: u16, published: u64) -> SignedDescriptor {
    let secret = [i; 32];
    let d = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role: Role::Mix,
        layer: Some(1),
        address: ([127, 0, 0, i], port).into(),
        sphinx_keys: vec![lethe_proto::EpochKey {
            epoch: 10,
            key: Key32([i; 32]),
        }],
        tls_cert: Key32([i; 32]),
        published,
        family: None,
        family_proof: None,
        country: None,
    };
    SignedDescriptor::sign(&d, &secret).unwrap()
}

fn params(threshold: usize, peers: usize) -> AuthoritySection {
    AuthoritySection {
        epoch_secs: 100,
        descriptor_ttl_secs: 500,
        vote_interval_secs: 10,
        threshold,
        peers: (0..peers).map(|i| format!("http://peer{i}")).collect(),
        ..Default::default()
    }
}

/// Probe every due relay and say it answered.
fn reach_all(st: &mut AuthorityState, now: u64) {
    for t in st.probe_targets(now) {
        st.probed(&t, true, now);
    }
}

fn parse(b: Vec<u8>) -> SignedTopology {
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn uploads_are_checked_in_constant_time_per_upload() {
    let mut st = AuthorityState::new(params(1, 0), [77; 32], vec![]);
    st.register(signed_at(1, 1, 1000), 1000).unwrap();
    // the same time with other content is a conflict
    assert!(st.register(signed_at(1, 3, 1000), 1000).is_err());
    // a newer descriptor replaces the held one; replaying the older one is refused
    st.register(signed_at(5, 1, 1090), 1100).unwrap();
    st.register(signed_at(5, 2, 1095), 1100).unwrap();
    let err = st.register(signed_at(5, 1, 1090), 1100).unwrap_err();
    assert!(err.to_string().contains("older"), "{err}");
    assert!(
        matches!(
            err,
            lethe_proto::Error::Stale {
                what: "descriptor",
                why: Staleness::OlderThanHeld {
                    published: 1090,
                    held: 1095
                }
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Stale);
    // descriptors past their lifetime are stale too; future ones are refused
    let err = st.register(signed_at(6, 1, 500), 1100).unwrap_err();
    assert!(err.to_string().contains("stale"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Stale);
    let err = st.register(signed_at(6, 1, 2000), 1100).unwrap_err();
    assert!(err.to_string().contains("future"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Drop);
    // a descriptor claiming the certificate of a relay that answers for it is refused
    reach_all(&mut st, 1100);
    let secret = [8u8; 32];
    let squatter = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role: Role::Gateway,
        layer: None,
        address: ([127, 0, 0, 8], 1).into(),
        sphinx_keys: vec![lethe_proto::EpochKey {
            epoch: 11,
            key: Key32([8; 32]),
        }],
        tls_cert: Key32([5; 32]),
        published: 1100,
        family: None,
        family_proof: None,
        country: None,
    };
    let err = st
        .register(SignedDescriptor::sign(&squatter, &secret).unwrap(), 1100)
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // a forged descriptor (signed by another key) is refused
    let mut forged = signed_at(3, 1, 1100);
    forged.signature = signed_at(4, 1, 1100).signature;
    assert!(st.register(forged, 1100).is_err());
}

#[test]
fn a_relay_offline_cannot_be_squatted() {
    let mut st = AuthorityState::new(params(1, 0), [77; 32], vec![]);
    let real = signed_at(5, 1, 1000);
    st.register(real.clone(), 1000).unwrap();
    // A squatter claims relay 5's certificate while relay 5 is not reached.
    let secret = [8u8; 32];
    let squatter = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role: Role::Mix,
        layer: Some(1),
        address: ([127, 0, 0, 5], 1).into(),
        sphinx_keys: vec![lethe_proto::EpochKey {
            epoch: 10,
            key: Key32([8; 32]),
        }],
        tls_cert: Key32([5; 32]),
        published: 1000,
        family: None,
        family_proof: None,
        country: None,
    };
    let squatter = SignedDescriptor::sign(&squatter, &secret).unwrap();
    st.register(squatter.clone(), 1001).unwrap();
    // The probes: only the real relay describes itself behind that certificate.
    let real_id = real.verify().unwrap().id;
    for t in st.probe_targets(1002) {
        st.probed(&t, t.id == real_id, 1002);
    }
    // Relay 5 comes back and registers again: accepted; the squatter, tried again while
    // relay 5 is reached, is refused.
    st.register(signed_at(5, 1, 1003), 1003).unwrap();
    let err = st.register(squatter, 1004).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    st.conclude(1010).unwrap();
    let t = parse(st.document(1010).unwrap())
        .verify(&[identity_public_key(&[77; 32])], 1, 1010)
        .unwrap();
    let ids: Vec<NodeId> = t.nodes().iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![real_id]);
}

#[test]
fn a_relay_is_listed_only_while_the_authority_reaches_it() {
    let secret = [77u8; 32];
    let auth = identity_public_key(&secret);
    let mut st = AuthorityState::new(params(1, 0), secret, vec![]);
    st.register(signed_at(1, 1, 1000), 1000).unwrap();
    st.register(signed_at(2, 1, 1000), 1000).unwrap();
    // Nothing reached yet: the round's document lists nobody.
    assert!(st.conclude(1000).unwrap());
    let t = parse(st.document(1000).unwrap())
        .verify(&[auth], 1, 1000)
        .unwrap();
    assert_eq!(t.nodes().len(), 0);
    // Relay 1 answers, relay 2 does not.
    for t in st.probe_targets(1005) {
        st.probed(&t, t.id == signed_at(1, 1, 1000).verify().unwrap().id, 1005);
    }
    assert!(st.probe_targets(1006).is_empty(), "not again at once");
    assert_eq!(
        st.probe_targets(1007).len(),
        1,
        "the unreached one is retried"
    );
    assert!(st.conclude(1010).unwrap());
    let doc = parse(st.document(1010).unwrap());
    let t = doc.verify(&[auth], 1, 1010).unwrap();
    assert_eq!((t.nodes().len(), t.epoch(), t.body().serial), (1, 10, 1010));
    // One body per round.
    assert!(!st.conclude(1015).unwrap());
    // Not reached for longer than REACHED_WITHIN_SECS: gone from the next document.
    st.register(signed_at(1, 1, 1040), 1040).unwrap();
    assert!(st.conclude(1040).unwrap());
    let t = parse(st.document(1040).unwrap())
        .verify(&[auth], 1, 1040)
        .unwrap();
    assert_eq!(t.nodes().len(), 0);
}

#[test]
fn different_fakes_at_each_authority_cannot_stop_agreement() {
    let keys = [[71u8; 32], [72u8; 32], [73u8; 32]];
    let auth: Vec<Key32> = keys.iter().map(identity_public_key).collect();
    let mut st: Vec<AuthorityState> = (0..3)
        .map(|i| {
            let peers = auth.iter().copied().filter(|k| *k != auth[i]).collect();
            AuthorityState::new(params(2, 2), keys[i], peers)
        })
        .collect();
    for (i, a) in st.iter_mut().enumerate() {
        a.register(signed_at(1, 1, 1000), 1000).unwrap();
        a.register(signed_at(2, 1, 1000), 1000).unwrap();
        // The attack: a different (validly self-signed) fake at each authority.
        a.register(signed_at(100 + i as u8, 1, 1000), 1000).unwrap();
        reach_all(a, 1000);
    }
    let now = 1010;
    let votes: Vec<SignedVote> = st
        .iter_mut()
        .map(|a| a.own_vote(101, now).unwrap())
        .collect();
    for a in st.iter_mut() {
        assert!(!a.conclude(now).unwrap(), "waits for the peers' votes");
        for v in &votes {
            if !a.has_vote(101, &v.authority) {
                a.add_peer_held(v, now).unwrap();
            }
        }
        assert!(a.conclude(now).unwrap());
    }
    let sigs: Vec<Vote> = st.iter().map(|a| a.vote().unwrap()).collect();
    for (i, a) in st.iter_mut().enumerate() {
        for (j, v) in sigs.iter().enumerate() {
            assert_eq!(a.add_peer_vote(v.clone()), i != j, "same body: co-signed");
        }
    }
    let docs: Vec<SignedTopology> = st.iter().map(|a| parse(a.document(now).unwrap())).collect();
    assert!(docs.windows(2).all(|w| w[0].body == w[1].body));
    let t = docs[0].verify(&auth, 3, now).unwrap();
    assert_eq!(
        t.nodes().len(),
        2,
        "the fakes, each held by one authority, are not listed"
    );
    // A vote from an authority that is not a peer does not count.
    let stranger = SignedVote::sign(
        &VoteBody {
            network: "lethe".into(),
            round: 101,
            descriptors: vec![],
        },
        &[9; 32],
    )
    .unwrap();
    let err = st[0].add_peer_held(&stranger, now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Drop, "{err}");
    // A tampered signature (body changed) is not attached.
    let mut forged = st[1].vote().unwrap();
    forged.body = forged.body.replace("\"serial\":1010", "\"serial\":1011");
    assert!(!st[2].add_peer_vote(forged));
}

#[test]
fn a_lone_authority_makes_no_document_and_none_is_served_expired() {
    let keys = [[71u8; 32], [72u8; 32], [73u8; 32]];
    let auth: Vec<Key32> = keys.iter().map(identity_public_key).collect();
    let mut a = AuthorityState::new(params(2, 2), keys[0], auth[1..].to_vec());
    a.register(signed_at(1, 1, 1000), 1000).unwrap();
    reach_all(&mut a, 1000);
    // Its peers are down: half a round later it still has one vote of the two needed.
    assert!(!a.conclude(1016).unwrap());
    let err = a.document(1016).unwrap_err();
    assert!(
        matches!(err, AuthorityError::NoDocument { threshold: 2 }),
        "{err}"
    );
    // With one peer's vote it concludes; with that peer's signature it serves...
    let mut b = AuthorityState::new(params(2, 2), keys[1], vec![auth[0], auth[2]]);
    b.register(signed_at(1, 1, 1000), 1000).unwrap();
    reach_all(&mut b, 1000);
    let vb = b.own_vote(101, 1016).unwrap();
    a.add_peer_held(&vb, 1016).unwrap();
    b.add_peer_held(&a.own_vote(101, 1016).unwrap(), 1016)
        .unwrap();
    assert!(a.conclude(1016).unwrap() && b.conclude(1016).unwrap());
    assert!(a.add_peer_vote(b.vote().unwrap()));
    let doc = parse(a.document(1016).unwrap());
    assert_eq!(doc.verify(&auth, 2, 1016).unwrap().nodes().len(), 1);
    // ... until it expires (two epochs of 100 s): then nothing.
    assert!(a.document(1199).is_ok());
    assert!(matches!(
        a.document(1200),
        Err(AuthorityError::NoDocument { .. })
    ));
}
