//! The admin surfaces of mod_server_trust inside two real Prosody servers over s2s (0.12, or
//! 13 where a test says so or the run sets SERVER_TRUST_LAB_PROSODY=13): the `prosodyctl
//! shell` commands, the XEP-0050 ad-hoc commands (driven by a real XMPP client library,
//! slixmpp, logged in over c2s: `server_trust_lab::xmpp_client`) and the API other modules use
//! (`is_trusted`, `peer-is-subscribed`, the `server-trust/added` / `removed` events). Helpers
//! here, tests in the submodules.

mod adhoc;
mod module_api;
mod pending_cap;
mod shell;

use std::process::Output;

use serde_json::Value;
use server_trust_lab::lua::lua_str;
use server_trust_lab::xmpp_client::reply::{list, notes, strs};
use server_trust_lab::xmpp_client::{NODE_PENDING, NODE_REQUEST, NODE_REVOKE, XmppClient, create_user};
use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, Server, Stanza, TrustAdmin, presence_from};

use crate::support::WAIT;

/// A third server domain, served by the montague process WITHOUT mod_server_trust: it sends a
/// raw `subscribe` to capulet.lit so capulet has two pending requests.
const VERONA: &str = "verona.lit";

/// Never seen by anyone.
const STRANGER: &str = "tybalt.lit";
const ADMIN: &str = "admin@capulet.lit";
const EVE: &str = "eve@capulet.lit";

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

/// Which Prosody a test's lab runs.
#[derive(Clone, Copy, Debug)]
enum Prosody {
    /// The run's default: Debian's 0.12, or 13 when the run sets SERVER_TRUST_LAB_PROSODY=13.
    Default,
    /// The Prosody 13 build, whatever the run's default.
    V13,
    /// The Prosody 13 build, also in a run on 13 (a test with no `Default` twin).
    Only13,
}

/// The servers' prefixes for `v`, or None when the test is not run: 13 is missing and
/// SERVER_TRUST_SKIP_PROSODY13 says so (loudly), or the run is on 13 anyway (the `Default`
/// twin of the test covers it).
fn prefixes(v: Prosody) -> Option<[Option<std::path::PathBuf>; 2]> {
    match v {
        Prosody::Default => Some([None, None]),
        Prosody::V13 if std::env::var_os("SERVER_TRUST_LAB_PROSODY").is_some_and(|p| p == "13") => {
            eprintln!("(Prosody 13 covered by the same test with the run's default, which is 13)");
            None
        }
        Prosody::Only13 if std::env::var_os("SERVER_TRUST_LAB_PROSODY").is_some_and(|p| p == "13") => {
            Some([None, None])
        }
        Prosody::V13 | Prosody::Only13 => match server_trust_lab::prosody13() {
            Some(p) => Some([Some(p.clone()), Some(p)]),
            None if std::env::var_os("SERVER_TRUST_SKIP_PROSODY13").is_some() => {
                eprintln!(
                    "!!! PROSODY 13 NOT TESTED: the tarball is missing (SERVER_TRUST_SKIP_PROSODY13 set)"
                );
                None
            }
            None => panic!(
                "Prosody 13 not tested: ../shared/vendor/prosody-13.0.1.tar.gz is missing \
                 (set SERVER_TRUST_SKIP_PROSODY13=1 to skip knowingly)"
            ),
        },
    }
}

/// A lab with mod_server_trust on `v`, montague also serving verona.lit.
fn lab_with_verona_on(v: Prosody) -> Option<Lab> {
    Some(Lab::with_server_trust(LabOptions {
        montague_extra_hosts: vec![VERONA.into()],
        prefixes: prefixes(v)?,
        ..LabOptions::default()
    }))
}

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";
const EVE_USER: &str = "eve";
const EVE_PASSWORD: &str = "eve-secret";

/// capulet's admin (named in the VirtualHost's `admins`: on 13 the role `prosody:admin`),
/// registered and logged in with the real client.
fn admin_client(lab: &Lab) -> XmppClient {
    let c = &lab.capulet;
    create_user(c, ADMIN_USER, ADMIN_PASSWORD, None);
    let client = XmppClient::login(c, &lab.dir.join("certs"), ADMIN_USER, ADMIN_PASSWORD)
        .unwrap_or_else(|e| panic!("admin login: {e}\n{}", c.dump(&[])));
    assert!(client.jid.starts_with(&format!("{ADMIN}/")), "{}", client.jid);
    assert!(client.tls, "the client must have gone through STARTTLS");
    client
}

/// A plain user of capulet (on 13 the role `prosody:registered`, what self-registration gives),
/// logged in with the real client.
fn eve_client(lab: &Lab) -> XmppClient {
    let c = &lab.capulet;
    create_user(c, EVE_USER, EVE_PASSWORD, Some("prosody:registered"));
    let client = XmppClient::login(c, &lab.dir.join("certs"), EVE_USER, EVE_PASSWORD)
        .unwrap_or_else(|e| panic!("eve login: {e}\n{}", c.dump(&[])));
    assert!(client.jid.starts_with(&format!("{EVE}/")), "{}", client.jid);
    client
}

/// An ad-hoc command from `client` to capulet.lit, over c2s ([`XmppClient::adhoc`]).
fn adhoc(
    client: &mut XmppClient,
    node: &str,
    action: Option<&str>,
    fields: &[(&str, &str)],
    sessionid: Option<&str>,
) -> Value {
    client.adhoc(CAPULET, node, action, fields, sessionid)
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

/// [`two_pending`] on `v` (None: not run, see [`prefixes`]).
fn two_pending_on(v: Prosody) -> Option<Lab> {
    let lab = lab_with_verona_on(v)?;
    ask_both(&lab);
    Some(lab)
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
