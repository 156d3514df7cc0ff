//! How directory authorities agree on one document, relay by relay (sans-IO policy).
//!
//! Time is cut into voting rounds of a fixed length. At the start of round `r` each
//! authority freezes the descriptors it holds (fresh, and of relays it reached lately) into
//! a signed [`SignedVote`] and fetches its peers' votes for `r`. The round's document lists
//! a relay when at least `threshold` of the votes hold a descriptor of it, with the newest
//! of those descriptors ([`combine`]). Every authority that holds the same votes computes
//! the same body, so their signatures over it add up; a descriptor uploaded to one authority
//! only, or one authority's different view, can no longer keep the bodies apart (uploading
//! a different fake descriptor to each authority used to stop every document from reaching
//! the threshold). A vote carries full signed descriptors, so the winner's text is known to
//! every authority that holds the votes.

use std::collections::HashMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::error::Refusal;
use crate::topology::{NodeDescriptor, identity_public_key};
use crate::{Error, Key32, NodeId, SignedDescriptor};

/// Domain separation of vote signatures (no vote is a valid descriptor or document).
const VOTE_DOMAIN: &[u8] = b"lethe-vote-v1\0";

/// What one authority held at the start of a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// The network the vote is for.
    pub network: String,
    /// The round (its start is `round * round_secs` in Unix seconds).
    pub round: u64,
    /// Descriptors of relays the authority holds and reached, one per relay.
    pub descriptors: Vec<SignedDescriptor>,
}

/// A [`VoteBody`] as JSON text, signed by its authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedVote {
    /// JSON of the [`VoteBody`].
    pub vote: String,
    /// The authority's Ed25519 public key.
    pub authority: Key32,
    /// Hex signature over the vote text.
    pub signature: String,
}

fn signing_input(text: &str) -> Vec<u8> {
    let mut m = VOTE_DOMAIN.to_vec();
    m.extend_from_slice(text.as_bytes());
    m
}

impl SignedVote {
    /// Serialize and sign `body` with an authority's identity secret.
    pub fn sign(body: &VoteBody, secret: &[u8; 32]) -> Result<Self, Error> {
        let vote = serde_json::to_string(body).map_err(|e| Error::Malformed {
            what: "vote",
            detail: e.into(),
        })?;
        let sig = SigningKey::from_bytes(secret).sign(&signing_input(&vote));
        Ok(SignedVote {
            vote,
            authority: identity_public_key(secret),
            signature: hex::encode(sig.to_bytes()),
        })
    }

    /// The body, if the vote is signed by one of `authorities` and every descriptor in it
    /// is validly self-signed; also each descriptor parsed. A vote with two descriptors of
    /// one relay is refused whole.
    pub fn verify(&self, authorities: &[Key32]) -> Result<(VoteBody, Vec<NodeDescriptor>), Error> {
        if !authorities.contains(&self.authority) {
            return Err(Error::Refused {
                what: "vote",
                reason: Refusal::NotAPeer,
            });
        }
        crate::topology::verify_signature(
            &self.authority,
            &signing_input(&self.vote),
            &self.signature,
            "vote signature",
        )?;
        let body: VoteBody = serde_json::from_str(&self.vote).map_err(|e| Error::Malformed {
            what: "vote",
            detail: e.into(),
        })?;
        let mut seen = std::collections::HashSet::new();
        let mut parsed = Vec::with_capacity(body.descriptors.len());
        for d in &body.descriptors {
            let p = d.verify()?;
            if !seen.insert(p.id) {
                return Err(Error::Refused {
                    what: "vote",
                    reason: Refusal::TwoDescriptors,
                });
            }
            parsed.push(p);
        }
        Ok((body, parsed))
    }
}

