//! Trust for a time between two real Prosody servers: `approve --for` shows its end in
//! `list`, `show` and their JSON; the shell's `renew` moves it and the reminder is audited; the
//! end survives a restart; and when it comes, the peer receives `unsubscribed` and
//! `unsubscribe` as after a revoke, trust is gone and the audit log says why.
//!
//! Time is not faked on a real server: the end is moved instead, by the documented admin act
//! `renew PEER --until TIME`, to a time already past (the engine's own clock is tested with
//! a moved clock in `engine::tests_expiry`).

use std::time::{Duration, SystemTime};

use server_trust_lab::{CAPULET, MONTAGUE, TrustAdmin, lua::lua_str, presence_from};

use crate::support::{WAIT, requested};

fn end_of(v: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("no end: {v}"))).unwrap()
}

fn listed(lab: &server_trust_lab::Lab) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_slice(&lab.capulet.cli(&["--json", "list"]).stdout).unwrap();
    list.as_array().unwrap().iter().find(|e| e["peer"] == MONTAGUE).cloned().unwrap_or_default()
}

#[test]
fn trust_for_a_time_ends_as_a_revoke_on_the_wire_and_survives_a_restart() {
    let lab = requested();
    let (m, c) = (&lab.montague, &lab.capulet);
    let approved_at = SystemTime::now();
    c.cli(&["approve", MONTAGUE, "--for", "90d"]);
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_state(MONTAGUE, "both", WAIT);

    // The end is 90 days after the approval, in list, show and their JSON, and the shell.
    let entry = listed(&lab);
    assert_eq!(entry["trusted"], true, "{entry}");
    let end = end_of(&entry["expires_at"]);
    let ninety = Duration::from_secs(90 * 86_400);
    let after = end.duration_since(approved_at).unwrap();
    assert!(after >= ninety - Duration::from_secs(1) && after <= ninety + WAIT, "{after:?}");
    let at = entry["expires_at"].as_str().unwrap().to_string();
    assert!(c.cli_text(&["list"]).contains(&format!("until {at}")), "list shows no end");
    assert!(c.cli_text(&["show", MONTAGUE]).contains(&format!("expires_at = \"{at}\"")));
    let show: serde_json::Value =
        serde_json::from_slice(&c.cli(&["--json", "show", MONTAGUE]).stdout).unwrap();
    assert_eq!(show["entry"]["expires_at"], at.as_str(), "{show}");
    assert!(c.shell_ok("server_trust:list()").contains(&format!("until {at}")));

    // The shell moves the end within the reminder's lead (7 days): the server reminds its
    // admins once, audited by the engine.
    let soon =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3 * 86_400)).to_string();
    let out = c.shell_ok(&format!("server_trust:renew({}, {})", lua_str(MONTAGUE), lua_str(&soon)));
    assert!(out.contains(&format!("OK: renew {MONTAGUE} {soon} on {CAPULET}")), "{out}");
    assert_eq!(listed(&lab)["expires_at"], soon.as_str());
    let reminded = || {
        let log = c.cli_text(&["log", "--peer", MONTAGUE]);
        log.lines()
            .any(|l| l.contains(" engine ") && l.contains(&format!("expiry reminder: trust ends at {soon}")))
    };
    let t0 = std::time::Instant::now();
    while !reminded() {
        assert!(t0.elapsed() < WAIT, "no reminder audited:\n{}", c.cli_text(&["log", "--peer", MONTAGUE]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.cli_text(&["log", "--peer", MONTAGUE]).contains(" shell   renew: trusted until "));

    // A restart keeps the end.
    c.restart();
    assert_eq!(listed(&lab)["expires_at"], soon.as_str());
    c.wait_state(MONTAGUE, "both", WAIT);
    assert!(m.received().iter().all(|s| !presence_from(CAPULET, "unsubscribed")(s)), "not ended yet");

    // While capulet is stopped, its admin ends the trust at a time already past; at start the
    // server withdraws it as a revoke does.
    c.stop();
    c.cli(&["renew", MONTAGUE, "--until", "2026-01-01T00:00:00Z"]);
    assert_eq!(listed(&lab)["expires_at"], "2026-01-01T00:00:00Z");
    assert_eq!(listed(&lab)["trusted"], true, "only the server ends trust");
    c.start();
    m.wait_for("unsubscribe from capulet", WAIT, presence_from(CAPULET, "unsubscribe"));
    m.wait_for("unsubscribed from capulet", WAIT, presence_from(CAPULET, "unsubscribed"));
    c.wait_state(MONTAGUE, "absent", WAIT);
    m.wait_state(CAPULET, "absent", WAIT);
    let log = c.cli_text(&["log", "--peer", MONTAGUE]);
    let ended: Vec<&str> = log.lines().filter(|l| l.contains(" engine ")).collect();
    assert!(ended.iter().any(|l| l.contains("trust expired (trusted until 2026-01-01T00:00:00Z)")), "{log}");
    assert!(ended.iter().any(|l| l.contains("revoke: unsubscribed")), "{log}");
    assert!(ended.iter().any(|l| l.contains("revoke: unsubscribe ")), "{log}");
}

/// `server_trust:approve_for(peer, "30d")` in Prosody's shell: trust with an end, audited
/// with the shell as the actor; a time that is not one approves nothing.
#[test]
fn the_shell_approves_for_a_time() {
    let lab = requested();
    let (m, c) = (&lab.montague, &lab.capulet);
    let out =
        c.shell(&format!("server_trust:approve_for({}, {})", lua_str(MONTAGUE), lua_str("thirty days")));
    assert!(!out.status.success(), "{out:?}");
    std::thread::sleep(crate::support::QUIET);
    assert!(m.received().iter().all(|s| !presence_from(CAPULET, "subscribed")(s)), "nothing approved");
    assert_eq!(c.state(MONTAGUE), "none+pending-in");
    let out = c.shell_ok(&format!("server_trust:approve_for({}, {})", lua_str(MONTAGUE), lua_str("30d")));
    assert!(out.contains(&format!("OK: approve_for {MONTAGUE} 30d on {CAPULET}")), "{out}");
    m.wait_for("subscribed from capulet", WAIT, presence_from(CAPULET, "subscribed"));
    c.wait_state(MONTAGUE, "both", WAIT);
    let end = end_of(&listed(&lab)["expires_at"]);
    let after = end.duration_since(SystemTime::now()).unwrap();
    assert!(after > Duration::from_secs(30 * 86_400) - WAIT, "{after:?}");
    let log = c.cli_text(&["log", "--peer", MONTAGUE]);
    assert!(
        log.lines().any(|l| l.contains(" shell ") && l.contains("approve for a time: trusted until ")),
        "{log}"
    );
}
