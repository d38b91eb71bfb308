//! XEP-0267 between two real Prosody 0.12 servers over real s2s on loopback, with
//! mod_server_trust loaded on both. Assertions are on the stanzas each server actually
//! received (recorded by tests/prosody/mod_lab.lua), the store files and the CLI.
//!
//! Needs `prosody` (Debian 0.12) and the Lua bridge built (`cargo build --workspace`);
//! the README test command does both.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::prosody::{CAPULET, Lab, LabOptions, MONTAGUE, presence_from};

const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for a stanza that must NOT come. Prosody answers in ~0.2 s over an
/// established stream and the module polls every 0.1 s, so 1.5 s is a wide margin.
const QUIET: Duration = Duration::from_millis(1500);

fn lab() -> Lab {
    lab_with(LabOptions::default())
}

fn lab_with(opts: LabOptions) -> Lab {
    Lab::with_server_trust(opts)
}

/// montague asks, capulet's admin is prompted; returns the lab at that point.
fn requested() -> Lab {
    let lab = lab();
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    lab.capulet.wait_state(MONTAGUE, "none+pending-in", WAIT);
    lab
}

/// Both servers reach Both.
fn buddies() -> Lab {
    let lab = requested();
    lab.capulet.cli(&["approve", MONTAGUE]);
    lab.montague.wait_state(CAPULET, "both", WAIT);
    lab.capulet.wait_state(MONTAGUE, "both", WAIT);
    lab
}

#[test]
fn a_b_c_subscribe_only_on_request_prompt_then_approve_by_cli() {
    let lab = lab();
    let (m, c) = (&lab.montague, &lab.capulet);

    // (a) Nothing leaves montague until its admin asks.
    c.assert_none_for(QUIET, |s| s.via_s2s() && s.name == "presence", "no presence before the admin asks");
    assert!(m.received().iter().all(|s| s.dir != "out"), "montague sent something unasked");
    m.cli(&["request", CAPULET]);
    let sub = c.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    assert_eq!(sub.to.as_deref(), Some(CAPULET));

    // (b) capulet does not answer before its admin decides; the request is on file and
    // the admins were told how to approve it.
    m.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "capulet must not auto-approve");
    assert!(c.pending_file(MONTAGUE).exists());
    let chat = c.wait_for("admin notified", WAIT, |s| {
        s.name == "message" && s.to.as_deref() == Some("admin@capulet.lit")
    });
    assert!(chat.body.as_deref().unwrap_or("").contains(&format!("approve {MONTAGUE}")), "{chat:?}");
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(
        console.contains(&format!("--host {CAPULET} approve {MONTAGUE}")),
        "warn line with the approve command missing:\n{console}"
    );
    assert_eq!(c.state(MONTAGUE), "none+pending-in");
    assert_eq!(m.state(CAPULET), "none+pending-out");

    // (c) approval by CLI: subscribed + reciprocal subscribe; montague answers it without a
    // second prompt (pre-approved by its own request); both reach Both.
    c.cli(&["approve", MONTAGUE]);
    let ok = m.wait_for("subscribed from capulet", WAIT, presence_from(CAPULET, "subscribed"));
    assert!(sub.id.is_some(), "requests carry an id");
    assert_eq!(ok.id, sub.id, "the approval echoes the request's id");
    m.wait_for("reciprocal subscribe from capulet", WAIT, presence_from(CAPULET, "subscribe"));
    c.wait_for("subscribed from montague", WAIT, presence_from(MONTAGUE, "subscribed"));
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_state(MONTAGUE, "both", WAIT);
    assert!(!m.pending_file(CAPULET).exists(), "montague was prompted a second time");
    assert!(!c.pending_file(MONTAGUE).exists());
    assert!(
        !m.received()
            .iter()
            .any(|s| s.name == "message" && s.body.as_deref().unwrap_or("").contains("request from")),
        "montague's admin was prompted for the reciprocal request"
    );
    // The trust check other modules use, inside the running servers.
    let out = c.shell_ok(&format!(
        ">require'core.modulemanager'.get_module('{CAPULET}','server_trust').is_trusted('{MONTAGUE}')"
    ));
    assert!(out.contains("true"), "{out}");
}

