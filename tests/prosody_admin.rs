//! The admin surfaces of mod_server_trust inside two real Prosody 0.12 servers over s2s:
//! the `prosodyctl shell` commands, the XEP-0050 ad-hoc commands (sent as if by a c2s client,
//! through `lab:adhoc` in tests/prosody/mod_lab.lua) and the API other modules use
//! (`is_trusted`, `peer-is-subscribed`, the `server-trust/added` / `removed` events).
//!
//! Needs `prosody` (Debian 0.12) and the Lua bridge built (`cargo build --workspace`).

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prosody::{CAPULET, Lab, LabOptions, MONTAGUE, Server, Stanza, presence_from};

const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for a stanza that must NOT come (Prosody answers in ~0.2 s, the module
/// polls every 0.1 s in the lab).
const QUIET: Duration = Duration::from_millis(1500);
/// A third server domain, served by the montague process WITHOUT mod_server_trust: it sends a
/// raw `subscribe` to capulet.lit so capulet has two pending requests.
const VERONA: &str = "verona.lit";
/// Never seen by anyone.
const STRANGER: &str = "tybalt.lit";
const ADMIN: &str = "admin@capulet.lit";
const EVE: &str = "eve@capulet.lit";
const NODE_REQUEST: &str = "urn:xmpp:server-trust#request";
const NODE_PENDING: &str = "urn:xmpp:server-trust#pending";
const NODE_REVOKE: &str = "urn:xmpp:server-trust#revoke";

fn lab_with(opts: LabOptions) -> Lab {
    Lab::with_server_trust(opts)
}

fn lab() -> Lab {
    lab_with(LabOptions::default())
}

fn lab_with_verona() -> Lab {
    lab_with(LabOptions { montague_extra_hosts: vec![VERONA.into()], ..LabOptions::default() })
}

fn roster(srv: &Server) -> Value {
    serde_json::from_slice(&srv.cli(&["--json", "list"]).stdout).unwrap()
}

/// A presence of `typ` ("available" = no type) from `from` to `to`, over s2s.
fn presence<'a>(from: &'a str, to: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    move |s: &Stanza| presence_from(from, typ)(s) && s.to.as_deref() == Some(to)
}

/// A `server-trust/added` etc. event recorded by mod_lab on `srv`'s host, for `peer`.
fn event<'a>(name: &'a str, peer: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    move |s: &Stanza| {
        s.dir == "event" && s.name == "event" && s.is_type(name) && s.from.as_deref() == Some(peer)
    }
}

fn count(srv: &Server, pred: impl Fn(&Stanza) -> bool) -> usize {
    srv.received().iter().filter(|s| pred(s)).count()
}

/// A Lua string literal.
fn lua(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `server_trust:<cmd>(args)` in capulet's/montague's admin shell (without checking the result).
fn shell_cmd(srv: &Server, cmd: &str, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| lua(a)).collect();
    srv.shell(&format!("server_trust:{cmd}({})", args.join(", ")))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `server_trust:pending()`: the printed lines (tab separated) and the final "OK: n pending".
fn shell_pending(srv: &Server) -> (Vec<Vec<String>>, String) {
    let out = srv.shell_ok("server_trust:pending()");
    let mut rows = Vec::new();
    let mut summary = String::new();
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("OK: ") {
            summary = s.to_string();
        } else if line.contains('\t') {
            rows.push(line.split('\t').map(str::to_owned).collect());
        }
    }
    (rows, summary)
}

/// An ad-hoc command from `from` (a JID at capulet) to capulet.lit, run inside Prosody as if a
/// c2s session had sent it. Returns mod_lab's JSON summary of the reply (see mod_lab.lua).
fn adhoc(
    srv: &Server,
    from: &str,
    node: &str,
    action: Option<&str>,
    fields: &[(&str, &str)],
    sessionid: Option<&str>,
) -> Value {
    let opt = |o: Option<&str>| o.map_or("nil".to_string(), lua);
    let fields = if fields.is_empty() {
        "nil".to_string()
    } else {
        let kv: Vec<String> = fields.iter().map(|(k, v)| format!("[{}] = {}", lua(k), lua(v))).collect();
        format!("{{ {} }}", kv.join(", "))
    };
    let line = format!(
        "lab:adhoc({}, {}, {}, {}, {fields}, {})",
        lua(&srv.host),
        lua(from),
        lua(node),
        opt(action),
        opt(sessionid)
    );
    let out = srv.shell_ok(&line);
    let json = out
        .lines()
        .find_map(|l| l.strip_prefix("OK: "))
        .unwrap_or_else(|| panic!("no OK line from {line}: {out}"));
    let v: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON ({e}) from {line}: {json}"));
    assert_eq!(v["replies"], 1, "exactly one reply expected: {v}");
    v
}

