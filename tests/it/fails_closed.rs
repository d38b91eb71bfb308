//! Whatever goes wrong, nobody gains trust: a broken store disables the module instead of
//! falling back to Prosody's auto-approval, user JIDs never take part, and corrupt files are
//! reported and kept as they are.

use std::fs;

use server_trust::{Action, Domain, Engine, PresenceKind};
use server_trust_lab::{CAPULET, Lab, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{QUIET, WAIT, cfg, engine};

#[test]
fn broken_store_fails_closed_never_auto_approves() {
    let lab = Lab::server_trust();
    let c = &lab.capulet;
    c.stop();
    let roster = c.store.join(CAPULET).join("roster.toml");
    fs::write(&roster, "[peers.\"montague.lit\"]\nstate = \"trust me\"\n").unwrap();
    c.start();
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(
        console.contains("Server buddies disabled") && console.contains("roster.toml:2"),
        "the admin must be told why, with file and line:\n{console}"
    );
    lab.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='j1'/>");
    c.wait_for("subscribe reaches the broken capulet", WAIT, presence_from(MONTAGUE, "subscribe"));
    lab.montague.assert_none_for(
        QUIET,
        presence_from(CAPULET, "subscribed"),
        "a broken store must not fall back to stock auto-approval",
    );
    assert!(fs::read_to_string(&roster).unwrap().contains("trust me"), "the broken file is kept as is");
}

#[test]
fn user_jid_subscribing_to_the_host_gains_nothing() {
    let lab = Lab::server_trust();
    lab.montague.inject("<presence from='alice@montague.lit' to='capulet.lit' type='subscribe' id='h1'/>");
    lab.capulet.wait_for("alice's subscribe arrives", WAIT, |s| {
        s.via_s2s() && s.from.as_deref() == Some("alice@montague.lit") && s.is_type("subscribe")
    });
    lab.montague.assert_none_for(
        QUIET,
        |s| s.via_s2s() && s.to.as_deref() == Some("alice@montague.lit"),
        "stock auto-approval must not answer a user JID",
    );
    assert_eq!(lab.capulet.state("montague.lit"), "absent");
    assert!(fs::read_dir(lab.capulet.store.join(CAPULET).join("pending")).unwrap().next().is_none());
}

#[test]
fn corrupt_pending_file_is_reported_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", cfg());
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = c.store().pending_path(&Domain::new("montague.lit").unwrap());
    fs::write(&path, "peer = \"montague.lit\"\ndecision = [oops\n").unwrap();
    let a = c.poll().unwrap();
    assert!(
        a.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("montague.lit.toml:2"))),
        "{a:?}"
    );
    assert!(c.poll().unwrap().is_empty(), "reported once");
    assert_eq!(fs::read_to_string(&path).unwrap(), "peer = \"montague.lit\"\ndecision = [oops\n");
    // A repeat subscribe does not overwrite it either.
    c.inbound("montague.lit", PresenceKind::Subscribe, None).ok();
    assert_eq!(fs::read_to_string(&path).unwrap(), "peer = \"montague.lit\"\ndecision = [oops\n");
}

#[test]
fn corrupt_roster_refuses_to_open_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(engine(dir.path(), "capulet.lit", cfg()));
    let path = dir.path().join("capulet.lit/roster.toml");
    fs::write(&path, "[peers.\"montague.lit\"]\nstate = \"bestest\"\n").unwrap();
    let err = Engine::open(dir.path(), "capulet.lit", cfg()).err().unwrap().to_string();
    assert!(err.contains("roster.toml:2"), "{err}");
    assert!(fs::read_to_string(&path).unwrap().contains("bestest"));
}
