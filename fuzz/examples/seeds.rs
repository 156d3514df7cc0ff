//! Writes a few valid inputs for each fuzz target into fuzz/corpus/<target>/seed-*, built
//! with the project's own encoders and the fixture keys of src/lib.rs. Deterministic: run it
//! again and the same files come out (each seed that should verify or decode is checked
//! first). Run from fuzz/: `cargo run --example seeds`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lethe_fuzz::{
    AUTHORITY_SECRET, NOW_UNIX, RELAY_IDENTITY_SECRET, RELAY_SPHINX_SECRET, authority_keys,
    craft_packet, relay,
};
use lethe_proto::consensus::{SignedVote, VoteBody};
use lethe_proto::frame::{Frame, FrameKind, REPLY_BODY_LEN};
use lethe_proto::packet::{HopSpec, PAYLOAD_SIZE, build_packet};
use lethe_proto::socks::{Greeting, TargetAddr, encode_request};
use lethe_proto::sphinx::VERSION;
use lethe_proto::stream::{AckFrame, Body, Chunk};
use lethe_proto::surb::Surb;
use lethe_proto::topology::{CoverParams, identity_public_key};
use lethe_proto::{
    ClientAddress, ClientId, EpochKey, Key32, NodeDescriptor, NodeId, Role, SignedDescriptor,
    SignedTopology, TopologyBody,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

type Res = Result<(), Box<dyn std::error::Error>>;

fn write(target: &str, name: &str, bytes: &[u8]) -> Res {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    Ok(())
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

/// The descriptor of relay `i` (identity secret `RELAY_IDENTITY_SECRET` + i).
fn descriptor(i: u8, role: Role, layer: Option<u8>) -> (NodeDescriptor, [u8; 32]) {
    let secret = [RELAY_IDENTITY_SECRET[0] + i; 32];
    let d = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role,
        layer,
        address: SocketAddr::from(([127, 0, 0, 1 + i], 9000 + u16::from(i))),
        sphinx_keys: vec![
            EpochKey {
                epoch: 10,
                key: Key32([0x40 + i; 32]),
            },
            EpochKey {
                epoch: 11,
                key: Key32([0x50 + i; 32]),
            },
        ],
        tls_cert: Key32([0x60 + i; 32]),
        published: 900,
        family: None,
        family_proof: None,
        country: None,
    };
    (d, secret)
}

fn network() -> Result<Vec<SignedDescriptor>, Box<dyn std::error::Error>> {
    let roles = [
        (Role::Gateway, None),
        (Role::Mix, Some(1)),
        (Role::Mix, Some(2)),
        (Role::Mix, Some(3)),
        (Role::Gateway, None),
    ];
    let mut out = Vec::new();
    for (i, (role, layer)) in roles.into_iter().enumerate() {
        let (d, secret) = descriptor(i as u8, role, layer);
        out.push(SignedDescriptor::sign(&d, &secret)?);
    }
    Ok(out)
}

fn frames() -> Res {
    let node = relay();
    let route = [HopSpec {
        id: NodeId::from_bytes([1; 32]),
        sphinx_key: node.public_key(),
    }];
    let pkt = build_packet(
        &mut StdRng::seed_from_u64(1),
        &route,
        ClientId::from_bytes([2; 32]),
        &[Duration::ZERO],
        b"hello",
    )?;
    let mut all = Vec::new();
    let mut one = |name: &str, kind: FrameKind, body: &[u8]| -> Res {
        let mut out = Vec::new();
        Frame::encode(kind, body, &mut out)?;
        all.extend_from_slice(&out);
        write("frame", name, &out)
    };
    one("packet", FrameKind::Packet, pkt.as_bytes())?;
    one("message", FrameKind::Message, b"a delivered message")?;
    one("subscribe", FrameKind::Subscribe, b"")?;
    one("reply", FrameKind::Reply, &vec![3u8; REPLY_BODY_LEN])?;
    // Kind 6 (a relay's signed descriptor, the answer to a kind 5 probe), written by hand:
    // the kind is newer than some trees this file is built against.
    let (d, secret) = descriptor(0, Role::Gateway, None);
    let json = serde_json::to_string(&SignedDescriptor::sign(&d, &secret)?)?;
    let mut raw = vec![1u8, 6];
    raw.extend_from_slice(&u16::try_from(json.len())?.to_be_bytes());
    raw.extend_from_slice(json.as_bytes());
    write("frame", "descriptor", &raw)?;
    write("frame", "describe", &[1, 5, 0, 0])?;
    write("frame", "all-kinds", &all)
}

fn sphinx() -> Res {
    let node = relay();
    let one = |i: u8| HopSpec {
        id: NodeId::from_bytes([i; 32]),
        sphinx_key: node.public_key(),
    };
    let dest = ClientId::from_bytes([2; 32]);
    // Mode 0: real packets for the fixture relay, one hop (delivers) and two (forwards).
    let p1 = build_packet(
        &mut StdRng::seed_from_u64(1),
        &[one(1)],
        dest,
        &[Duration::ZERO],
        b"hello",
    )?;
    write("sphinx", "raw-deliver", &with_mode(0, p1.as_bytes()))?;
    let p2 = build_packet(
        &mut StdRng::seed_from_u64(2),
        &[one(1), one(2)],
        dest,
        &[Duration::from_millis(5), Duration::ZERO],
        b"hello",
    )?;
    write("sphinx", "raw-forward", &with_mode(0, p2.as_bytes()))?;
    // Modes 1 and 2: routing data in the clear, as `HopKey::peel` reads it.
    let [v1, v2] = VERSION.to_be_bytes();
    let mut forward = vec![1u8, 0, v1, v2];
    forward.extend_from_slice(&[9u8; 32]);
    forward.extend_from_slice(&5_000_000u64.to_be_bytes());
    let mut fin = vec![2u8, 0, v1, v2];
    fin.extend_from_slice(&[2u8; 32]);
    fin.extend_from_slice(&[0u8; 16]);
    for (name, routing) in [("forward", &forward), ("final", &fin)] {
        let mut input = vec![7u8; 32];
        let mut r = routing.clone();
        r.resize(lethe_proto::sphinx::BETA_LEN, 0);
        input.extend_from_slice(&r);
        let mut payload = vec![0u8; 16];
        payload.extend_from_slice(b"hello");
        payload.push(1);
        payload.resize(PAYLOAD_SIZE, 0);
        input.extend_from_slice(&payload);
        write("sphinx", &format!("crafted-{name}"), &with_mode(1, &input))?;
        write(
            "sphinx",
            &format!("crafted-len-{name}"),
            &with_mode(2, &input[..input.len() - 1000]),
        )?;
    }
    // A crafted packet is what the target builds: check the seed peels as expected.
    let check = craft_packet(
        &RELAY_SPHINX_SECRET,
        [7u8; 32],
        &forward,
        &[0u8; PAYLOAD_SIZE],
    );
    if node.process(&check, |_| false).is_err() {
        return Err("crafted forward seed does not peel".into());
    }
    // Mode 3: hops byte, rng seed, destination, one u16 delay (ms) per hop, message.
    let mut rt = vec![4u8];
    rt.extend_from_slice(&[5u8; 32]);
    rt.extend_from_slice(&[2u8; 32]);
    for ms in [10u16, 20, 30, 40, 0] {
        rt.extend_from_slice(&ms.to_be_bytes());
    }
    rt.extend_from_slice(b"a message across five hops");
    write("sphinx", "round-trip", &with_mode(3, &rt))
}

fn socks() -> Res {
    let greeting = Greeting {
        methods: vec![0x00, 0x02],
    }
    .encode();
    let targets = [
        (
            "ipv4",
            TargetAddr::Ip(SocketAddr::from(([93, 184, 216, 34], 80))),
        ),
        ("ipv6", TargetAddr::Ip("[2001:db8::1]:443".parse()?)),
        ("domain", TargetAddr::Domain("example.org".into(), 443)),
    ];
    write("socks", "greeting", &greeting)?;
    for (name, t) in targets {
        let mut both = greeting.clone();
        both.extend_from_slice(&encode_request(&t));
        write("socks", &format!("greeting-request-{name}"), &both)?;
        write("socks", &format!("request-{name}"), &encode_request(&t))?;
    }
    Ok(())
}

fn chunks() -> Res {
    let ack = AckFrame {
        cumulative: 3,
        ranges: vec![(5, 6), (9, 9)],
    };
    let surb = surb_bytes()?;
    let cases = [
        (
            "open",
            Chunk {
                stream: 42,
                seq: 0,
                body: Some(Body::Open(Some(TargetAddr::Domain(
                    "example.org".into(),
                    443,
                )))),
                ack: None,
                surbs: vec![surb.clone()],
            },
        ),
        (
            "data-ack",
            Chunk {
                stream: 42,
                seq: 1,
                body: Some(Body::Data(b"GET / HTTP/1.0\r\n\r\n".to_vec())),
                ack: Some(ack.clone()),
                surbs: Vec::new(),
            },
        ),
        (
            "fin",
            Chunk {
                stream: 42,
                seq: 2,
                body: Some(Body::Fin),
                ack: None,
                surbs: Vec::new(),
            },
        ),
        (
            "reset",
            Chunk {
                stream: 42,
                seq: 3,
                body: Some(Body::Reset(lethe_proto::socks::Reply::ConnectionRefused)),
                ack: None,
                surbs: Vec::new(),
            },
        ),
        ("ack-only", Chunk::ack_only(42, ack)),
    ];
    for (name, c) in cases {
        let bytes = c.encode()?;
        Chunk::decode(&bytes)?;
        write("chunk", name, &bytes)?;
    }
    Ok(())
}

fn surb_bytes() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let route = [HopSpec {
        id: NodeId::from_bytes([1; 32]),
        sphinx_key: relay().public_key(),
    }];
    let (surb, _) = Surb::create(
        &mut StdRng::seed_from_u64(3),
        &route,
        ClientId::from_bytes([2; 32]),
        &[Duration::ZERO],
    )?;
    Ok(surb.to_bytes())
}

