//! Messages of any size through `lethe-client send` and `receive` (real processes, real
//! QUIC on loopback): 1 KB, 100 KB and 10 MB arrive whole, once and byte-exact, and `send`
//! exits 0 only once the recipient has acknowledged them; a recipient that is offline gets
//! its message when it comes online, while a sender whose timeout passes first fails with a
//! reason; a mix killed for good in the middle of a message costs nothing but time.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lethe_tests::{LocalNet, bin_dir};
use rand::RngExt;

/// Cover for the clients: payload slots every 5 ms (the messages' packets take them), loops
/// and drops every 200 ms (loops find a dead mix).
const COVER: &[(&str, &str)] = &[
    ("LETHE_COVER_PAYLOAD_MS", "5"),
    ("LETHE_COVER_LOOP_MS", "200"),
    ("LETHE_COVER_DROP_MS", "200"),
];

/// `lethe-client send --file FILE`, run to its end.
fn send(dir: &Path, bind: &str, to: &str, file: &Path, extra: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let mut c = Command::new(bin_dir().join("lethe-client"));
    c.arg("send")
        .arg("--dir")
        .arg(dir)
        .args(["--bind", bind, "--to", to, "--file"])
        .arg(file)
        .args(extra);
    let out = c.output().unwrap();
    (out, start.elapsed())
}