/// A JSON list from mod_lab (util.json writes an empty Lua table as `{}` or `[]`).
fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn strs(v: &Value) -> Vec<String> {
    list(v).iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
}

fn notes(v: &Value) -> String {
    list(&v["notes"])
        .iter()
        .map(|n| format!("{}: {}", n["type"].as_str().unwrap_or(""), n["text"].as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A raw Lua line in `srv`'s admin shell; returns what follows "Result: ".
fn lua_result(srv: &Server, code: &str) -> String {
    let out = srv.shell_ok(&format!(">{code}"));
    out.lines()
        .find_map(|l| l.strip_prefix("Result: "))
        .unwrap_or_else(|| panic!("no Result line for {code}: {out}"))
        .trim()
        .to_string()
}

fn is_trusted(srv: &Server, peer: &str, scope: Option<&str>) -> String {
    let scope = scope.map_or(String::new(), |s| format!(", {}", lua(s)));
    lua_result(
        srv,
        &format!(
            "return require'core.modulemanager'.get_module({}, 'server_trust').is_trusted({}{scope})",
            lua(&srv.host),
            lua(peer)
        ),
    )
}

fn peer_is_subscribed(srv: &Server, peer: &str) -> String {
    lua_result(
        srv,
        &format!(
            "return prosody.hosts[{}].events.fire_event('peer-is-subscribed', {})",
            lua(&srv.host),
            lua(peer)
        ),
    )
}

/// montague (via CLI) and verona (raw presence) both ask capulet; capulet has two pending.
fn two_pending() -> Lab {
    let lab = lab_with_verona();
    ask_both(&lab);
    lab
}

fn ask_both(lab: &Lab) {
    let (m, c) = (&lab.montague, &lab.capulet);
    m.cli(&["request", CAPULET]);
    m.inject(&format!("<presence from='{VERONA}' to='{CAPULET}' type='subscribe' id='v1'/>"));
    c.wait_for("subscribe from montague", WAIT, presence(MONTAGUE, CAPULET, "subscribe"));
    c.wait_for("subscribe from verona", WAIT, presence(VERONA, CAPULET, "subscribe"));
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    c.wait_state(VERONA, "none+pending-in", WAIT);
}

#[test]
fn shell_pending_approve_deny_and_errors() {
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
    let out = c.shell_ok(&format!("server_trust:approve({})", lua(MONTAGUE)));
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
    let out = c.shell_ok(&format!("server_trust:deny({})", lua(VERONA)));
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

#[test]
fn adhoc_pending_form_approve_later_and_forbidden() {
    let lab = two_pending();
    let (m, c) = (&lab.montague, &lab.capulet);

    // A user who is not an admin: forbidden, for every node, and nothing changes.
    for node in [NODE_PENDING, NODE_REQUEST, NODE_REVOKE] {
        let r = adhoc(c, EVE, node, None, &[], None);
        assert_eq!(r["type"], "error", "{node}: {r}");
        assert_eq!(r["error"], "forbidden", "{node}: {r}");
        assert_eq!(r["error_type"], "auth", "{node}: {r}");
        assert_eq!(r["status"], "canceled", "{node}: {r}");
    }
    // ... even with a forged session and a filled-in form.
    let r = adhoc(c, EVE, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some("forged"));
    assert_eq!(r["error"], "forbidden", "{r}");
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribed"), "eve must not approve");
    assert_eq!(c.state(MONTAGUE), "none+pending-in");
    assert_eq!(c.state(VERONA), "none+pending-in");

    // The admin opens "Pending server buddies": a form with one list-single per pending
    // peer, no default value, choices approve / deny / later.
    let r = adhoc(c, ADMIN, NODE_PENDING, None, &[], None);
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(r["node"], NODE_PENDING);
    assert_eq!(strs(&r["actions"]), ["complete"], "{r}");
    assert_eq!(r["form_type"], "form", "{r}");
    let sessionid = r["sessionid"].as_str().filter(|s| !s.is_empty()).expect("sessionid").to_string();
    let fields = list(&r["fields"]);
    let form_type: Vec<&Value> = fields.iter().filter(|f| f["var"] == "FORM_TYPE").collect();
    assert_eq!(form_type.len(), 1, "{r}");
    assert_eq!(form_type[0]["type"], "hidden");
    let choices: Vec<&Value> = fields.iter().filter(|f| f["var"] != "FORM_TYPE").collect();
    let mut vars: Vec<&str> = choices.iter().map(|f| f["var"].as_str().unwrap()).collect();
    vars.sort();
    assert_eq!(vars, [MONTAGUE, VERONA], "{r}");
    for f in &choices {
        assert_eq!(f["type"], "list-single", "{f}");
        assert!(strs(&f["values"]).is_empty(), "no default allowed: {f}");
        assert_eq!(strs(&f["options"]), ["approve", "deny", "later"], "{f}");
    }
    let xml = r["xml"].as_str().unwrap();
    for peer in [MONTAGUE, VERONA] {
        let at = xml.find(&format!("var='{peer}'")).unwrap_or_else(|| panic!("{peer} not in {xml}"));
        let field = &xml[at..at + xml[at..].find("</field>").unwrap()];
        // the only <value/>s are those of the three <option/>s
        assert_eq!(field.matches("<value>").count(), 3, "a default <value/>: {field}");
    }
    // Opening the form decides nothing.
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribed"), "the form alone approves nothing");

    // Submit: approve montague, decide verona later.
    let r = adhoc(
        c,
        ADMIN,
        NODE_PENDING,
        Some("complete"),
        &[(MONTAGUE, "approve"), (VERONA, "later")],
        Some(&sessionid),
    );
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["sessionid"], sessionid.as_str());
    let n = notes(&r);
    assert!(n.contains(&format!("{MONTAGUE}: approve")), "{n}");
    assert!(!n.contains(VERONA), "verona was left for later: {n}");
    m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    m.wait_for("reciprocal subscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribe"));
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);
    assert_eq!(c.state(VERONA), "none+pending-in", "later means later");
    assert!(c.pending_file(VERONA).exists());
    m.assert_none_for(QUIET, |s| s.via_s2s() && s.to.as_deref() == Some(VERONA), "nothing to verona yet");
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(
        log.lines().any(|l| l.contains(" adhoc ") && l.contains("approve")),
        "actor adhoc missing:\n{log}"
    );

    // The session is over: replaying it starts afresh (a new form) and decides nothing.
    let r = adhoc(c, ADMIN, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let vars: Vec<String> = list(&r["fields"])
        .iter()
        .filter(|f| f["var"] != "FORM_TYPE")
        .map(|f| f["var"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(vars, [VERONA], "{r}");

    // Now deny verona in that second session; then nothing is pending.
    let sid = r["sessionid"].as_str().unwrap().to_string();
    let r = adhoc(c, ADMIN, NODE_PENDING, Some("complete"), &[(VERONA, "deny")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains(&format!("{VERONA}: deny")), "{r}");
    m.wait_for("unsubscribed to verona", WAIT, presence(CAPULET, VERONA, "unsubscribed"));
    c.wait_state(VERONA, "absent", WAIT);
    let r = adhoc(c, ADMIN, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains("No pending requests"), "{r}");

    // Cancel is honoured.
    let r = adhoc(c, ADMIN, NODE_REQUEST, None, &[], None);
    let sid = r["sessionid"].as_str().unwrap().to_string();
    let r = adhoc(c, ADMIN, NODE_REQUEST, Some("cancel"), &[], Some(&sid));
    assert_eq!(r["status"], "canceled", "{r}");
}

#[test]
fn adhoc_request_and_revoke_fire_events() {
    let lab = lab();
    let (m, c) = (&lab.montague, &lab.capulet);

    // "Request a server buddy": a form with one required text-single "peer".
    let r = adhoc(c, ADMIN, NODE_REQUEST, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let fields = list(&r["fields"]);
    let peer = fields.iter().find(|f| f["var"] == "peer").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(peer["type"], "text-single");
    assert_eq!(peer["required"], true);
    let sid = r["sessionid"].as_str().unwrap().to_string();
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribe"), "the form alone sends nothing");

    // An invalid domain: completed with an error note, nothing sent.
    let r = adhoc(c, ADMIN, NODE_REQUEST, Some("complete"), &[("peer", "alice@montague.lit")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(list(&r["notes"]).iter().any(|n| n["type"] == "error"), "{r}");

    let r = adhoc(c, ADMIN, NODE_REQUEST, None, &[], None);
    let sid = r["sessionid"].as_str().unwrap().to_string();
    let r = adhoc(c, ADMIN, NODE_REQUEST, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains(&format!("request {MONTAGUE}: done")), "{r}");
    let sub = m.wait_for("subscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribe"));
    assert!(sub.id.is_some());
    m.wait_state(CAPULET, "none+pending-in", WAIT);
    c.wait_state(MONTAGUE, "none+pending-out", WAIT);
    assert_eq!(count(m, presence(CAPULET, MONTAGUE, "subscribe")), 1, "exactly one subscribe");

    // No trust yet, no events yet.
    assert_eq!(count(c, |s| s.dir == "event"), 0);
    assert_eq!(count(m, |s| s.dir == "event"), 0);

    // montague approves (CLI); its reciprocal subscribe is pre-approved by capulet's request.
    m.cli(&["approve", CAPULET]);
    c.wait_for("subscribed from montague", WAIT, presence(MONTAGUE, CAPULET, "subscribed"));
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_state(MONTAGUE, "both", WAIT);
    let added_m = m.wait_for("server-trust/added on montague", WAIT, event("server-trust/added", CAPULET));
    assert_eq!(added_m.host, MONTAGUE);
    assert_eq!(added_m.to.as_deref(), Some(MONTAGUE), "event.host");
    let added_c = c.wait_for("server-trust/added on capulet", WAIT, event("server-trust/added", MONTAGUE));
    assert_eq!(added_c.to.as_deref(), Some(CAPULET), "event.host");
    m.wait_for(
        "Metronome's peer-subscription-completed",
        WAIT,
        event("peer-subscription-completed", CAPULET),
    );
    c.wait_for(
        "Metronome's peer-subscription-completed",
        WAIT,
        event("peer-subscription-completed", MONTAGUE),
    );
    c.assert_none_for(QUIET, event("server-trust/removed", MONTAGUE), "nothing removed");
    assert_eq!(count(c, event("server-trust/added", MONTAGUE)), 1, "added fires once");
    assert_eq!(count(m, event("server-trust/added", CAPULET)), 1, "added fires once");
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "true");

    // "Revoke a server buddy" from capulet's admin: unsubscribe + unsubscribed, both sides
    // drop trust, server-trust/removed fires on both.
    let r = adhoc(c, ADMIN, NODE_REVOKE, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let sid = r["sessionid"].as_str().unwrap().to_string();
    let r = adhoc(c, ADMIN, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains(&format!("revoke {MONTAGUE}: done")), "{r}");
    m.wait_for("unsubscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "unsubscribe"));
    m.wait_for("unsubscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "unsubscribed"));
    c.wait_state(MONTAGUE, "absent", WAIT);
    m.wait_state(CAPULET, "absent", WAIT);
    let removed_c =
        c.wait_for("server-trust/removed on capulet", WAIT, event("server-trust/removed", MONTAGUE));
    assert!(removed_c.t >= added_c.t);
    m.wait_for("server-trust/removed on montague", WAIT, event("server-trust/removed", CAPULET));
    c.wait_for("Metronome's peer-subscription-removed", WAIT, event("peer-subscription-removed", MONTAGUE));
    std::thread::sleep(QUIET);
    assert_eq!(count(c, event("server-trust/removed", MONTAGUE)), 1, "removed fires once");
    assert_eq!(count(m, event("server-trust/removed", CAPULET)), 1, "removed fires once");
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false");
    assert_eq!(is_trusted(m, CAPULET, None), "false");

    // Revoking again: an error note, no event.
    let r = adhoc(c, ADMIN, NODE_REVOKE, None, &[], None);
    let sid = r["sessionid"].as_str().unwrap().to_string();
    let r = adhoc(c, ADMIN, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).starts_with("error: ") && notes(&r).contains("not in the roster"), "{r}");
    std::thread::sleep(QUIET);
    assert_eq!(count(c, event("server-trust/removed", MONTAGUE)), 1, "no second removed event");
}

#[test]
fn api_is_trusted_scopes_and_peer_is_subscribed() {
    let lab = lab();
    let (m, c) = (&lab.montague, &lab.capulet);

    // Strangers: not subscribed, not trusted; invalid input is simply false.
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false");
    assert_eq!(peer_is_subscribed(c, "not a domain"), "false");
    assert_eq!(is_trusted(c, MONTAGUE, None), "false");
    assert_eq!(
        lua_result(
            c,
            &format!(
                "return require'core.modulemanager'.get_module({}, 'server_trust').is_trusted(nil)",
                lua(CAPULET)
            )
        ),
        "false"
    );

    // Buddies via CLI (request on montague, approve on capulet).
    m.cli(&["request", CAPULET]);
    c.wait_for("subscribe from montague", WAIT, presence(MONTAGUE, CAPULET, "subscribe"));
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false", "pending is not trusted");
    c.cli(&["approve", MONTAGUE]);
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_for("server-trust/added on capulet", WAIT, event("server-trust/added", MONTAGUE));

    assert_eq!(peer_is_subscribed(c, MONTAGUE), "true");
    assert_eq!(peer_is_subscribed(c, STRANGER), "false");
    // Metronome call sites that pass a table.
    assert_eq!(
        lua_result(
            c,
            &format!(
                "return prosody.hosts[{}].events.fire_event('peer-is-subscribed', {{ peer = {} }})",
                lua(CAPULET),
                lua(MONTAGUE)
            )
        ),
        "true"
    );
    assert_eq!(is_trusted(c, MONTAGUE, None), "true");
    assert_eq!(is_trusted(m, CAPULET, None), "true");
    assert_eq!(is_trusted(c, STRANGER, None), "false");
    // Not normalised by the caller: still recognised.
    assert_eq!(is_trusted(c, "MONTAGUE.LIT", None), "true");

    // Scopes: none yet; the CLI sets one and the running module picks it up.
    assert_eq!(is_trusted(c, MONTAGUE, Some("incidents")), "false");
    c.cli(&["groups", MONTAGUE, "--set", "incidents"]);
    let t0 = Instant::now();
    while is_trusted(c, MONTAGUE, Some("incidents")) != "true" {
        assert!(t0.elapsed() < WAIT, "is_trusted(incidents) never became true\n{}", c.log_tail(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("groups picked up after {:?}", t0.elapsed());
    assert_eq!(is_trusted(c, MONTAGUE, Some("muc-limits")), "false");
    assert_eq!(is_trusted(c, MONTAGUE, None), "true");
    let out = c.shell_ok("server_trust:list()");
    // host, peer, state, trusted, availability, last seen, groups
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{CAPULET}\t{MONTAGUE}\tboth\ttrusted\t"))
            && l.ends_with("\tincidents")),
        "{out}"
    );

    // Revoke by CLI: the running module drops trust and fires server-trust/removed.
    c.cli(&["revoke", MONTAGUE]);
    c.wait_for("server-trust/removed on capulet", WAIT, event("server-trust/removed", MONTAGUE));
    // The entry stays (state none) because it still carries the admin's groups.
    c.wait_state(MONTAGUE, "none", WAIT);
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false");
    assert_eq!(is_trusted(c, MONTAGUE, Some("incidents")), "false");
}
