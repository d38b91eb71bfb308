//! A real XMPP client for the lab: slixmpp (Debian's `python3-slixmpp`), run by
//! `/usr/bin/python3` (Debian's interpreter, where the package is installed; not whatever
//! `python3` comes first on PATH) with `src/client/adhoc_client.py`, logged in over c2s
//! (STARTTLS, the server's certificate checked against the lab's self-signed one, then SASL)
//! to drive XEP-0050 ad-hoc commands as an admin's client would.
//!
//! The script speaks JSON lines: one login line, then one step per line and one answer per
//! step ([`XmppClient::command`], [`XmppClient::items`], [`XmppClient::info`]). Steps are sent
//! as the test writes them, so a test can replay a stale session, change a form's values or
//! add a field the form never offered: the client checks nothing itself. Every answer is
//! awaited at most `timeout` (plus a second for the script); a client that does not answer is
//! killed, as is one that is dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::{Value, json};

use crate::prosody::Server;

/// Debian's interpreter, which has `python3-slixmpp`.
pub const PYTHON: &str = "/usr/bin/python3";
/// The XEP-0050 namespace, also the disco node that lists the commands.
pub const COMMANDS_NODE: &str = "http://jabber.org/protocol/commands";

/// The script the client runs.
pub fn script() -> PathBuf {
    crate::artifacts::lab_dir().join("src/client/adhoc_client.py")
}

/// One logged-in client; dropping it closes the stream and kills the process.
pub struct XmppClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    timeout: Duration,
    /// The full JID the server bound.
    pub jid: String,
    /// The SASL mechanism used (e.g. `SCRAM-SHA-1`).
    pub mechanism: String,
    /// Whether the stream went through STARTTLS.
    pub tls: bool,
}

impl XmppClient {
    /// Logs in as `user@<srv.host>` with `password` to `srv`'s c2s port, trusting `srv`'s own
    /// certificate (`<certs>/<host>.crt`) and nothing else.
    pub fn login(srv: &Server, certs: &Path, user: &str, password: &str) -> Result<XmppClient, String> {
        let jid = format!("{user}@{}", srv.host);
        let ca = certs.join(format!("{}.crt", srv.host));
        XmppClient::connect(&jid, password, &srv.ip, 5222, &ca, Duration::from_secs(10))
    }

    /// Logs in as `jid` at `address:port`, verifying the server against `ca_file`. Each step
    /// (the login included) is bounded by `timeout`.
    pub fn connect(
        jid: &str,
        password: &str,
        address: &str,
        port: u16,
        ca_file: &Path,
        timeout: Duration,
    ) -> Result<XmppClient, String> {
        let mut child = Command::new(PYTHON)
            .arg(script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {PYTHON} {}: {e}", script().display()))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut c = XmppClient {
            child,
            stdin,
            lines,
            timeout,
            jid: String::new(),
            mechanism: String::new(),
            tls: false,
        };
        let login = json!({
            "jid": jid, "password": password, "address": address, "port": port,
            "ca_file": ca_file, "timeout": timeout.as_secs_f64(),
        });
        let r = c.request(&login)?;
        c.jid = r["jid"].as_str().unwrap_or_default().to_owned();
        c.mechanism = r["mechanism"].as_str().unwrap_or_default().to_owned();
        c.tls = r["tls"] == true;
        Ok(c)
    }

    /// Sends one JSON line and reads the answer; `ok: false` is an error. On a timeout the
    /// process is killed.
    fn request(&mut self, msg: &Value) -> Result<Value, String> {
        let stdin = self.stdin.as_mut().ok_or("the client is closed")?;
        writeln!(stdin, "{msg}").and_then(|()| stdin.flush()).map_err(|e| format!("client stdin: {e}"))?;
        let wait = self.timeout + Duration::from_secs(1);
        let line = match self.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                return Err(format!("the XMPP client gave no answer within {wait:?} to {msg}; killed"));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!(
                    "the XMPP client exited ({status}) without answering {msg} (its stderr is above; \
                     slixmpp comes from Debian's python3-slixmpp, which scripts/setup.sh installs)"
                ));
            }
        };
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("bad JSON from the client ({e}): {line}"))?;
        if v["ok"] != true {
            return Err(v["error"].as_str().unwrap_or(&line).to_string());
        }
        Ok(v)
    }

    fn step(&mut self, msg: Value) -> Value {
        self.request(&msg).unwrap_or_else(|e| panic!("{}: {e}\n(step: {msg})", self.jid))
    }

    /// disco#items of `node` at `to`: `{type, items: [{jid, node, name}]}` or an error
    /// (`{type: "error", error, error_type, error_text}`).
    pub fn items(&mut self, to: &str, node: &str) -> Value {
        self.step(json!({ "op": "items", "to": to, "node": node }))
    }

    /// disco#info of `node` at `to`: `{type, identities, features}` or an error.
    pub fn info(&mut self, to: &str, node: &str) -> Value {
        self.step(json!({ "op": "info", "to": to, "node": node }))
    }

    /// The nodes listed under [`COMMANDS_NODE`] at `to` (panics on an error reply).
    pub fn command_nodes(&mut self, to: &str) -> Vec<String> {
        let r = self.items(to, COMMANDS_NODE);
        assert_eq!(r["type"], "result", "disco#items of the commands: {r}");
        r["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["node"].as_str().map(str::to_owned))
            .collect()
    }

    /// One XEP-0050 `<command/>` to `to`, sent as given: `action` (None: none, i.e. execute),
    /// `sessionid`, and with `fields` a submitted form of exactly those fields (add FORM_TYPE
    /// yourself when you want it). Returns the reply:
    /// `{type, error, error_type, error_text, status, sessionid, node, notes: [{type, text}],
    /// actions, form_type, title, fields: [{var, type, label, required, values, options}], xml}`.
    pub fn command(
        &mut self,
        to: &str,
        node: &str,
        action: Option<&str>,
        sessionid: Option<&str>,
        fields: Option<&[(&str, &[&str])]>,
    ) -> Value {
        let fields: Option<Vec<Value>> =
            fields.map(|f| f.iter().map(|(var, vals)| json!([var, vals])).collect());
        self.step(json!({
            "op": "command", "to": to, "node": node, "action": action, "sessionid": sessionid,
            "fields": fields,
        }))
    }

    /// [`XmppClient::command`] as an admin's client fills the server's form: with `fields`, a
    /// submitted form of FORM_TYPE `http://jabber.org/protocol/admin` and those fields (one
    /// value each); without, no form.
    pub fn adhoc(
        &mut self,
        to: &str,
        node: &str,
        action: Option<&str>,
        fields: &[(&str, &str)],
        sessionid: Option<&str>,
    ) -> Value {
        let values: Vec<[&str; 1]> = fields.iter().map(|(_, v)| [*v]).collect();
        let mut form: Vec<(&str, &[&str])> = vec![("FORM_TYPE", &["http://jabber.org/protocol/admin"])];
        form.extend(fields.iter().zip(&values).map(|((k, _), v)| (*k, &v[..])));
        let form = (!fields.is_empty()).then_some(&form[..]);
        self.command(to, node, action, sessionid, form)
    }

    fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes the stream (bounded like a step) and waits for the process.
    pub fn close(mut self) {
        if self.request(&json!({ "op": "quit" })).is_ok() {
            self.stdin = None;
            let _ = self.child.wait();
        }
    }
}

