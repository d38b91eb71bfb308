//! The `server-trust` binary against a real store.

use std::path::Path;
use std::process::{Command, Output};

use server_trust::{Actor, Config, Engine, PresenceKind, Subscription};

fn cli(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_server-trust"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("SERVER_TRUST_HOST")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn engine(root: &Path) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..Config::default() }).unwrap()
}

#[test]
fn approve_and_deny_are_recorded_for_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();

    let o = cli(dir.path(), &["pending"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("montague.lit") && text(&o).contains("2 pending"), "{}", text(&o));

    let o = cli(dir.path(), &["approve", "Montague.LIT"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(dir.path(), &["deny", "verona.lit"]);
    assert!(o.status.success(), "{}", text(&o));

    let acts = e.poll().unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, server_trust::Action::Send { kind: PresenceKind::Subscribed, .. }))
    );
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::FromPendingOut);
    assert_eq!(e.state("verona.lit").unwrap(), Subscription::None);

    let o = cli(dir.path(), &["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["peer"], "montague.lit");
    assert_eq!(v[0]["trusted"], true);

    let o = cli(dir.path(), &["log", "--peer", "montague.lit"]);
    assert!(text(&o).contains("cli") && text(&o).contains("approve"), "{}", text(&o));
}

#[test]
fn request_and_revoke_are_queued() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let o = cli(dir.path(), &["request", "montague.lit"]);
    assert!(o.status.success(), "{}", text(&o));
    let acts = e.poll().unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, server_trust::Action::Send { kind: PresenceKind::Subscribe, .. }))
    );
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingOut);
    let o = cli(dir.path(), &["revoke", "montague.lit"]);
    assert!(o.status.success(), "{}", text(&o));
    e.poll().unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    // Revoking a stranger is an error.
    let o = cli(dir.path(), &["revoke", "stranger.lit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("not in the roster"), "{}", text(&o));
    e.approve("nobody.lit", Actor::Cli).unwrap_err();
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path());
    for (args, needle) in [
        (&["approve", "alice@montague.lit"][..], "localpart"),
        (&["approve", "montague.lit/res"][..], "resource"),
        (&["approve", "../../etc/passwd"][..], "invalid server domain"),
        (&["approve", "montague.lit"][..], "no pending request"),
        (&["request", "capulet.lit"][..], "this host"),
        (&["--host", "verona.lit", "list"][..], "no store for verona.lit"),
    ] {
        let o = cli(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn several_hosts_need_host() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path());
    Engine::open(dir.path(), "montague.lit", Config { watch: false, ..Config::default() }).unwrap();
    let o = cli(dir.path(), &["list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("several hosts (capulet.lit, montague.lit)"), "{}", text(&o));
    let o = cli(dir.path(), &["--host", "montague.lit", "list"]);
    assert!(o.status.success(), "{}", text(&o));
}
