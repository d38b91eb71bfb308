//! Issue 14, defect 6, through the real binary: weak hook and admin tokens are refused by
//! `--check` and at start with a clear message, and `gen-token` makes good ones.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_server-trust-sidecar");

fn secret(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config in `dir` whose hook and admin tokens are `hook` and `admin`.
fn setup(dir: &Path, hook: &str, admin: &str) -> std::path::PathBuf {
    secret(dir, "hook.token", hook);
    secret(dir, "admin.token", admin);
    secret(dir, "api.token", "ejabberd-makes-this-one");
    std::fs::create_dir_all(dir.join("store")).unwrap(); // `--check` wants the store folder
    let config = dir.join("sidecar.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    config
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("SERVER_TRUST_LOG", "warn").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn new_token() -> String {
    let o = run(&["gen-token"]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn check_and_start_refuse_short_tokens_with_a_clear_message() {
    let good = "7c1f0e9a3d5b2846e0c7a9f1b3d5e8c2".to_string();
    for (hook, admin, file) in [("x", good.as_str(), "hook.token"), (good.as_str(), "abc", "admin.token")] {
        let dir = tempfile::tempdir().unwrap();
        let config = setup(dir.path(), hook, admin);
        let c = config.to_str().unwrap();
        for args in [&["--config", c, "--check"][..], &["--config", c][..]] {
            let o = run(args);
            let out = text(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?} must refuse: {out}");
            assert!(out.contains(file) && out.contains("at least 32") && out.contains("gen-token"), "{out}");
            assert!(!out.contains("listening"), "never started: {out}");
        }
    }
    // Long but typed by hand.
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &"ab".repeat(20), &good);
    let o = run(&["--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("only 2 different characters"), "{}", text(&o));
    // Two made by gen-token pass.
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &new_token(), &good);
    let o = run(&["--config", config.to_str().unwrap(), "--check"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn gen_token_makes_256_bit_tokens_and_writes_new_private_files() {
    let a = new_token();
    let b = new_token();
    assert_eq!(a.len(), 64, "{a}");
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
    assert_ne!(a, b);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hook.token");
    let o = run(&["gen-token", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty(), "the token goes to the file only");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&out).unwrap();
    assert_eq!(token.trim().len(), 64);
    // Never over an existing file.
    let o = run(&["gen-token", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), token);
}
