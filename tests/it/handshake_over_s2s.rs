//! XEP-0267 between two real Prosody 0.12 servers over real s2s on loopback, with
//! mod_server_trust loaded on both: nothing is sent unasked, the admin is prompted, approval
//! by CLI or by editing the request file reaches Both, and a restart keeps it. Assertions are
//! on the stanzas each server actually received (recorded by the lab), the store and the CLI.

use std::fs;
use std::time::{Duration, Instant};

use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{QUIET, WAIT, buddies, requested};

#[test]
fn subscribe_only_on_request_prompt_then_approve_by_cli() {
    let lab = Lab::server_trust();
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
    assert!(chat.body.as_deref().unwrap_or("").contains("\"Pending server buddies\""), "{chat:?}");
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(
        console.contains(&format!("--host {CAPULET} approve {MONTAGUE}")),
        "warn line with the approve command missing:\n{console}"
    );
    assert!(console.contains("Server buddies on: store") && !console.contains("No admins set"), "{console}");
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
fn approve_by_editing_the_pending_file() {
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
fn restart_keeps_roster_and_state() {
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
        if out.contains("\tavailable since 20") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "capulet never shown available: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Debian's prosody.cfg.lua ships `admins = { }`. The module then says at start that requests
/// reach the log only, and a request is announced there (never approved, no chat message).
#[test]
fn without_admins_the_log_says_where_requests_go() {
    let opts = LabOptions { extra_host: "admins = { }".into(), ..LabOptions::default() };
    let lab = Lab::with_server_trust(opts);
    let (m, c) = (&lab.montague, &lab.capulet);
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(console.contains("Server buddies on: store"), "no start line:\n{console}");
    assert!(console.contains("No admins set for capulet.lit"), "no warning about admins:\n{console}");

    m.cli(&["request", CAPULET]);
    c.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    c.assert_none_for(QUIET, |s| s.name == "message", "a chat message with no admins to send it to");
    m.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "capulet must not auto-approve");
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(
        console.contains(&format!("--host {CAPULET} approve {MONTAGUE}")),
        "no prompt in the log:\n{console}"
    );
}

/// The host advertises XEP-0267 in disco#info, with the feature Metronome's module uses.
#[test]
fn the_host_advertises_server_presence_in_disco() {
    let lab = Lab::server_trust();
    let m = &lab.montague;
    m.inject(&format!(
        "<iq type='get' from='{MONTAGUE}' to='{CAPULET}' id='disco1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let reply = m.wait_for("disco#info result", WAIT, |s| {
        s.name == "iq" && s.id.as_deref() == Some("disco1") && s.via_s2s()
    });
    assert!(reply.is_type("result") && reply.xml.contains("urn:xmpp:server-presence"), "{}", reply.xml);
}
