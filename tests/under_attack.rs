//! Cheap attacks that used to switch a gateway or an exit off, tried on a real local network
//! (bounded in count and time, loopback only): each test checks that the attack is
//! contained and that honest traffic still gets through.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use lethe_net::link::push_frame;
use lethe_net::{TlsIdentity, http, tls};
use lethe_proto::packet::build_packet;
use lethe_proto::topology::{NodeDescriptor, Role, identity_public_key};
use lethe_proto::{ClientId, FrameKind, Key32, NodeId, SignedDescriptor, SignedTopology};
use lethe_tests::{LocalNet, curl_socks, rss_mib};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A route whose first hop is also its last used to be delivered at once: a client could
/// fill its entry gateway's mailbox with junk for random recipients at no cost (no mix, no
/// delay), until honest mail for offline recipients was refused. Now the gateway drops
/// such packets, and mail for an offline client waits in the mailbox and arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_fill_its_gateways_mailbox_through_a_one_hop_route() {
    let mut net = LocalNet::start("127.77.0", 5).unwrap();
    // A small mailbox, so that the attack that filled 100,000 places in about 60 s fills
    // this one in about a second.
    net.reconfigure(&["gateway-1"], &[("mailbox_total", "2000")])
        .await
        .unwrap();
    let gw = net.node("gateway-1").clone();
    let gw_id: NodeId = gw.id.parse().unwrap();
    let alice = net
        .client("alice", "gateway-2", "127.77.1.1:0")
        .await
        .unwrap();
    // Bob's home is gateway-1; he is offline (connected, not subscribed) until the end.
    let bob = net
        .client("bob", "gateway-1", "127.77.1.2:0")
        .await
        .unwrap();
    let topology = alice.topology();
    let cert = topology.node(&gw_id).unwrap().tls_cert;
    let epoch = topology.epoch_at(lethe_net::unix_now());
    let before = rss_mib(gw.pid);

    // The attacker: one client connection, junk for random recipients along a one-hop
    // route, 5,000 packets paced below the per-connection budget (2,000 a second).
    let mut rng = StdRng::seed_from_u64(77);
    let entry = topology
        .choose_route(&mut rng, &gw_id, &gw_id, epoch)
        .unwrap()[0];
    let ep = quinn::Endpoint::client("127.77.9.9:0".parse().unwrap()).unwrap();
    let id = TlsIdentity::generate().unwrap();
    let conn = tls::connect(&ep, &id, gw.listen.parse().unwrap(), cert)
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let junk_sent = 5000;
    for _ in 0..junk_sent / 500 {
        let mut frames = Vec::new();
        for _ in 0..500 {
            let mut to = [0u8; 32];
            rng.fill_bytes(&mut to);
            let p = build_packet(
                &mut rng,
                &[entry],
                ClientId::from_bytes(to),
                &[Duration::ZERO],
                &[0x55; 1000],
            )
            .unwrap();
            push_frame(&mut frames, FrameKind::Packet, p.as_bytes()).unwrap();
        }
        let t = Instant::now();
        s.write_all(&frames).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300).saturating_sub(t.elapsed())).await;
    }
    s.finish().unwrap();
    // Every junk packet was processed: dropped at its first hop (or over the budget).
    let dropped = net
        .wait_metric(
            "gateway-1",
            "lethe_packets_dropped_total{reason=\"first_hop_delivery\"}",
            Duration::from_secs(30),
            |v| v >= 0.9 * junk_sent as f64,
        )
        .await
        .unwrap();

    // Honest mail for offline bob, sent after the attack, waits in the mailbox.
    for i in 0..10u8 {
        alice.send(&bob.address(), &[i; 100]).await.unwrap();
    }
    net.wait_metric(
        "gateway-1",
        "lethe_mailbox_messages",
        Duration::from_secs(30),
        |v| v >= 10.0,
    )
    .await
    .unwrap();
    let held = net.metric("gateway-1", "lethe_mailbox_messages").await;
    assert_eq!(held, 10.0, "the mailbox holds bob's mail and nothing else");
    bob.subscribe().await.unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 10 && Instant::now() < deadline {
        if bob.recv_timeout(Duration::from_secs(1)).await.is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 10, "bob's mail was lost");
    let after = rss_mib(gw.pid);
    assert!(
        after < 200.0,
        "gateway RSS {after:.1} MiB (was {before:.1})"
    );
    eprintln!(
        "one-hop junk: {dropped} of {junk_sent} dropped at the first hop; bob got {got}/10; gateway RSS {before:.1} -> {after:.1} MiB"
    );
    alice.close().await;
    bob.close().await;
}

