//! The `lethe-client` binary without a network: keys, address, and clear refusals.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn client(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe-client"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_prints_the_address_that_address_prints_again() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("c");
    let dir = dir.to_str().unwrap();
    let gw = "cd".repeat(32);
    let (ok, addr, err) = client(&["init", "--dir", dir, "--gateway", &gw]);
    assert!(ok, "{err}");
    assert!(addr.ends_with(&format!("@{gw}")), "{addr}");
    let (ok, again, _) = client(&["address", "--dir", dir]);
    assert!(ok);
    assert_eq!(again, addr);
    // the TLS key is private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path().join("c/tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // never overwritten
    let (ok, _, err) = client(&["init", "--dir", dir, "--gateway", &gw]);
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");
    // a bad recipient address is refused before any network use
    let (ok, _, err) = client(&["send", "--dir", dir, "--to", "nobody"]);
    assert!(!ok && err.contains("--to"), "{err}");
    // no directory configured
    let (ok, _, err) = client(&[
        "receive",
        "--dir",
        dir,
        "--out-dir",
        d.path().join("out").to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert!(!ok, "{err}");
}

#[test]
fn a_socks_proxy_open_to_other_hosts_needs_a_flag() {
    let d = tempfile::tempdir().unwrap();
    let (ok, _, err) = client(&[
        "socks",
        "--dir",
        d.path().join("none").to_str().unwrap(),
        "--listen",
        "0.0.0.0:1080",
        "--exit",
        "x@y",
    ]);
    assert!(!ok);
    assert!(err.contains("--allow-remote"), "{err}");
}

#[test]
fn bind_takes_a_bare_address_too() {
    // A bare address is accepted (the error is about the missing directory, not the
    // address); a malformed one is refused by name.
    let d = tempfile::tempdir().unwrap();
    let (dir, out) = (d.path().join("none"), d.path().join("out"));
    let (dir, out) = (dir.to_str().unwrap(), out.to_str().unwrap());
    let args = |bind| ["receive", "--dir", dir, "--out-dir", out, "--bind", bind];
    let (ok, _, err) = client(&args("127.0.0.99"));
    assert!(!ok && !err.contains("--bind"), "{err}");
    let (ok, _, err) = client(&args("not-an-ip"));
    assert!(!ok && err.contains("neither an IP address"), "{err}");
}