impl Drop for XmppClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Registers `user@<srv.host>` with `password` through `srv`'s admin shell. `role` is for
/// Prosody 13 (`user:create`'s third argument there, e.g. `prosody:registered`; without it 13
/// gives `prosody:member`); 0.12 has no roles and ignores it.
pub fn create_user(srv: &Server, user: &str, password: &str, role: Option<&str>) {
    use crate::lua::lua_str;
    let jid = format!("{user}@{}", srv.host);
    let role = role.map_or(String::new(), |r| format!(", {}", lua_str(r)));
    let out = srv.shell_ok(&format!("user:create({}, {}{role})", lua_str(&jid), lua_str(password)));
    assert!(out.contains("OK") || out.contains("Created"), "user:create {jid}: {out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and never speaks: the login fails within its bound, with a reason,
    /// and the process is gone.
    #[test]
    fn a_silent_server_fails_the_login_in_bounded_time() {
        if !Path::new(PYTHON).exists() {
            panic!("{PYTHON} missing (scripts/setup.sh installs python3-slixmpp)");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let t0 = std::time::Instant::now();
        let ca = tempfile::NamedTempFile::new().unwrap();
        let r = XmppClient::connect("a@b.lit", "pw", "127.0.0.1", port, ca.path(), Duration::from_secs(1));
        let err = r.err().expect("a silent server must not log anyone in");
        assert!(err.contains("login as a@b.lit"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(8), "took {:?}", t0.elapsed());
        drop(hold.join());
    }
}

/// The server-trust ad-hoc command nodes (the same on Prosody and ejabberd).
pub const NODE_REQUEST: &str = "urn:xmpp:server-trust#request";
pub const NODE_PENDING: &str = "urn:xmpp:server-trust#pending";
pub const NODE_REVOKE: &str = "urn:xmpp:server-trust#revoke";

/// Reading what [`XmppClient::command`] returns (the Prosody and the ejabberd ad-hoc tests).
pub mod reply {
    use serde_json::Value;

    /// A JSON list (absent: empty).
    pub fn list(v: &Value) -> Vec<Value> {
        v.as_array().cloned().unwrap_or_default()
    }

    /// The strings of a JSON list.
    pub fn strs(v: &Value) -> Vec<String> {
        list(v).iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
    }

    /// The notes as "type: text" lines.
    pub fn notes(v: &Value) -> String {
        list(&v["notes"])
            .iter()
            .map(|n| format!("{}: {}", n["type"].as_str().unwrap_or(""), n["text"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The texts of the error notes.
    pub fn errors(v: &Value) -> Vec<String> {
        list(&v["notes"])
            .iter()
            .filter(|n| n["type"] == "error")
            .filter_map(|n| n["text"].as_str().map(str::to_owned))
            .collect()
    }

    /// The peers a pending form offers (its fields but FORM_TYPE), sorted.
    /// The pending form's one field that is not a peer: how long approvals trust for.
    pub const TRUST_FOR: &str = "trust_for";

    pub fn form_peers(r: &Value) -> Vec<String> {
        let mut peers: Vec<String> = list(&r["fields"])
            .iter()
            .filter(|f| f["var"] != "FORM_TYPE" && f["var"] != TRUST_FOR)
            .filter_map(|f| f["var"].as_str().map(str::to_owned))
            .collect();
        peers.sort();
        peers
    }

    /// The reply's session id; panics when there is none.
    pub fn sessionid(r: &Value) -> String {
        r["sessionid"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("no sessionid: {r}"))
            .to_string()
    }
}