/// A TCP server on `ip` that accepts connections and never reads from them, with a small
/// receive buffer so that a sender's writes block after a few kilobytes. Connections are
/// kept (in the thread) until the test ends.
fn tarpit(ip: &str) -> std::net::SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap().into_std().unwrap();
    listener.set_nonblocking(false).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    addr
}

/// A one-file HTTP server on `ip`; returns its address.
fn hello_server(ip: &str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut c, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = b"still serving";
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
            });
        }
    });
    addr
}

/// curl through the local proxy; returns (exit status success, body, seconds taken).
fn curl(proxy: &str, args: &[&str], max_secs: u64) -> (bool, Vec<u8>, f64) {
    let (o, t) = curl_socks(proxy, args, max_secs);
    (o.status.success(), o.stdout, t.as_secs_f64())
}

/// A target that accepts a connection and never reads used to pin the exit's stream (and
/// its buffers) until a restart: the driver awaited the blocked write, so no timer fired,
/// and once `max_streams` such streams were open the exit refused everyone. Now the bytes
/// wait in a bounded buffer, a target that takes none of them for `stall_secs` has its
/// stream reset, and the exit serves honest users again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_reading_cannot_pin_the_exit() {
    let net = LocalNet::start_with_env(
        "127.78.0",
        5,
        &[("LETHE_EXIT_SETTINGS", "stall_secs=3 max_streams=4")],
    )
    .unwrap();
    let pit = tarpit("127.78.0.60");
    let web = hello_server("127.78.0.61");
    let exit_pid = exit_pid(&net);
    let before = rss_mib(exit_pid);
    // As many uploads to the tarpit as the exit has streams, each far more than the
    // buffers between the exit and the target hold.
    let upload = net.root_path().join("upload.bin");
    std::fs::write(&upload, vec![0x42u8; 4 << 20]).unwrap();
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let (proxy, url, file) = (
                net.socks.clone(),
                format!("http://{pit}/sink"),
                upload.display().to_string(),
            );
            std::thread::spawn(move || curl(&proxy, &["-T", &file, &url], 120))
        })
        .collect();
    // Let the four streams open and their writes block.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut rss_peak = rss_mib(exit_pid);
    // The exit gives the tarpit's streams up (3 s without progress, then at most 10 s to
    // tell the proxy), so an honest fetch is served again: tried every 2 s for at most
    // 40 s (on the previous main never: the streams were held until a restart).
    let start = Instant::now();
    let (mut ok, mut body, mut tries) = (false, Vec::new(), 0);
    while !ok && start.elapsed() < Duration::from_secs(40) {
        tries += 1;
        (ok, body, _) = curl(&net.socks, &[&format!("http://{web}/hello")], 20);
        rss_peak = rss_peak.max(rss_mib(exit_pid));
        if !ok {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let secs = start.elapsed().as_secs_f64() + 5.0;
    assert!(
        ok && body == b"still serving",
        "no honest fetch within {secs:.0} s of the attack ({tries} tries)"
    );
    // And each tarpit upload ends, failed, before curl's own limit.
    let mut held = Vec::new();
    for u in uploads {
        let (ok, _, h) = u.join().unwrap();
        assert!(!ok, "an upload into the tarpit succeeded");
        assert!(h < 110.0, "a tarpit stream held for {h:.0} s");
        held.push(h.round());
    }
    assert!(
        rss_peak < before + 64.0,
        "exit RSS {before:.1} -> {rss_peak:.1} MiB"
    );
    eprintln!(
        "tarpit: honest fetch {secs:.1} s after the attack began; uploads ended after {held:?} s; exit RSS {before:.1} -> peak {rss_peak:.1} MiB"
    );
}

/// The exit service's process id (it is not a relay, so `localnet.json` lists only its
/// address): the `lethe-node run` whose directory is the network's `exit`.
fn exit_pid(net: &LocalNet) -> u32 {
    let dir = net.root_path().join("net/exit");
    let pids = std::fs::read_to_string(net.root_path().join("net/pids")).unwrap();
    let pid = pids
        .lines()
        .find_map(|l| l.strip_suffix(" exit"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(dir.exists());
    pid
}

/// A validly self-signed descriptor of a relay that runs nothing, on `address`.
fn fake_descriptor(rng: &mut StdRng, address: &str, epoch: u64) -> SignedDescriptor {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut cert = [0u8; 32];
    rng.fill_bytes(&mut cert);
    let d = NodeDescriptor {
        id: NodeId(identity_public_key(&secret)),
        role: Role::Mix,
        layer: Some(1),
        address: address.parse().unwrap(),
        sphinx_keys: vec![lethe_proto::EpochKey {
            epoch,
            key: Key32(cert),
        }],
        tls_cert: Key32(cert),
        published: lethe_net::unix_now(),
        family: None,
        family_proof: None,
        country: None,
    };
    SignedDescriptor::sign(&d, &secret).unwrap()
}

/// Authorities used to co-sign a peer's document only if its body was byte-identical to
/// their own, so a different fake descriptor uploaded to each (three HTTP POSTs every few
/// seconds) kept every document below the threshold; each authority went on serving its
/// last document after it expired, and the network stopped within two epochs. Now they
/// agree relay by relay in voting rounds, list only relays they reach, and never serve an
/// expired document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_fakes_at_each_authority_cannot_freeze_the_directory() {
    // Epochs of 8 s: a document is valid for at most two, so the attack had stopped the
    // network well within the 24 s it runs here.
    let mut net = LocalNet::start_with_env("127.79.0", 2, &[("LETHE_EPOCH_SECS", "8")]).unwrap();
    let auth: Vec<Key32> = net
        .authority_keys
        .iter()
        .map(|k| Key32::parse_hex(k, "key").unwrap())
        .collect();
    let urls: Vec<String> = ["authority-1", "authority-2", "authority-3"]
        .iter()
        .map(|a| format!("http://{}", net.node(a).listen))
        .collect();
    let fetch = |url: String| async move {
        let (status, body) = http::request("GET", &format!("{url}/v1/topology"), None)
            .await
            .unwrap();
        (status, body)
    };
    let mut rng = StdRng::seed_from_u64(79);
    let mut fakes = std::collections::HashSet::new();
    let mut serials = std::collections::BTreeSet::new();
    let start = Instant::now();
    let mut n = 0u8;
    while start.elapsed() < Duration::from_secs(24) {
        let epoch = lethe_net::unix_now() / 8;
        for url in &urls {
            n = n.wrapping_add(1);
            let d = fake_descriptor(&mut rng, &format!("127.79.5.{n}:9000"), epoch);
            fakes.insert(d.verify().unwrap().id);
            let body = serde_json::to_vec(&d).unwrap();
            let (status, _) = http::request("POST", &format!("{url}/v1/descriptors"), Some(&body))
                .await
                .unwrap();
            assert_eq!(
                status, 200,
                "a well-formed fake is accepted (registration is open)"
            );
        }
        for url in &urls {
            let (status, body) = fetch(url.clone()).await;
            assert_eq!(status, 200);
            let doc: SignedTopology = serde_json::from_slice(&body).unwrap();
            let t = doc
                .verify(&auth, 2, lethe_net::unix_now())
                .expect("every authority serves a valid document");
            assert_eq!(t.nodes().len(), 8, "exactly the real relays");
            assert!(t.nodes().iter().all(|d| !fakes.contains(&d.id)));
            serials.insert(t.body().serial);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        serials.len() >= 6,
        "documents kept coming: {} serials",
        serials.len()
    );
    // Honest traffic: a new client joins through the directory and is heard.
    let alice = net
        .client("alice", "gateway-1", "127.79.1.1:0")
        .await
        .unwrap();
    let bob = net
        .client("bob", "gateway-2", "127.79.1.2:0")
        .await
        .unwrap();
    bob.subscribe().await.unwrap();
    alice.send(&bob.address(), b"still here").await.unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(20)).await.as_deref(),
        Some(&b"still here"[..])
    );
    alice.close().await;
    bob.close().await;

    // With two authorities gone, the last one cannot make a document alone: it serves its
    // last good one while that is valid, then none; never an expired one.
    net.kill_node("authority-2").unwrap();
    net.kill_node("authority-3").unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let refused = loop {
        let (status, body) = fetch(urls[0].clone()).await;
        if status == 200 {
            let doc: SignedTopology = serde_json::from_slice(&body).unwrap();
            doc.verify(&auth, 2, lethe_net::unix_now())
                .expect("a served document is valid");
        } else {
            break (status, String::from_utf8_lossy(&body).to_string());
        }
        assert!(
            Instant::now() < deadline,
            "authority-1 kept serving past 40 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(refused.0, 503, "{refused:?}");
    eprintln!(
        "directory under fakes: {} fakes uploaded, {} documents, none listing a fake; alone: {}",
        fakes.len(),
        serials.len(),
        refused.1
    );
}

/// A relay rebuilt its replay filter empty at a restart while its epoch's Sphinx key stayed
/// on disk, so a packet dropped as a replay before the restart was accepted after it. Now
/// the filter is saved (every `replay.save_secs` and at shutdown) and restored with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_still_a_replay_after_the_relay_restarts() {
    let mut net = LocalNet::start("127.76.0", 5).unwrap();
    let replays = "lethe_packets_dropped_total{reason=\"replay\"}";
    let alice = net
        .client("alice", "gateway-1", "127.76.1.1:0")
        .await
        .unwrap();
    let bob = net
        .client("bob", "gateway-2", "127.76.1.2:0")
        .await
        .unwrap();
    bob.subscribe().await.unwrap();
    let out = alice.build(&bob.address(), b"only once").unwrap();
    alice.send_packet(&out.packet).await.unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(15)).await.as_deref(),
        Some(&b"only once"[..])
    );
    alice.send_packet(&out.packet).await.unwrap();
    net.wait_metric("gateway-1", replays, Duration::from_secs(10), |v| v >= 1.0)
        .await
        .unwrap();
    alice.close().await;

    // A clean restart of the entry gateway: same keys, a new process.
    net.stop_node("gateway-1").unwrap();
    net.start_node("gateway-1").unwrap();
    net.wait_metric(
        "gateway-1",
        "lethe_topology_nodes",
        Duration::from_secs(20),
        |v| v == 8.0,
    )
    .await
    .unwrap();
    let again = net
        .client("alice-again", "gateway-1", "127.76.1.3:0")
        .await
        .unwrap();
    again.send_packet(&out.packet).await.unwrap();
    // The restarted gateway itself drops it (its counters start at zero).
    net.wait_metric("gateway-1", replays, Duration::from_secs(10), |v| v >= 1.0)
        .await
        .unwrap();
    assert!(
        bob.recv_timeout(Duration::from_secs(2)).await.is_none(),
        "the replay was delivered"
    );
    // And it still relays: a fresh message gets through it.
    again
        .send(&bob.address(), b"after the restart")
        .await
        .unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(15)).await.as_deref(),
        Some(&b"after the restart"[..])
    );
    let log = std::fs::read_to_string(&net.node("gateway-1").log).unwrap();
    assert!(log.contains("replay filter restored"), "no restore logged");
    again.close().await;
    bob.close().await;
}

