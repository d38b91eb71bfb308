//! The `server-trust` binary (built by the lab for this profile) against a real store.

use server_trust::{Actor, Config, Engine, PresenceKind, Subscription};
use server_trust_lab::admin::{output_text, run_cli};

use crate::support::{cfg, engine};

#[test]
fn approve_and_deny_are_recorded_for_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), "capulet.lit", cfg());
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();

    let o = run_cli(dir.path(), &["pending"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("montague.lit") && output_text(&o).contains("2 pending"),
        "{}",
        output_text(&o)
    );

    let o = run_cli(dir.path(), &["approve", "Montague.LIT"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = run_cli(dir.path(), &["deny", "verona.lit"]);
    assert!(o.status.success(), "{}", output_text(&o));

    let acts = e.poll().unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, server_trust::Action::Send { kind: PresenceKind::Subscribed, .. }))
    );
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::FromPendingOut);
    assert_eq!(e.state("verona.lit").unwrap(), Subscription::None);

    let o = run_cli(dir.path(), &["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["peer"], "montague.lit");
    assert_eq!(v[0]["trusted"], true);

    let o = run_cli(dir.path(), &["log", "--peer", "montague.lit"]);
    assert!(output_text(&o).contains("cli") && output_text(&o).contains("approve"), "{}", output_text(&o));
}

#[test]
fn request_and_revoke_are_queued() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), "capulet.lit", cfg());
    let o = run_cli(dir.path(), &["request", "montague.lit"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let acts = e.poll().unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, server_trust::Action::Send { kind: PresenceKind::Subscribe, .. }))
    );
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingOut);
    let o = run_cli(dir.path(), &["revoke", "montague.lit"]);
    assert!(o.status.success(), "{}", output_text(&o));
    e.poll().unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    // Revoking a stranger is an error.
    let o = run_cli(dir.path(), &["revoke", "stranger.lit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(output_text(&o).contains("not in the roster"), "{}", output_text(&o));
    e.approve("nobody.lit", Actor::Cli).unwrap_err();
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path(), "capulet.lit", cfg());
    for (args, needle) in [
        (&["approve", "alice@montague.lit"][..], "localpart"),
        (&["approve", "montague.lit/res"][..], "resource"),
        (&["approve", "../../etc/passwd"][..], "invalid server domain"),
        (&["approve", "montague.lit"][..], "no pending request"),
        (&["request", "capulet.lit"][..], "this host"),
        (&["--host", "verona.lit", "list"][..], "no store for verona.lit"),
    ] {
        let o = run_cli(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", output_text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn several_hosts_need_host() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path(), "capulet.lit", cfg());
    Engine::open(dir.path(), "montague.lit", Config { watch: false, ..Config::default() }).unwrap();
    let o = run_cli(dir.path(), &["list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(output_text(&o).contains("several hosts (capulet.lit, montague.lit)"), "{}", output_text(&o));
    let o = run_cli(dir.path(), &["--host", "montague.lit", "list"]);
    assert!(o.status.success(), "{}", output_text(&o));
}
