//! End-to-end encryption, seen from the recipient's gateway: a message carrying a marker
//! crosses the network with every node at `--unsafe-logging` and trace level. The test plays
//! the recipient itself over a raw link to its gateway, so it sees the very frames the
//! gateway sends: none holds the marker, and only the recipient's key opens them. No node's
//! log holds it either; nor does any hold a SOCKS request line that the exit service passed
//! to its target. (A replayed copy of a sealed message is dropped: `lethe-client`'s unit
//! tests.)
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lethe_client::keys::RecipientKeys;
use lethe_net::link::{ReadOutcome, read_frame, write_frame};
use lethe_net::{TlsIdentity, tls};
use lethe_proto::FrameKind;
use lethe_tests::LocalNet;

const MARKER: &str = "LETHE-MARKER-8c1f2e-the-gateway-must-never-read-this";
const SOCKS_MARKER: &str = "lethe-socks-marker-5d93b0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipients_gateway_never_holds_the_message_in_clear() {
    let net = LocalNet::start_with_env(
        "127.71.0",
        5,
        &[
            ("RUST_LOG", "trace"),
            ("LETHE_NODE_ARGS", "--unsafe-logging"),
        ],
    )
    .unwrap();
    let alice = net
        .client("alice", "gateway-1", "127.71.7.7:0")
        .await
        .unwrap();
    let bob_dir = net.client_dir("bob", "gateway-2").await.unwrap();
    let bob = lethe_client::address(&bob_dir).unwrap();

    // Bob, by hand: his identity, a link to his gateway, a subscription.
    let topology = alice.topology();
    let gw = topology.node(&bob.gateway).unwrap();
    let id = TlsIdentity::load(&bob_dir).unwrap();
    let endpoint = quinn::Endpoint::client("127.71.7.8:0".parse().unwrap()).unwrap();
    let conn = tls::connect(&endpoint, &id, gw.address, gw.tls_cert)
        .await
        .unwrap();
    let mut up = conn.open_uni().await.unwrap();
    write_frame(&mut up, FrameKind::Subscribe, &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let message = format!("hello bob, {MARKER}");
    alice.send(&bob, message.as_bytes()).await.unwrap();

    // The frames the gateway delivers: read until the one message arrives (cover from
    // nobody else reaches Bob: he sends none).
    let mut down = tokio::time::timeout(Duration::from_secs(30), conn.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let mut body = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut down, &mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, ReadOutcome::Frame(FrameKind::Message)));
    let frame = body.clone();
    assert!(
        !frame.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "the gateway delivered the marker in clear"
    );
    // Every frame a client receives has one size (messages are padded to it); the sealed
    // message is its first SEALED_LEN bytes, the rest zeros.
    assert_eq!(
        frame.len(),
        lethe_proto::frame::DELIVERY_BODY_LEN,
        "every delivered frame is as long"
    );
    assert!(
        frame[lethe_proto::seal::SEALED_LEN..]
            .iter()
            .all(|&b| b == 0)
    );
    let frame = frame[..lethe_proto::seal::SEALED_LEN].to_vec();
    // Only Bob's key opens it.
    let keys = RecipientKeys::load_or_create(&bob_dir).unwrap();
    let opened = keys.open(&bob.client, &frame).unwrap();
    assert_eq!(opened.message, message.as_bytes());
    let stranger = lethe_proto::seal::RecipientSecret::generate(&mut rand::rng());
    assert!(lethe_proto::seal::open(&stranger, &bob.client, &frame).is_err());

    // A SOCKS request line with a marker of its own: it reaches the target through the exit
    // service (so it crossed the exit's gateway), sealed to the exit on the way.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        String::from_utf8_lossy(&req).into_owned()
    });
    let url = format!("http://127.0.0.1:{port}/{SOCKS_MARKER}");
    let (out, _) = lethe_tests::curl_socks(&net.socks, &[&url], 60);
    assert_eq!(
        out.stdout,
        b"ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request = target.join().unwrap();
    assert!(
        request.contains(SOCKS_MARKER),
        "the target got the request line"
    );

    // No log of any node holds either marker, even at trace with unsafe logging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in &net.nodes {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(!log.contains(MARKER), "{} logged the marker", node.name);
        assert!(
            !log.contains(SOCKS_MARKER),
            "{} logged the request line",
            node.name
        );
        assert!(
            !log.is_empty(),
            "{} logged nothing: is trace on?",
            node.name
        );
    }
    conn.close(0u32.into(), b"bye");
}