/// `lethe-client receive` in the background, until `count` messages or `timeout` s.
fn receive(dir: &Path, bind: &str, out: &Path, count: usize, timeout: u64) -> Child {
    Command::new(bin_dir().join("lethe-client"))
        .arg("receive")
        .arg("--dir")
        .arg(dir)
        .args(["--bind", bind, "--out-dir"])
        .arg(out)
        .args(["--count", &count.to_string()])
        .args(["--timeout", &timeout.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A network with cover, Alice (on gateway-1) and Bob (on gateway-2), a folder for the
/// files to send and Bob's output folder.
struct Pair {
    net: LocalNet,
    alice: PathBuf,
    bob: PathBuf,
    /// Bob's address.
    to: String,
    files: PathBuf,
    out: PathBuf,
}

impl Pair {
    async fn start(prefix: &str) -> Pair {
        let net = LocalNet::start_with_env(prefix, 5, COVER).unwrap();
        let alice = net.client_dir("alice", "gateway-1").await.unwrap();
        let bob = net.client_dir("bob", "gateway-2").await.unwrap();
        let to = lethe_client::address(&bob).unwrap().to_string();
        let files = net.root_path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let out = net.root_path().join("bob-inbox");
        Pair {
            net,
            alice,
            bob,
            to,
            files,
            out,
        }
    }
}

fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rng().fill(&mut data[..]);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

/// The complete messages in `out` (not the partial ones), sorted by name.
fn messages_in(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("message-"))
        })
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_1kb_100kb_and_10mb_arrive_whole_once_and_acknowledged() {
    let Pair {
        net: _net,
        alice,
        bob,
        to,
        files,
        out,
    } = Pair::start("127.91.0").await;
    let rx = receive(&bob, "127.91.7.2:0", &out, 3, 600);

    let mut sent = Vec::new();
    // 1 KB and 100 KB on the cover schedule; 10 MB without cover, which is what a debug
    // build on two cores can carry in a test's time (on cover it takes minutes at the
    // network's rates: BENCHMARKS.md).
    for (name, len, extra) in [
        ("1kb", 1024, &[][..]),
        ("100kb", 100 * 1024, &[][..]),
        ("10mb", 10 * 1024 * 1024, &["--no-cover"][..]),
    ] {
        let (file, data) = random_file(&files, name, len);
        let (o, took) = send(&alice, "127.91.7.1:0", &to, &file, extra);
        assert!(
            o.status.success(),
            "send of {name} failed: {}",
            text(&o.stderr)
        );
        let said = text(&o.stderr);
        assert!(said.contains("acknowledged all"), "{said}");
        eprintln!(
            "{name}: sent and acknowledged in {:.1} s",
            took.as_secs_f64()
        );
        // Acknowledged means written: the recipient names a message only when it is whole.
        let have = messages_in(&out);
        assert!(
            have.iter().any(|(_, b)| *b == data),
            "{name} acknowledged but not in the recipient's directory"
        );
        sent.push(data);
    }
    let status = tokio::task::spawn_blocking(move || rx.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    // Each message once, byte-exact, and each path printed once.
    let have = messages_in(&out);
    assert_eq!(have.len(), 3, "exactly the three messages");
    for (i, data) in sent.iter().enumerate() {
        assert_eq!(
            &have[i].1,
            data,
            "message {} is byte-exact and in order",
            i + 1
        );
    }
    let printed = text(&status.stdout);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    // Nothing is left half-written.
    let partial = out.join(lethe_client::message::PARTIAL_DIR);
    assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_gets_its_message_when_it_comes_online() {
    let Pair {
        net,
        alice,
        bob,
        to,
        files,
        out,
    } = Pair::start("127.92.0").await;

    // Bob is offline: a send whose timeout is short fails, and says why. (The message is
    // larger than the sender's window, so his gateway's mailbox gets only its beginning:
    // it cannot arrive whole once the sender has given up. A message that fits the window
    // whole may still arrive later: `send` says so.)
    let (early, _) = random_file(&files, "early", 100 * 1024);
    let (o, took) = send(&alice, "127.92.7.1:0", &to, &early, &["--timeout", "4"]);
    assert!(
        !o.status.success(),
        "a send nobody acknowledged exits non-zero"
    );
    let said = text(&o.stderr);
    assert!(said.contains("did not acknowledge"), "{said}");
    assert!(said.contains("0 of 102400 bytes"), "{said}");
    assert!(said.contains("may be offline"), "{said}");
    assert!(took < Duration::from_secs(30), "it gives up at its timeout");

    // A second send waits for him; he comes online only later.
    let (file, data) = random_file(&files, "later", 100 * 1024);
    let sender = {
        let (alice, to, file) = (alice.clone(), to.clone(), file.clone());
        std::thread::spawn(move || send(&alice, "127.92.7.1:0", &to, &file, &["--timeout", "240"]))
    };
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert!(!sender.is_finished(), "nothing can acknowledge it yet");
    let rx = receive(&bob, "127.92.7.2:0", &out, 1, 240);
    let (o, took) = tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();
    let said = text(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("no acknowledgement from the recipient"),
        "the sender says it is waiting: {said}"
    );
    eprintln!(
        "offline recipient: acknowledged {:.1} s after the send began",
        took.as_secs_f64()
    );
    let r = tokio::task::spawn_blocking(move || rx.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let have = messages_in(&out);
    assert_eq!(
        have.len(),
        1,
        "only the whole message, not the abandoned one"
    );
    assert_eq!(have[0].1, data);

    // Bob restarts in the middle of a message: nothing half-written is left, and the
    // sender learns that its message broke off (instead of retransmitting until its
    // timeout) and says to send it again.
    let out2 = net.root_path().join("bob-inbox-2");
    let mut first = receive(&bob, "127.92.7.2:0", &out2, 1, 240);
    let (file, _) = random_file(&files, "cut", 1024 * 1024);
    let sender = {
        let (alice, to, file) = (alice.clone(), to.clone(), file.clone());
        std::thread::spawn(move || send(&alice, "127.92.7.1:0", &to, &file, &["--timeout", "240"]))
    };
    wait_for_partial(&out2, 128 * 1024, &sender).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = receive(&bob, "127.92.7.2:0", &out2, 1, 120);
    let restarted = Instant::now();
    let (o, _) = tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();
    let said = text(&o.stderr);
    assert!(
        !o.status.success(),
        "a message cut off is not delivered: {said}"
    );
    assert!(said.contains("broke the message off"), "{said}");
    eprintln!(
        "recipient restarted: the sender knew {:.1} s later",
        restarted.elapsed().as_secs_f64()
    );
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        messages_in(&out2).is_empty(),
        "no message from a cut-off stream"
    );
}

/// Wait until the recipient has written `bytes` of a message in progress.
async fn wait_for_partial(
    out: &Path,
    bytes: u64,
    sender: &std::thread::JoinHandle<(Output, Duration)>,
) {
    let partial = out.join(lethe_client::message::PARTIAL_DIR);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let written: u64 = std::fs::read_dir(&partial)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if written >= bytes {
            return;
        }
        assert!(!sender.is_finished(), "the send ended too early");
        assert!(Instant::now() < deadline, "the message never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_survives_a_mix_killed_for_good() {
    let Pair {
        mut net,
        alice,
        bob,
        to,
        files,
        out,
    } = Pair::start("127.93.0").await;
    let rx = receive(&bob, "127.93.7.2:0", &out, 1, 400);
    let (file, data) = random_file(&files, "msg", 1024 * 1024);
    let sender = {
        let (alice, to, file) = (alice.clone(), to.clone(), file.clone());
        std::thread::spawn(move || send(&alice, "127.93.7.1:0", &to, &file, &["--timeout", "300"]))
    };
    // Kill a middle mix once a quarter of the message is on the recipient's disk.
    wait_for_partial(&out, 256 * 1024, &sender).await;
    net.kill_node("mix-2a").unwrap();
    let killed = Instant::now();
    let (o, _) = tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    eprintln!(
        "mix killed: the message was acknowledged {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let r = tokio::task::spawn_blocking(move || rx.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let have = messages_in(&out);
    assert_eq!(have.len(), 1);
    assert!(have[0].1 == data, "byte-exact");
}
