//! The `lethe-node` binary on bad input: it refuses, names the problem, and exits non-zero.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn node(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe-node"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lethe-node init` of a mix of `layer` in `dir`.
fn init_mix(dir: &str, layer: &str) -> (bool, String) {
    let key = "ab".repeat(32);
    node(&[
        "init",
        "--dir",
        dir,
        "--role",
        "mix",
        "--layer",
        layer,
        "--listen",
        "127.0.0.1:1",
        "--directory",
        "http://127.0.0.1:2",
        "--authority-key",
        &key,
    ])
}

#[test]
fn malformed_config_is_refused_with_the_field_named() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("n");
    let dir_s = dir.to_str().unwrap();
    let (ok, err) = init_mix(dir_s, "1");
    assert!(ok, "{err}");
    // init never overwrites a node
    let (ok, err) = init_mix(dir_s, "1");
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");
    // an invalid layer at init
    let (ok, err) = init_mix(d.path().join("m").to_str().unwrap(), "7");
    assert!(!ok && err.contains("node.layer"), "{err}");
    // a config edited into nonsense
    let cfg = dir.join("node.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("threshold = 1", "threshold = 3")).unwrap();
    let (ok, err) = node(&["run", "--dir", dir_s]);
    assert!(!ok && err.contains("directory.threshold"), "{err}");
    std::fs::write(&cfg, format!("{text}\n[extra]\nx = 1\n")).unwrap();
    let (ok, err) = node(&["run", "--dir", dir_s]);
    assert!(!ok && err.contains("extra"), "{err}");
    // a key file readable by others
    std::fs::write(&cfg, &text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("identity.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, err) = node(&["run", "--dir", dir_s]);
    assert!(!ok && err.contains("chmod 600"), "{err}");
}

#[test]
fn an_exit_is_initialised_with_private_files_and_prints_its_address() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("exit");
    let dir_s = dir.to_str().unwrap();
    let key = "ab".repeat(32);
    let gateway = "cd".repeat(32);
    let init = |allow: &str| {
        Command::new(env!("CARGO_BIN_EXE_lethe-node"))
            .args([
                "init",
                "--dir",
                dir_s,
                "--role",
                "exit",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--directory", "http://127.0.0.1:2", "--authority-key", &key])
            .args(["--gateway", &gateway, "--allow", allow])
            .output()
            .unwrap()
    };
    // a malformed allow-list rule is refused before anything is written
    let out = init("nonsense");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
    let out = init("127.0.0.0/8:*");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(addr.ends_with(&format!("@{gateway}")), "{addr}");
    for e in std::fs::read_dir(&dir).unwrap() {
        let mode = e.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "a file of the exit is readable by others");
    }
    let exit_toml = std::fs::read_to_string(dir.join("exit.toml")).unwrap();
    assert!(exit_toml.contains("127.0.0.0/8:*"), "{exit_toml}");
    for cmd in ["address", "id"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lethe-node"))
            .args([cmd, "--dir", dir_s])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), addr, "{cmd}");
    }
}
