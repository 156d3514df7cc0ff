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
        "/nonexistent/x",
        "--count",
        "1",
    ]);
    assert!(!ok, "{err}");
}

#[test]
fn a_socks_proxy_open_to_other_hosts_needs_a_flag() {
    let (ok, _, err) = client(&[
        "socks",
        "--dir",
        "/nonexistent",
        "--listen",
        "0.0.0.0:1080",
        "--exit",
        "x@y",
    ]);
    assert!(!ok);
    assert!(err.contains("--allow-remote"), "{err}");
}
