//! `prosodyctl shell`: `server_trust:pending()`, `approve`, `deny`, `list` and their errors;
//! every act of the section in the forms the README shows (Lua on 0.12 and 13, words on 13).

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

/// How an act is typed at `prosodyctl shell`, as the README shows it.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// One line of Lua, `server_trust:approve("montague.lit")`: Prosody 0.12 and 13.
    Lua,
    /// Words, `server_trust approve montague.lit`: Prosody 13 only.
    Words,
}

/// `prosodyctl shell` running `act` with `args` in `form`; panics unless it succeeded, returns
/// what it printed.
fn act(srv: &Server, form: Form, act: &str, args: &[&str]) -> String {
    let out = match form {
        Form::Lua => shell_cmd(srv, act, args),
        Form::Words => {
            let mut words = vec!["shell", "server_trust", act];
            words.extend_from_slice(args);
            srv.prosodyctl(&words)
        }
    };
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{form:?} {act}{args:?} failed ({}): {text}", out.status);
    text
}

const MANTUA: &str = "mantua.lit";
const PADUA_A: &str = "a.padua.lit";
const PADUA_B: &str = "b.padua.lit";

/// Every act of the shell section, each checked where it shows (the peer's s2s, the store):
/// pending, dropped, approve, list, revoke, request, deny, deny_older, deny_site.
fn every_act_through_the_shell(v: Prosody, form: Form) {
    let Some(prefixes) = prefixes(v) else { return };
    let askers = [VERONA, MANTUA, PADUA_A, PADUA_B];
    let lab = Lab::with_server_trust(LabOptions {
        montague_extra_hosts: askers.iter().map(|h| h.to_string()).collect(),
        prefixes,
        ..LabOptions::default()
    });
    let (m, c) = (&lab.montague, &lab.capulet);
    m.cli(&["request", CAPULET]);
    for (i, h) in askers.iter().enumerate() {
        m.inject(&format!("<presence from='{h}' to='{CAPULET}' type='subscribe' id='a{i}'/>"));
    }
    for h in askers.iter().chain([&MONTAGUE]) {
        c.wait_state(h, "none+pending-in", WAIT);
    }
    super::pending_cap::first_seen_8_days_ago(c, MANTUA);

    // pending: one line per request (tab separated), then the count.
    let out = act(c, form, "pending", &[]);
    for h in askers.iter().chain([&MONTAGUE]) {
        assert!(out.lines().any(|l| l.starts_with(&format!("{CAPULET}\t{h}\tpending\t"))), "{h}: {out}");
    }
    assert!(out.contains("5 pending"), "{out}");
    let out = act(c, form, "dropped", &[]);
    assert!(out.contains("none dropped at the cap"), "{out}");

    // approve: subscribed + reciprocal subscribe; both.
    let out = act(c, form, "approve", &[MONTAGUE]);
    assert!(out.contains(&format!("approve {MONTAGUE} on {CAPULET}")), "{out}");
    m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);

    // list: the roster.
    let out = act(c, form, "list", &[]);
    assert!(out.lines().any(|l| l.starts_with(&format!("{CAPULET}\t{MONTAGUE}\tboth\ttrusted"))), "{out}");
    assert!(out.contains("5 peers"), "the roster holds the pending peers too: {out}");

    // renew: the trust in montague now ends in 30 days; list shows until when.
    let out = act(c, form, "renew", &[MONTAGUE, "30d"]);
    assert!(out.contains(&format!("renew {MONTAGUE} 30d on {CAPULET}")), "{out}");
    let out = act(c, form, "list", &[]);
    let line = out.lines().find(|l| l.starts_with(&format!("{CAPULET}\t{MONTAGUE}\t"))).unwrap_or("");
    assert!(line.contains("\tuntil 20"), "{out}");
    assert!(!out.contains("\tnil"), "a peer with no end shows none: {out}");

    // revoke: unsubscribe + unsubscribed; gone on both sides.
    let out = act(c, form, "revoke", &[MONTAGUE]);
    assert!(out.contains(&format!("revoke {MONTAGUE} on {CAPULET}")), "{out}");
    m.wait_for("unsubscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "unsubscribe"));
    m.wait_for("unsubscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "unsubscribed"));
    c.wait_state(MONTAGUE, "absent", WAIT);
    m.wait_state(CAPULET, "absent", WAIT);

    // request: a new subscribe (the first came with the approval); pending-out.
    let before = count(m, presence(CAPULET, MONTAGUE, "subscribe"));
    let out = act(c, form, "request", &[MONTAGUE]);
    assert!(out.contains(&format!("request {MONTAGUE} on {CAPULET}")), "{out}");
    c.wait_state(MONTAGUE, "none+pending-out", WAIT);
    m.wait_state(CAPULET, "none+pending-in", WAIT);
    assert_eq!(count(m, presence(CAPULET, MONTAGUE, "subscribe")), before + 1, "one more subscribe");

    // deny: unsubscribed to verona, its request gone.
    let out = act(c, form, "deny", &[VERONA]);
    assert!(out.contains(&format!("deny {VERONA} on {CAPULET}")), "{out}");
    m.wait_for("unsubscribed to verona", WAIT, presence(CAPULET, VERONA, "unsubscribed"));
    c.wait_state(VERONA, "absent", WAIT);

    // deny_older 7d: mantua only (first seen 8 days ago).
    let out = act(c, form, "deny_older", &["7d"]);
    assert!(
        out.contains(&format!("deny {MANTUA}")) && out.contains(&format!("1 denied on {CAPULET}")),
        "{out}"
    );
    m.wait_for("unsubscribed to mantua", WAIT, presence(CAPULET, MANTUA, "unsubscribed"));
    c.wait_state(MANTUA, "absent", WAIT);
    assert_eq!(c.state(PADUA_A), "none+pending-in");

    // deny_site padua.lit: both of its subdomains.
    let out = act(c, form, "deny_site", &["padua.lit"]);
    assert!(out.contains("2 denied on"), "{out}");
    for h in [PADUA_A, PADUA_B] {
        assert!(out.contains(&format!("deny {h}")), "{out}");
        m.wait_for("unsubscribed to padua", WAIT, presence(CAPULET, h, "unsubscribed"));
        c.wait_state(h, "absent", WAIT);
    }
    let out = act(c, form, "pending", &[]);
    assert!(out.contains("0 pending"), "{out}");

    // Every decision recorded with the shell as the actor; nothing was ever approved but montague.
    let log = String::from_utf8(c.cli(&["log"]).stdout).unwrap();
    for (peer, what) in [
        (MONTAGUE, "approve"),
        (MONTAGUE, "revoke"),
        (MONTAGUE, "request"),
        (VERONA, "deny"),
        (MANTUA, "deny"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(" shell ") && l.contains(peer) && l.contains(what)),
            "{what} {peer} by shell missing:\n{log}"
        );
    }
    m.assert_none_for(
        QUIET,
        |s| s.via_s2s() && s.is_type("subscribed") && s.to.as_deref() != Some(MONTAGUE),
        "only montague was approved",
    );
}

#[test]
fn every_act_through_the_shell_as_lua() {
    every_act_through_the_shell(Prosody::Default, Form::Lua);
}

#[test]
fn every_act_through_the_shell_as_lua_on_prosody_13() {
    every_act_through_the_shell(Prosody::V13, Form::Lua);
}

/// Prosody 13's `server_trust pending`, `server_trust approve montague.lit` ... (the help
/// metatable of the section makes 13 dispatch them).
#[test]
fn every_act_through_the_shell_in_words_on_prosody_13() {
    every_act_through_the_shell(Prosody::V13, Form::Words);
}