#[test]
fn d_approve_by_editing_the_pending_file() {
    let lab = requested();
    let path = lab.capulet.pending_file(MONTAGUE);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("decision = \"pending\""), "{text}");
    fs::write(&path, text.replace("decision = \"pending\"", "decision = \"approve\"")).unwrap();
    lab.montague.wait_for("subscribed after file edit", WAIT, presence_from(CAPULET, "subscribed"));
    lab.capulet.wait_state(MONTAGUE, "both", WAIT);
    let log = String::from_utf8(lab.capulet.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" file ") && l.contains("approve")), "{log}");
}

#[test]
fn e_deny_sends_unsubscribed_and_grants_nothing() {
    let lab = requested();
    lab.capulet.cli(&["deny", MONTAGUE]);
    lab.montague.wait_for("unsubscribed from capulet", WAIT, presence_from(CAPULET, "unsubscribed"));
    lab.montague.wait_state(CAPULET, "absent", WAIT);
    assert_eq!(lab.capulet.state(MONTAGUE), "absent");
    lab.montague.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "denied: no subscribed");
    assert!(!lab.capulet.pending_file(MONTAGUE).exists());
}

#[test]
fn f_revoke_drops_trust_on_both_sides() {
    let lab = buddies();
    lab.montague.cli(&["revoke", CAPULET]);
    lab.capulet.wait_for("unsubscribe from montague", WAIT, presence_from(MONTAGUE, "unsubscribe"));
    lab.capulet.wait_for("unsubscribed from montague", WAIT, presence_from(MONTAGUE, "unsubscribed"));
    lab.montague.wait_state(CAPULET, "absent", WAIT);
    lab.capulet.wait_state(MONTAGUE, "absent", WAIT);
}

#[test]
fn g_restart_keeps_roster_and_state() {
    let lab = buddies();
    lab.capulet.restart();
    assert_eq!(lab.capulet.state(MONTAGUE), "both");
    // On start capulet greets its buddy and probes it; montague answers the probe.
    assert!(!lab.montague.received().iter().any(presence_from(CAPULET, "probe")), "no probe before restart");
    lab.montague.wait_for("capulet's probe after restart", WAIT, presence_from(CAPULET, "probe"));
    assert!(!lab.capulet.received().iter().any(presence_from(MONTAGUE, "probe")), "no probe before restart");
    lab.montague.restart();
    assert_eq!(lab.montague.state(CAPULET), "both");
    lab.capulet.wait_for("montague's probe after restart", WAIT, presence_from(MONTAGUE, "probe"));
    // montague's probe was answered: capulet's availability and last-seen time are kept.
    let t0 = Instant::now();
    loop {
        let out = lab.montague.shell_ok("server_trust:list()");
        assert!(out.contains(CAPULET) && out.contains("both"), "{out}");
        if out.contains("\tavailable") && out.contains("seen 20") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "capulet never shown available: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn h_user_jid_subscribing_to_the_host_gains_nothing() {
    let lab = lab();
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
fn i_burst_from_many_domains_stops_at_the_cap_and_server_stays_responsive() {
    let senders: Vec<String> = (0..12).map(|i| format!("s{i}.lit")).collect();
    let lab = lab_with(LabOptions {
        extra_global: "server_trust_max_pending = 5\n".into(),
        montague_extra_hosts: senders.clone(),
        ..LabOptions::default()
    });
    for (i, s) in senders.iter().enumerate() {
        lab.montague.inject(&format!("<presence from='{s}' to='capulet.lit' type='subscribe' id='b{i}'/>"));
    }
    for s in &senders {
        lab.capulet.wait_for("burst subscribe", WAIT, presence_from(s, "subscribe"));
    }
    let dir = lab.capulet.store.join(CAPULET).join("pending");
    let t0 = Instant::now();
    while fs::read_dir(&dir).unwrap().count() < 5 && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 5, "exactly the cap is kept");
    let console = fs::read_to_string(&lab.capulet.console_log).unwrap();
    assert!(console.contains("already pending"), "drops must be logged:\n{console}");
    // Still responsive: the admin shell answers and a normal request still flows.
    lab.capulet.shell_ok("server_trust:pending()");
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_for("subscribe after the burst", WAIT, presence_from(MONTAGUE, "subscribe"));
    assert_eq!(lab.capulet.state(MONTAGUE), "absent", "beyond the cap: not recorded");
}

#[test]
fn j_broken_store_fails_closed_never_auto_approves() {
    let lab = lab();
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
