//! `prosodyctl shell`: `server_trust:pending()`, `approve`, `deny`, `list` and their errors.

use super::*;
use crate::support::QUIET;

#[test]
fn pending_approve_deny_and_errors() {
    let lab = lab_with_verona();
    let (m, c) = (&lab.montague, &lab.capulet);

    let (rows, summary) = shell_pending(c);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(summary, "0 pending");

    ask_both(&lab);

    // pending(): one line per request: host, peer, decision, first seen, times seen.
    let (rows, summary) = shell_pending(c);
    assert_eq!(summary, "2 pending", "{rows:?}");
    let mut peers: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    peers.sort();
    assert_eq!(peers, [MONTAGUE, VERONA]);
    for r in &rows {
        assert_eq!(r[0], CAPULET, "{r:?}");
        assert_eq!(r[2], "pending", "{r:?}");
        assert!(r[3].starts_with("first seen "), "{r:?}");
        assert_eq!(r[4], "1x", "{r:?}");
    }

    // approve(peer): subscribed (echoing the request's id) + reciprocal subscribe; Both.
    let sub = c.wait_for("montague's subscribe", WAIT, presence(MONTAGUE, CAPULET, "subscribe"));
    let out = c.shell_ok(&format!("server_trust:approve({})", lua_str(MONTAGUE)));
    assert!(out.contains(&format!("OK: approve {MONTAGUE} on {CAPULET}")), "{out}");
    let ok = m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    assert_eq!(ok.id, sub.id, "the approval echoes the request's id");
    m.wait_for("reciprocal subscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribe"));
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);
    assert!(!c.pending_file(MONTAGUE).exists());
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(
        log.lines().any(|l| l.contains(" shell ") && l.contains("approve")),
        "actor shell missing:\n{log}"
    );

    let (rows, summary) = shell_pending(c);
    assert_eq!(summary, "1 pending", "{rows:?}");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], VERONA);

    // deny(peer): unsubscribed to verona, nothing granted, request gone.
    let out = c.shell_ok(&format!("server_trust:deny({})", lua_str(VERONA)));
    assert!(out.contains(&format!("OK: deny {VERONA} on {CAPULET}")), "{out}");
    m.wait_for("unsubscribed from capulet to verona", WAIT, presence(CAPULET, VERONA, "unsubscribed"));
    c.wait_state(VERONA, "absent", WAIT);
    assert!(!c.pending_file(VERONA).exists());
    let (rows, summary) = shell_pending(c);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(summary, "0 pending");

    // list(): capulet's roster as the shell sees it.
    let out = c.shell_ok("server_trust:list()");
    assert!(out.lines().any(|l| l.starts_with(&format!("{CAPULET}\t{MONTAGUE}\tboth\ttrusted"))), "{out}");
    assert!(out.contains("OK: 1 peers"), "{out}");

    // Errors: no pending request (a stranger; a peer that is already Both), an invalid domain,
    // a host that does not serve buddies. prosodyctl shell prints "Error: ..." on stderr and
    // exits 1; nothing changes and nothing is sent.
    let roster_before = roster(c);
    let sent_before = m.received().len();
    for (cmd, args, why) in [
        ("approve", vec![STRANGER], "no pending request"),
        ("approve", vec![MONTAGUE], "no pending request"),
        ("deny", vec![STRANGER], "no pending request"),
        ("approve", vec!["alice@montague.lit"], "invalid domain"),
        ("approve", vec!["nowhere.lit", MONTAGUE], "not loaded"),
    ] {
        let out = shell_cmd(c, cmd, &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "server_trust:{cmd}{args:?} ({why}) must fail\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stderr(&out).starts_with("Error: "), "{cmd}{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains("OK:"), "{cmd}{args:?}: {}", stdout(&out));
    }
    let err = stderr(&shell_cmd(c, "approve", &[STRANGER]));
    assert!(err.to_lowercase().contains("pending"), "the error should say why: {err}");
    let err = stderr(&shell_cmd(c, "approve", &["nowhere.lit", MONTAGUE]));
    assert!(err.contains("not loaded on nowhere.lit"), "{err}");
    std::thread::sleep(QUIET);
    assert_eq!(roster(c), roster_before, "a failed shell command changed the roster");
    assert_eq!(c.state(STRANGER), "absent");
    assert!(!c.pending_file(STRANGER).exists());
    let after = m.received();
    let new: Vec<&Stanza> = after[sent_before..].iter().filter(|s| s.via_s2s()).collect();
    assert!(new.is_empty(), "failed shell commands sent stanzas: {new:#?}");
}
