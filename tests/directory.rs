//! The directory with three authorities and a threshold of two, over real HTTP: they agree
//! on one document; an under-signed document, or one a single compromised authority made up,
//! is refused by clients and by relays; a descriptor signed by the wrong key is refused.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_client::ClientConfig;
use lethe_net::http::{self, Handler, Request, Response};
use lethe_proto::topology::{NodeDescriptor, Role, identity_public_key};
use lethe_proto::{Key32, NodeId, SignedDescriptor, SignedTopology, TopologyBody};
use lethe_tests::{LocalNet, bin_dir};

fn keys(net: &LocalNet) -> Vec<Key32> {
    net.authority_keys
        .iter()
        .map(|k| Key32::parse_hex(k, "key").unwrap())
        .collect()
}

async fn document(url: &str) -> SignedTopology {
    let (status, body) = http::request("GET", &format!("{url}/v1/topology"), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Serve `doc` as a directory on `addr` until the test ends.
async fn fake_directory(addr: &str, doc: SignedTopology) -> String {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = serde_json::to_vec(&doc).unwrap();
    let handler: Handler = Arc::new(move |r: Request| match r.path.as_str() {
        "/v1/topology" => Response::ok("application/json", body.clone()),
        _ => Response::ok("text/plain", "accepted"),
    });
    let (tx, rx) = lethe_net::shutdown::channel();
    tokio::spawn(async move {
        http::serve(listener, handler, rx).await;
        drop(tx);
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_authorities_agree_and_forgeries_are_refused() {
    let net = LocalNet::start("127.69.0", 5).unwrap();
    let auth = keys(&net);
    assert_eq!((auth.len(), net.threshold), (3, 2));
    let now = lethe_net::unix_now();

    // Every authority serves a document all three signed, with the same body. A new round
    // (every 2 s) can conclude between the three fetches, on a busy machine more easily:
    // then they are asked again, a bounded number of times.
    let mut bodies = Vec::new();
    for _ in 0..10 {
        bodies.clear();
        for a in ["authority-1", "authority-2", "authority-3"] {
            let doc = document(&format!("http://{}", net.node(a).listen)).await;
            let t = doc.verify(&auth, 3, now).unwrap();
            assert_eq!(t.nodes().len(), 8);
            bodies.push(doc.body);
        }
        if bodies.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "authorities disagree in 10 tries"
    );

    // Under-signed: the real document with one signature left.
    let mut one = document(&net.directory).await;
    one.signatures.truncate(1);
    // Made up by one compromised authority: an extra relay of its own, signed by it alone.
    let secret =
        lethe_net::files::read_key32(&net.node("authority-3").dir.join("identity.key")).unwrap();
    let real = document(&net.directory).await;
    let mut body: TopologyBody = serde_json::from_str(&real.body).unwrap();
    let rogue_secret = [5u8; 32];
    let rogue = NodeDescriptor {
        id: NodeId(identity_public_key(&rogue_secret)),
        role: Role::Mix,
        layer: Some(1),
        address: "127.69.5.5:9000".parse().unwrap(),
        sphinx_keys: vec![lethe_proto::EpochKey {
            epoch: 1,
            key: Key32([5; 32]),
        }],
        tls_cert: Key32([6; 32]),
        published: now,
        family: None,
        family_proof: None,
        country: None,
    };
    body.nodes
        .push(SignedDescriptor::sign(&rogue, &rogue_secret).unwrap());
    let made_up = SignedTopology::sign(&body, &secret).unwrap();
    assert!(
        made_up.verify(&auth, 1, now).is_ok(),
        "it is a real signature"
    );

    for (n, forged) in [(1, one), (2, made_up)] {
        assert!(forged.verify(&auth, 2, now).is_err());
        let url = fake_directory(&format!("127.69.6.{n}:0"), forged).await;
        // A client refuses it.
        let dir = net.root.path().join(format!("victim-client-{n}"));
        let cfg = ClientConfig {
            directory: url.clone(),
            authority_keys: net.authority_keys.clone(),
            threshold: 2,
            ..Default::default()
        };
        let err = lethe_client::init(&dir, cfg).await.unwrap_err().to_string();
        assert!(
            err.contains("signatures"),
            "client accepted a forged document: {err}"
        );
        // A relay refuses it: it never loads a topology.
        let rdir = net.root.path().join(format!("victim-relay-{n}"));
        let mut init = std::process::Command::new(bin_dir().join("lethe-node"));
        init.args(["init", "--dir"]).arg(&rdir).args([
            "--role",
            "mix",
            "--layer",
            "1",
            "--listen",
            &format!("127.69.7.{n}:9000"),
            "--metrics",
            &format!("127.69.7.{n}:9100"),
            "--directory",
            &url,
            "--threshold",
            "2",
            "--refresh-secs",
            "1",
        ]);
        for k in &net.authority_keys {
            init.args(["--authority-key", k]);
        }
        assert!(init.output().unwrap().status.success());
        let log = std::fs::File::create(rdir.join("node.log")).unwrap();
        let mut relay = std::process::Command::new(bin_dir().join("lethe-node"))
            .args(["run", "--dir"])
            .arg(&rdir)
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut refused = false;
        while Instant::now() < deadline && !refused {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = std::fs::read_to_string(rdir.join("node.log")).unwrap_or_default();
            refused = text.contains("valid authority signatures");
            assert!(
                !text.contains("topology loaded"),
                "relay loaded a forged topology:\n{text}"
            );
        }
        let _ = relay.kill();
        let _ = relay.wait();
        assert!(refused, "relay did not report the refused document");
    }

    // A descriptor signed by the wrong key is refused by a real authority.
    let d = NodeDescriptor {
        published: now,
        ..rogue
    };
    let mut wrong = SignedDescriptor::sign(&d, &rogue_secret).unwrap();
    wrong.signature = SignedDescriptor::sign(&d, &[9; 32]).unwrap().signature;
    let (status, reply) = http::request(
        "POST",
        &format!("{}/v1/descriptors", net.directory),
        Some(&serde_json::to_vec(&wrong).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("signature"));
}
