//! XEP-0267 between two real Prosody 0.12 servers over real s2s on loopback, with
//! mod_server_trust loaded on both. Assertions are on the stanzas each server actually
//! received (recorded by tests/prosody/mod_lab.lua), the store files and the CLI.
//!
//! Needs `prosody` (Debian 0.12) and the Lua bridge built (`cargo build --workspace`);
//! the README test command does both.

mod support;

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::prosody::{CAPULET, Lab, LabOptions, MONTAGUE, Server, Stanza, native_lib_path};

const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for a stanza that must NOT come. Prosody answers in ~0.2 s over an
/// established stream and the module polls every 0.1 s, so 1.5 s is a wide margin.
const QUIET: Duration = Duration::from_millis(1500);

fn lab() -> Lab {
    lab_with(LabOptions::default())
}

fn lab_with(opts: LabOptions) -> Lab {
    assert!(
        native_lib_path().exists(),
        "{} is missing: run `cargo build --workspace` first (the README test command does)",
        native_lib_path().display()
    );
    Lab::start(LabOptions { server_trust: true, ..opts })
}

/// Runs the admin CLI against `srv`'s store.
fn cli(srv: &Server, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_server-trust"))
        .arg("--store")
        .arg(&srv.store)
        .arg("--host")
        .arg(&srv.host)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "server-trust {args:?} on {} failed: {}{}",
        srv.host,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `peer`'s state in `srv`'s roster according to the CLI ("absent" when not listed).
fn state(srv: &Server, peer: &str) -> String {
    let out = cli(srv, &["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["peer"] == peer)
        .map_or("absent".into(), |e| e["state"].as_str().unwrap().to_string())
}

fn wait_state(srv: &Server, peer: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let now = state(srv, peer);
        if now == want {
            return;
        }
        assert!(
            t0.elapsed() < WAIT,
            "{}: {peer} stayed {now}, expected {want}\n{}",
            srv.host,
            srv.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A presence of `typ` ("available" = no type) from `from` to `srv`'s host JID, over s2s.
fn presence_from<'a>(from: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    move |s: &Stanza| {
        s.via_s2s()
            && s.name == "presence"
            && s.from.as_deref() == Some(from)
            && match typ {
                "available" => s.typ.is_none(),
                t => s.is_type(t),
            }
    }
}

fn pending_file(srv: &Server, peer: &str) -> std::path::PathBuf {
    srv.store.join(&srv.host).join("pending").join(format!("{peer}.toml"))
}

/// montague asks, capulet's admin is prompted; returns the lab at that point.
fn requested() -> Lab {
    let lab = lab();
    cli(&lab.montague, &["request", CAPULET]);
    lab.capulet.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    wait_state(&lab.capulet, MONTAGUE, "none+pending-in");
    lab
}

/// Both servers reach Both.
fn buddies() -> Lab {
    let lab = requested();
    cli(&lab.capulet, &["approve", MONTAGUE]);
    wait_state(&lab.montague, CAPULET, "both");
    wait_state(&lab.capulet, MONTAGUE, "both");
    lab
}

#[test]
fn a_b_c_subscribe_only_on_request_prompt_then_approve_by_cli() {
    let lab = lab();
    let (m, c) = (&lab.montague, &lab.capulet);

    // (a) Nothing leaves montague until its admin asks.
    c.assert_none_for(QUIET, |s| s.via_s2s() && s.name == "presence", "no presence before the admin asks");
    assert!(m.received().iter().all(|s| s.dir != "out"), "montague sent something unasked");
    cli(m, &["request", CAPULET]);
    let sub = c.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    assert_eq!(sub.to.as_deref(), Some(CAPULET));

    // (b) capulet does not answer before its admin decides; the request is on file and
    // the admins were told how to approve it.
    m.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "capulet must not auto-approve");
    assert!(pending_file(c, MONTAGUE).exists());
    let chat = c.wait_for("admin notified", WAIT, |s| {
        s.name == "message" && s.to.as_deref() == Some("admin@capulet.lit")
    });
    assert!(chat.body.as_deref().unwrap_or("").contains(&format!("approve {MONTAGUE}")), "{chat:?}");
    let console = fs::read_to_string(&c.console_log).unwrap();
    assert!(
        console.contains(&format!("--host {CAPULET} approve {MONTAGUE}")),
        "warn line with the approve command missing:\n{console}"
    );
    assert_eq!(state(c, MONTAGUE), "none+pending-in");
    assert_eq!(state(m, CAPULET), "none+pending-out");

    // (c) approval by CLI: subscribed + reciprocal subscribe; montague answers it without a
    // second prompt (pre-approved by its own request); both reach Both.
    cli(c, &["approve", MONTAGUE]);
    let ok = m.wait_for("subscribed from capulet", WAIT, presence_from(CAPULET, "subscribed"));
    assert!(sub.id.is_some(), "requests carry an id");
    assert_eq!(ok.id, sub.id, "the approval echoes the request's id");
    m.wait_for("reciprocal subscribe from capulet", WAIT, presence_from(CAPULET, "subscribe"));
    c.wait_for("subscribed from montague", WAIT, presence_from(MONTAGUE, "subscribed"));
    wait_state(m, CAPULET, "both");
    wait_state(c, MONTAGUE, "both");
    assert!(!pending_file(m, CAPULET).exists(), "montague was prompted a second time");
    assert!(!pending_file(c, MONTAGUE).exists());
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
    let path = pending_file(&lab.capulet, MONTAGUE);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("decision = \"pending\""), "{text}");
    fs::write(&path, text.replace("decision = \"pending\"", "decision = \"approve\"")).unwrap();
    lab.montague.wait_for("subscribed after file edit", WAIT, presence_from(CAPULET, "subscribed"));
    wait_state(&lab.capulet, MONTAGUE, "both");
    let log = String::from_utf8(cli(&lab.capulet, &["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" file ") && l.contains("approve")), "{log}");
}

#[test]
fn e_deny_sends_unsubscribed_and_grants_nothing() {
    let lab = requested();
    cli(&lab.capulet, &["deny", MONTAGUE]);
    lab.montague.wait_for("unsubscribed from capulet", WAIT, presence_from(CAPULET, "unsubscribed"));
    wait_state(&lab.montague, CAPULET, "absent");
    assert_eq!(state(&lab.capulet, MONTAGUE), "absent");
    lab.montague.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "denied: no subscribed");
    assert!(!pending_file(&lab.capulet, MONTAGUE).exists());
}

#[test]
fn f_revoke_drops_trust_on_both_sides() {
    let lab = buddies();
    cli(&lab.montague, &["revoke", CAPULET]);
    lab.capulet.wait_for("unsubscribe from montague", WAIT, presence_from(MONTAGUE, "unsubscribe"));
    lab.capulet.wait_for("unsubscribed from montague", WAIT, presence_from(MONTAGUE, "unsubscribed"));
    wait_state(&lab.montague, CAPULET, "absent");
    wait_state(&lab.capulet, MONTAGUE, "absent");
}

#[test]
fn g_restart_keeps_roster_and_state() {
    let lab = buddies();
    lab.capulet.restart();
    assert_eq!(state(&lab.capulet, MONTAGUE), "both");
    // On start capulet greets its buddy and probes it; montague answers the probe.
    assert!(!lab.montague.received().iter().any(presence_from(CAPULET, "probe")), "no probe before restart");
    lab.montague.wait_for("capulet's probe after restart", WAIT, presence_from(CAPULET, "probe"));
    assert!(!lab.capulet.received().iter().any(presence_from(MONTAGUE, "probe")), "no probe before restart");
    lab.montague.restart();
    assert_eq!(state(&lab.montague, CAPULET), "both");
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
    assert_eq!(state(&lab.capulet, "montague.lit"), "absent");
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
    cli(&lab.montague, &["request", CAPULET]);
    lab.capulet.wait_for("subscribe after the burst", WAIT, presence_from(MONTAGUE, "subscribe"));
    assert_eq!(state(&lab.capulet, MONTAGUE), "absent", "beyond the cap: not recorded");
}