/// The descriptors a round's document lists, sorted by relay id: a relay is listed when at
/// least `threshold` votes hold a descriptor of it, with the newest of them (by publication
/// time, then by text, so every authority picks the same one). Relays whose chosen
/// descriptors claim one TLS certificate are all left out: none of them can be told apart
/// from the others on the wire.
pub fn combine(
    votes: &[Vec<(NodeDescriptor, SignedDescriptor)>],
    threshold: usize,
) -> Vec<SignedDescriptor> {
    let threshold = threshold.max(1);
    let mut tally: HashMap<NodeId, (usize, &NodeDescriptor, &SignedDescriptor)> = HashMap::new();
    for vote in votes {
        for (d, s) in vote {
            let e = tally.entry(d.id).or_insert((0, d, s));
            e.0 += 1;
            if (d.published, &s.descriptor) > (e.1.published, &e.2.descriptor) {
                e.1 = d;
                e.2 = s;
            }
        }
    }
    let listed: Vec<(&NodeDescriptor, &SignedDescriptor)> = tally
        .into_values()
        .filter(|(n, _, _)| *n >= threshold)
        .map(|(_, d, s)| (d, s))
        .collect();
    let mut certs: HashMap<Key32, usize> = HashMap::new();
    for (d, _) in &listed {
        *certs.entry(d.tls_cert).or_default() += 1;
    }
    let mut out: Vec<(&NodeDescriptor, &SignedDescriptor)> = listed
        .into_iter()
        .filter(|(d, _)| certs[&d.tls_cert] == 1)
        .collect();
    out.sort_by_key(|(d, _)| d.id);
    out.into_iter().map(|(_, s)| s.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Role;

    fn desc(i: u8, published: u64, cert: u8) -> (NodeDescriptor, SignedDescriptor) {
        let secret = [i; 32];
        let d = NodeDescriptor {
            id: NodeId(identity_public_key(&secret)),
            role: Role::Mix,
            layer: Some(1),
            address: ([127, 0, 0, i], 9000).into(),
            sphinx_keys: vec![crate::EpochKey {
                epoch: 1,
                key: Key32([i; 32]),
            }],
            tls_cert: Key32([cert; 32]),
            published,
            family: None,
            family_proof: None,
            country: None,
        };
        let s = SignedDescriptor::sign(&d, &secret).unwrap();
        (d, s)
    }

    #[test]
    fn a_relay_is_listed_when_a_threshold_of_votes_hold_it_with_the_newest_descriptor() {
        let a = vec![desc(1, 10, 1), desc(2, 10, 2), desc(9, 10, 9)];
        let b = vec![desc(1, 12, 1), desc(2, 10, 2), desc(8, 10, 8)];
        let c = vec![desc(2, 10, 2), desc(7, 10, 7)];
        let out = combine(&[a.clone(), b.clone(), c.clone()], 2);
        let ids: Vec<NodeId> = out.iter().map(|s| s.verify().unwrap().id).collect();
        let mut want = vec![desc(1, 0, 1).0.id, desc(2, 0, 2).0.id];
        want.sort();
        assert_eq!(ids, want, "relays held by one authority only are left out");
        let one = out
            .iter()
            .map(|s| s.verify().unwrap())
            .find(|d| d.id == desc(1, 0, 1).0.id)
            .unwrap();
        assert_eq!(one.published, 12, "the newest descriptor wins");
        // The order of the votes does not matter.
        assert_eq!(combine(&[c, a, b], 2), out);
    }

    #[test]
    fn different_fakes_at_each_authority_change_nothing() {
        let honest = vec![desc(1, 10, 1), desc(2, 10, 2)];
        let votes: Vec<Vec<_>> = (0..3u8)
            .map(|k| {
                let mut v = honest.clone();
                v.push(desc(100 + k, 10, 100 + k));
                v
            })
            .collect();
        assert_eq!(
            combine(&votes, 2),
            combine(&[honest.clone(), honest.clone(), honest], 2)
        );
    }

    #[test]
    fn relays_sharing_a_certificate_are_left_out() {
        let v = vec![desc(1, 10, 1), desc(2, 10, 1), desc(3, 10, 3)];
        let out = combine(&[v.clone(), v], 2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verify().unwrap().id, desc(3, 0, 3).0.id);
    }

    #[test]
    fn votes_are_signed_by_a_configured_authority_and_hold_valid_descriptors() {
        let secret = [42u8; 32];
        let key = identity_public_key(&secret);
        let body = VoteBody {
            network: "n".into(),
            round: 5,
            descriptors: vec![desc(1, 10, 1).1, desc(2, 10, 2).1],
        };
        let v = SignedVote::sign(&body, &secret).unwrap();
        let (b, parsed) = v.verify(&[key]).unwrap();
        assert_eq!((b, parsed.len()), (body.clone(), 2));
        assert!(v.verify(&[Key32([1; 32])]).is_err(), "unknown authority");
        let mut forged = v.clone();
        forged.vote = forged.vote.replace("\"round\":5", "\"round\":6");
        assert!(forged.verify(&[key]).is_err(), "changed after signing");
        let twice = VoteBody {
            descriptors: vec![desc(1, 10, 1).1, desc(1, 11, 1).1],
            ..body
        };
        assert!(
            SignedVote::sign(&twice, &secret)
                .unwrap()
                .verify(&[key])
                .is_err(),
            "two descriptors of one relay"
        );
    }
}
