//! The admin surfaces of mod_server_trust inside two real Prosody 0.12 servers over s2s:
//! the `prosodyctl shell` commands, the XEP-0050 ad-hoc commands (sent as if by a c2s client,
//! through `lab:adhoc` in the lab's mod_lab.lua) and the API other modules use (`is_trusted`,
//! `peer-is-subscribed`, the `server-trust/added` / `removed` events). Helpers here, tests in
//! the submodules.

mod adhoc;
mod module_api;
mod pending_cap;
mod shell;

use std::process::Output;

use serde_json::Value;
use server_trust_lab::lua::lua_str;
use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, Server, Stanza, TrustAdmin, presence_from};

use crate::support::WAIT;

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

fn lab_with_verona() -> Lab {
    Lab::with_server_trust(LabOptions { montague_extra_hosts: vec![VERONA.into()], ..LabOptions::default() })
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

/// `server_trust:<cmd>(args)` in capulet's/montague's admin shell (without checking the result).
fn shell_cmd(srv: &Server, cmd: &str, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| lua_str(a)).collect();
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
    let opt = |o: Option<&str>| o.map_or("nil".to_string(), lua_str);
    let fields = if fields.is_empty() {
        "nil".to_string()
    } else {
        let kv: Vec<String> =
            fields.iter().map(|(k, v)| format!("[{}] = {}", lua_str(k), lua_str(v))).collect();
        format!("{{ {} }}", kv.join(", "))
    };
    let line = format!(
        "lab:adhoc({}, {}, {}, {}, {fields}, {})",
        lua_str(&srv.host),
        lua_str(from),
        lua_str(node),
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
    let scope = scope.map_or(String::new(), |s| format!(", {}", lua_str(s)));
    lua_result(
        srv,
        &format!(
            "return require'core.modulemanager'.get_module({}, 'server_trust').is_trusted({}{scope})",
            lua_str(&srv.host),
            lua_str(peer)
        ),
    )
}

fn peer_is_subscribed(srv: &Server, peer: &str) -> String {
    lua_result(
        srv,
        &format!(
            "return prosody.hosts[{}].events.fire_event('peer-is-subscribed', {})",
            lua_str(&srv.host),
            lua_str(peer)
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