/// Hold `n` connections to `target` from `ip`, each with a fresh identity; returns them
/// (and how many were refused).
async fn hold_connections(
    ip: &str,
    target: std::net::SocketAddr,
    cert: Key32,
    n: usize,
) -> (Vec<quinn::Connection>, usize) {
    let ep = quinn::Endpoint::client(format!("{ip}:0").parse().unwrap()).unwrap();
    let id = TlsIdentity::generate().unwrap();
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(3), tls::connect(&ep, &id, target, cert))
            .await
        {
            Ok(Ok(c)) => held.push(c),
            _ => refused += 1,
        }
    }
    (held, refused)
}

/// Caps were global and keyed on the full address: connections from a few addresses filled
/// the global cap and even relays' links were refused; the handshake bucket was taken
/// before the handshake, so Initials that could never complete (430/s from one source)
/// refused most honest handshakes. Now relays have a budget of their own, sources count by
/// prefix (IPv4 /32, IPv6 /64; loopback here, so /32), every connection first answers a
/// QUIC Retry, and only completed handshakes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_addresses_cannot_lock_relays_or_honest_handshakes_out() {
    let mut net = LocalNet::start("127.74.0", 5).unwrap();
    // A small client cap on gateway-1, so four addresses fill it here.
    net.reconfigure(
        &["gateway-1"],
        &[("max_connections", "100"), ("connections_per_ip", "30")],
    )
    .await
    .unwrap();
    let gw1 = net.node("gateway-1").clone();
    let gw2 = net.node("gateway-2").clone();
    let bob = net
        .client("bob", "gateway-1", "127.74.1.2:0")
        .await
        .unwrap();
    bob.subscribe().await.unwrap();
    let alice = net
        .client("alice", "gateway-2", "127.74.1.1:0")
        .await
        .unwrap();
    let topology = alice.topology();
    let cert = |id: &str| topology.node(&id.parse().unwrap()).unwrap().tls_cert;
    let (cert1, cert2) = (cert(&gw1.id), cert(&gw2.id));

    // 1. Fill gateway-1's client cap from four addresses.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 1..=4 {
        let (h, r) = hold_connections(
            &format!("127.74.9.{i}"),
            gw1.listen.parse().unwrap(),
            cert1,
            30,
        )
        .await;
        held.extend(h);
        refused += r;
    }
    assert!(
        held.len() <= 99 && refused > 0,
        "{} held, {refused} refused",
        held.len()
    );
    // The last-layer mixes restart, so their links into gateway-1 must be made anew.
    for m in ["mix-3a", "mix-3b"] {
        net.stop_node(m).unwrap();
        net.start_node(m).unwrap();
    }
    for m in ["mix-3a", "mix-3b"] {
        net.wait_metric(m, "lethe_topology_nodes", Duration::from_secs(20), |v| {
            v == 8.0
        })
        .await
        .unwrap();
    }
    for i in 0..10u8 {
        alice.send(&bob.address(), &[i; 32]).await.unwrap();
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while got < 10 && Instant::now() < deadline {
        if bob.recv_timeout(Duration::from_secs(1)).await.is_some() {
            got += 1;
        }
    }
    assert_eq!(
        got, 10,
        "relays' links into a gateway full of clients were refused"
    );
    drop(held);

    // 2. Handshakes that never complete (a wrong pin: the client gives up once it sees the
    // certificate), as fast as eight tasks go from one address, for at most 6 s, while ten
    // honest clients connect to the same gateway from their own addresses.
    let stop = Instant::now() + Duration::from_secs(6);
    let target: std::net::SocketAddr = gw2.listen.parse().unwrap();
    let junk: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let ep = quinn::Endpoint::client("127.74.9.9:0".parse().unwrap()).unwrap();
                let id = TlsIdentity::generate().unwrap();
                let mut n = 0u32;
                while Instant::now() < stop && n < 2000 {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        tls::connect(&ep, &id, target, Key32([0; 32])),
                    )
                    .await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut honest_ok = 0;
    for i in 0..10 {
        let (h, _) = hold_connections(&format!("127.74.2.{i}"), target, cert2, 1).await;
        honest_ok += h.len();
    }
    let mut attempts = 0;
    for j in junk {
        attempts += j.await.unwrap();
    }
    eprintln!(
        "limits: {} of 120 held at gateway-1, relays re-linked, bob got {got}/10; {attempts} failing handshakes in 6 s, honest {honest_ok}/10",
        120 - refused
    );
    assert_eq!(honest_ok, 10, "honest handshakes refused during the flood");
    alice.close().await;
    bob.close().await;
}