fn surbs() -> Res {
    let surb = surb_bytes()?;
    Surb::from_bytes(&surb)?;
    let mut with_msg = surb.clone();
    with_msg.extend_from_slice(b"a reply");
    write("surb", "surb-message", &with_msg)?;
    let mut with_payload = surb;
    with_payload.extend_from_slice(&vec![0u8; PAYLOAD_SIZE]);
    write("surb", "surb-sealed-payload", &with_payload)
}

fn documents() -> Res {
    let nodes = network()?;
    // descriptor: a signed one, and the text alone (the target signs it with the fixture key)
    let (d, secret) = descriptor(0, Role::Gateway, None);
    let signed = SignedDescriptor::sign(&d, &secret)?;
    signed.verify()?;
    write(
        "descriptor",
        "signed",
        serde_json::to_string(&signed)?.as_bytes(),
    )?;
    write("descriptor", "text", signed.descriptor.as_bytes())?;
    let (m, msecret) = descriptor(1, Role::Mix, Some(1));
    let mixd = SignedDescriptor::sign(&m, &msecret)?;
    write(
        "descriptor",
        "signed-mix",
        serde_json::to_string(&mixd)?.as_bytes(),
    )?;

    let body = TopologyBody {
        format: lethe_proto::topology::DIRECTORY_FORMAT,
        network: "fuzz".into(),
        epoch: 10,
        serial: 1,
        valid_until: 2_000,
        epoch_secs: 100,
        mean_delay_ms: 10,
        max_delay_ms: 100,
        cover: CoverParams {
            payload_mean_ms: 50,
            loop_mean_ms: 500,
            drop_mean_ms: 500,
            mix_loop_mean_ms: 500,
            ..Default::default()
        },
        nodes: nodes.clone(),
        exits: Vec::new(),
        route_rules: Default::default(),
    };
    let doc = SignedTopology::sign(&body, &AUTHORITY_SECRET)?;
    doc.verify(&authority_keys(), 1, NOW_UNIX)?;
    write(
        "topology",
        "signed",
        serde_json::to_string(&doc)?.as_bytes(),
    )?;
    write("topology", "body", doc.body.as_bytes())?;

    let vote = VoteBody {
        network: "fuzz".into(),
        round: 7,
        descriptors: nodes,
    };
    let v = SignedVote::sign(&vote, &AUTHORITY_SECRET)?;
    v.verify(&authority_keys())?;
    write("vote", "signed", serde_json::to_string(&v)?.as_bytes())?;
    write("vote", "text", v.vote.as_bytes())?;
    Ok(())
}

fn addresses() -> Res {
    let a = ClientAddress {
        client: ClientId::from_bytes([0xab; 32]),
        key: lethe_proto::RecipientKey::from_bytes([0xef; 32]),
        gateway: NodeId::from_bytes([0xcd; 32]),
    };
    write("address", "client-address", a.to_string().as_bytes())?;
    write("address", "key-hex", Key32([0x12; 32]).to_hex().as_bytes())?;
    write(
        "address",
        "key-json",
        serde_json::to_string(&Key32([0x34; 32]))?.as_bytes(),
    )
}

fn main() -> Res {
    frames()?;
    sphinx()?;
    socks()?;
    chunks()?;
    surbs()?;
    documents()?;
    addresses()?;
    eprintln!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
    Ok(())
}
