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

/// Bad option values used to make the native `open` raise, so the module failed to load and
/// stock mod_presence auto-approved. Each must leave the hook in place, closed, with one
/// error line naming the option.
#[test]
fn bad_options_fail_closed_in_prosody() {
    let cases = [
        ("server_trust_max_pending = -1", "max_pending"),
        ("server_trust_max_pending = 2.5", "max_pending"),
        ("server_trust_repeat_window = math.huge", "repeat_window"),
        ("server_trust_repeat_window = -5", "repeat_window"),
        ("server_trust_max_pending_per_site = 0", "max_pending_per_site"),
        ("server_trust_notify_burst = 0.5", "notify_burst"),
        ("server_trust_site_requests_per_minute = 0", "site_requests_per_minute"),
        ("server_trust_pending_expiry_days = 1.5", "pending_expiry_days"),
    ];
    for (line, option) in cases {
        let lab = Lab::with_server_trust(server_trust_lab::LabOptions {
            extra_host: line.to_string(),
            ..Default::default()
        });
        let console = fs::read_to_string(&lab.capulet.console_log).unwrap();
        let errors: Vec<&str> = console.lines().filter(|l| l.contains("Server buddies disabled")).collect();
        assert!(
            errors.len() == 1 && errors[0].contains(option),
            "{line}: one error line naming {option}:\n{console}"
        );
        lab.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='o1'/>");
        lab.capulet.wait_for("subscribe reaches capulet", WAIT, presence_from(MONTAGUE, "subscribe"));
        lab.montague.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), line);
    }
}

/// Another module's failing `server-trust/added` listener used to lose our stanzas: the
/// decision was on disk, the `subscribed` never left.
#[test]
fn a_failing_trust_listener_loses_nothing() {
    let plugins = tempfile::tempdir().unwrap();
    fs::write(
        plugins.path().join("mod_bad_listener.lua"),
        "module:hook(\"server-trust/added\", function () error(\"listener bug\") end, 100);\n",
    )
    .unwrap();
    let lab = Lab::with_server_trust(server_trust_lab::LabOptions {
        plugin_paths: vec![plugins.path().to_path_buf()],
        extra_host: "modules_enabled = { \"server_trust\", \"bad_listener\" }".into(),
        ..Default::default()
    });
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_state(MONTAGUE, "none+pending-in", WAIT);
    lab.capulet.cli(&["approve", MONTAGUE]);
    lab.montague.wait_for("subscribed despite the listener", WAIT, presence_from(CAPULET, "subscribed"));
    lab.montague.wait_state(CAPULET, "both", WAIT);
    let console = fs::read_to_string(&lab.capulet.console_log).unwrap();
    assert!(console.contains("listener failed") && console.contains("listener bug"), "{console}");
}