/// One host's connections to an authority, each sending half a request and then a byte a
/// second, reopened as the authority closes them: at most `max_open` at once and
/// `max_total` in all, until `stop`. Returns how many it opened.
async fn slowloris(from: &str, to: std::net::SocketAddr, stop: Instant) -> u32 {
    use tokio::io::AsyncWriteExt;
    let (max_open, max_total) = (200, 5000u32);
    let mut opened = 0u32;
    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    while Instant::now() < stop {
        while open.len() < max_open && opened < max_total {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
            opened += 1;
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_millis(200), sock.connect(to)).await
                && s.write_all(b"GET /v1/topology HTTP/1.1\r\n").await.is_ok()
            {
                open.push(s);
            }
        }
        let mut alive = Vec::new();
        for mut s in open.drain(..) {
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(50), s.write_all(b"X")).await
            {
                alive.push(s);
            }
        }
        open = alive;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    opened
}

/// An authority had 64 HTTP slots and no per-address limit, and clients knew one directory
/// URL: slow connections from one host held every slot and new clients could not start.
/// Now the authority's server (hyper) keeps each source prefix to 8 connections and drops
/// a head not read within 5 s, and clients fetch from every authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_cannot_cut_clients_off_the_directory() {
    let mut net = LocalNet::start("127.73.0", 5).unwrap();
    let a1: std::net::SocketAddr = net.node("authority-1").listen.parse().unwrap();
    let stop = Instant::now() + Duration::from_secs(12);
    let attack = tokio::spawn(slowloris("127.73.9.1", a1, stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Honest fetches from another address are answered, and at once.
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _) = http::request("GET", &format!("http://{a1}/v1/topology"), None)
            .await
            .expect("authority-1 answers during the attack");
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // A client whose first directory URL is authority-1 starts during the attack.
    let alice = net
        .client("alice", "gateway-1", "127.73.1.1:0")
        .await
        .unwrap();
    let opened = attack.await.unwrap();
    // With authority-1 gone altogether, a client still starts, from the other authorities.
    net.kill_node("authority-1").unwrap();
    let bob = net
        .client("bob", "gateway-2", "127.73.1.2:0")
        .await
        .unwrap();
    bob.subscribe().await.unwrap();
    alice
        .send(&bob.address(), b"through the mirrors")
        .await
        .unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(15)).await.as_deref(),
        Some(&b"through the mirrors"[..])
    );
    eprintln!(
        "slowloris: {opened} slow connections in 12 s; honest fetches answered; clients start without authority-1"
    );
    alice.close().await;
    bob.close().await;
}

/// The SOCKS proxy had 256 slots and a 10 s handshake timeout: idle connections that never
/// sent a greeting held every slot. Now the connections still in their handshake are at
/// most 32 and the oldest goes when another arrives, so an application's handshake (a few
/// milliseconds) always finds room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_take_the_socks_proxys_slots() {
    let net = LocalNet::start("127.72.0", 2).unwrap();
    let web = hello_server("127.72.0.61");
    let proxy: std::net::SocketAddr = net.socks.parse().unwrap();
    // 300 idle connections, kept open (bounded in count and time).
    let mut idle = Vec::new();
    let t = Instant::now();
    while idle.len() < 300 && t.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(proxy),
        )
        .await
        {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 300);
    let (ok, body, secs) = tokio::task::spawn_blocking({
        let proxy = net.socks.clone();
        move || curl(&proxy, &[&format!("http://{web}/hello")], 30)
    })
    .await
    .unwrap();
    assert!(ok && body == b"still serving", "fetch failed ({secs:.1} s)");
    eprintln!("socks: 300 idle connections open, a fetch took {secs:.1} s");
    drop(idle);
}
