//! XEP-0050 ad-hoc commands on ejabberd (mod_server_trust_adhoc.erl), driven by a real XMPP
//! client: slixmpp over c2s (STARTTLS, the lab's certificate verified, SASL) to a real
//! ejabberd 23.01 with the module, this sidecar and a Prosody peer over s2s
//! (crates/lab/src/ejabberd.rs with `c2s` and `admin_commands`).
//!
//! An admin (in the `admin` ACL, allowed by the `configure` rule: the module's default
//! `access_adhoc`) lists the three commands, approves and denies with "Pending server
//! buddies" (the Prosody peer receives `subscribed` / `unsubscribed`), requests and revokes; a
//! plain user sees none of them and is refused each; tampered values, a replayed or made-up
//! session and another command's session decide nothing; an unknown value is an error note;
//! a decision another admin made first stands; `access_adhoc` names who may. The README section "Ad-hoc commands
//! (XEP-0050)" shows only configuration the lab runs (`readme_config_is_the_labs`).

use std::fs;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA};
use server_trust_lab::xmpp_client::reply::{TRUST_FOR, errors, form_peers, list, notes, sessionid, strs};
use server_trust_lab::xmpp_client::{NODE_PENDING, NODE_REQUEST, NODE_REVOKE, XmppClient};
use server_trust_lab::{MONTAGUE, Stanza, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_secs(2);

const CAPULET: &str = "capulet.lit"; // a second Prosody host: the one denied
const ROMEO: &str = "romeo.lit"; // never asked: a peer no form offered

const NODES: [&str; 3] = [NODE_PENDING, NODE_REQUEST, NODE_REVOKE];
const COMMANDS_NS: &str = "http://jabber.org/protocol/commands";

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";
const EVE_USER: &str = "eve";
const EVE_PASSWORD: &str = "eve-secret";

/// The README section this file keeps honest.
const README_SECTION: &str = "Ad-hoc commands (XEP-0050)";

/// A lab of its own for each test: c2s, the admin token, montague.lit and capulet.lit on the
/// Prosody peer; admin@verona.lit (in the `admin` ACL) and eve@verona.lit registered.
fn lab() -> Kept {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.admin_commands = true;
    o.c2s = true;
    o.prosody_hosts = vec![CAPULET.into()];
    let lab = EjabberdLab::start(o);
    lab.ejabberd.register(ADMIN_USER, ADMIN_PASSWORD);
    lab.ejabberd.register(EVE_USER, EVE_PASSWORD);
    Kept(lab)
}

/// Keeps the lab folder when the test fails.
struct Kept(EjabberdLab);

impl std::ops::Deref for Kept {
    type Target = EjabberdLab;
    fn deref(&self) -> &EjabberdLab {
        &self.0
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.keep_dir();
        }
    }
}

/// montague.lit and capulet.lit both ask verona.lit; both pending there.
fn two_pending(lab: &EjabberdLab) {
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    p.admin(CAPULET).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MONTAGUE, T);
    lab.sidecar.wait_pending(CAPULET, T);
}

fn login(lab: &EjabberdLab, user: &str, password: &str) -> XmppClient {
    let c = lab.client(user, password).unwrap_or_else(|e| panic!("{user} login: {e}\n{}", lab.diagnostics()));
    assert!(c.jid.starts_with(&format!("{user}@{VERONA}/")), "{}", c.jid);
    assert!(c.tls, "the client must have gone through STARTTLS");
    c
}

/// An ad-hoc command to verona.lit ([`XmppClient::adhoc`]).
fn adhoc(
    client: &mut XmppClient,
    node: &str,
    action: Option<&str>,
    fields: &[(&str, &str)],
    sessionid: Option<&str>,
) -> Value {
    client.adhoc(VERONA, node, action, fields, sessionid)
}

/// A presence of `typ` from verona.lit to the Prosody host `host`, over s2s.
fn from_verona<'a>(host: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    let p = presence_from(VERONA, typ);
    move |s: &Stanza| s.host == host && p(s)
}

fn count(lab: &EjabberdLab, pred: impl Fn(&Stanza) -> bool) -> usize {
    lab.prosody().received().iter().filter(|s| pred(s)).count()
}

/// Nothing decided on verona.lit: both requests still pending, no answer sent to either
/// (watched for QUIET), no act in the audit log.
fn nothing_decided(lab: &EjabberdLab, why: &str) {
    thread::sleep(QUIET);
    for peer in [MONTAGUE, CAPULET] {
        for typ in ["subscribed", "unsubscribed"] {
            assert_eq!(count(lab, from_verona(peer, typ)), 0, "{why}: {typ} sent to {peer}");
        }
        assert_eq!(lab.sidecar.state(peer), "none+pending-in", "{why}");
        assert!(lab.sidecar.pending_file(peer).exists(), "{why}");
    }
    let audit = fs::read_to_string(lab.sidecar.audit_log()).unwrap_or_default();
    let acts =
        audit.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["actor"] == "adhoc");
    assert_eq!(acts.count(), 0, "{why}: an act in the audit log:\n{audit}");
}

#[test]
fn an_admin_lists_approves_denies_requests_and_revokes() {
    let lab = lab();
    let p = lab.prosody();
    two_pending(&lab);
    let mut admin = login(&lab, ADMIN_USER, ADMIN_PASSWORD);

    // The admin's client lists the three commands, by name, and may see each node.
    let items = admin.items(VERONA, COMMANDS_NS);
    assert_eq!(items["type"], "result", "{items}");
    let mut ours: Vec<(String, String)> = list(&items["items"])
        .iter()
        .filter(|i| i["node"].as_str().is_some_and(|n| n.starts_with("urn:xmpp:server-trust#")))
        .map(|i| (i["node"].as_str().unwrap().to_owned(), i["name"].as_str().unwrap_or("").to_owned()))
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        [
            (NODE_PENDING.to_owned(), "Pending server buddies".to_owned()),
            (NODE_REQUEST.to_owned(), "Request a server buddy".to_owned()),
            (NODE_REVOKE.to_owned(), "Revoke a server buddy".to_owned()),
        ],
        "{items}"
    );
    for node in NODES {
        let info = admin.info(VERONA, node);
        assert_eq!(info["type"], "result", "{node}: {info}");
        assert!(strs(&info["features"]).contains(&COMMANDS_NS.to_owned()), "{node}: {info}");
        let id = list(&info["identities"]);
        assert!(id.iter().any(|i| i[0] == "automation" && i[1] == "command-node"), "{node}: {info}");
    }

    // "Pending server buddies": one list-single per pending peer, no default, approve / deny /
    // later.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!((&r["type"], &r["status"]), (&"result".into(), &"executing".into()), "{r}");
    assert_eq!(r["node"], NODE_PENDING);
    assert_eq!(strs(&r["actions"]), ["complete"], "{r}");
    assert_eq!(r["form_type"], "form", "{r}");
    assert_eq!(r["title"], "Pending server buddy requests", "{r}");
    let sid = sessionid(&r);
    let fields = list(&r["fields"]);
    let form_type: Vec<&Value> = fields.iter().filter(|f| f["var"] == "FORM_TYPE").collect();
    assert_eq!(form_type.len(), 1, "{r}");
    assert_eq!(form_type[0]["type"], "hidden");
    assert_eq!(strs(&form_type[0]["values"]), ["http://jabber.org/protocol/admin"]);
    assert_eq!(form_peers(&r), [CAPULET, MONTAGUE], "{r}");
    // And one optional text field, as on Prosody: approve for a time only (empty: no end).
    let trust_for: Vec<&Value> = fields.iter().filter(|f| f["var"] == TRUST_FOR).collect();
    assert_eq!(trust_for.len(), 1, "{r}");
    assert_eq!(trust_for[0]["type"], "text-single", "{r}");
    assert!(strs(&trust_for[0]["values"]).is_empty(), "no end unless asked: {r}");
    // Above each choice, what is known about the requester (the engine's summary, as on
    // Prosody).
    let known: Vec<String> =
        fields.iter().filter(|f| f["type"] == "fixed").map(|f| strs(&f["values"]).join("\n")).collect();
    for peer in [CAPULET, MONTAGUE] {
        let prefix = format!("{peer}: authenticated by: ");
        assert!(known.iter().any(|k| k.starts_with(&prefix) && k.contains("asked once")), "{peer}: {r}");
    }
    for f in
        fields.iter().filter(|f| f["var"] != "FORM_TYPE" && f["var"] != TRUST_FOR && f["type"] != "fixed")
    {
        assert_eq!(f["type"], "list-single", "{f}");
        assert_eq!(f["label"], f["var"], "{f}");
        assert!(strs(&f["values"]).is_empty(), "no default allowed: {f}");
        assert_eq!(strs(&f["options"]), ["approve", "deny", "later"], "{f}");
    }
    thread::sleep(QUIET);
    assert_eq!(count(&lab, from_verona(MONTAGUE, "subscribed")), 0, "the form alone approves nothing");

    // Approve montague.lit for 90 days, decide capulet.lit later: montague gets subscribed
    // over s2s (and verona's own subscribe), capulet nothing.
    let r = adhoc(
        &mut admin,
        NODE_PENDING,
        Some("complete"),
        &[(MONTAGUE, "approve"), (CAPULET, "later"), (TRUST_FOR, "90d")],
        Some(&sid),
    );
    assert_eq!((&r["type"], &r["status"]), (&"result".into(), &"completed".into()), "{r}");
    assert_eq!(r["sessionid"], sid.as_str());
    assert_eq!(notes(&r), format!("info: {MONTAGUE}: approve"), "{r}");
    p.wait_for("subscribed from verona.lit", T, from_verona(MONTAGUE, "subscribed"));
    p.wait_for("subscribe from verona.lit", T, from_verona(MONTAGUE, "subscribe"));
    lab.sidecar.wait_state(MONTAGUE, "both", T);
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    assert_eq!(lab.sidecar.state(CAPULET), "none+pending-in", "later means later");
    let show: Value = serde_json::from_slice(&lab.sidecar.cli(&["--json", "show", MONTAGUE]).stdout).unwrap();
    assert!(show["entry"]["expires_at"].is_string(), "approved for 90d has an end: {show}");
    // The audit log names the ad-hoc command as the actor (the module tells the sidecar).
    let audit = fs::read_to_string(lab.sidecar.audit_log()).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("\"approve\"") && l.contains(MONTAGUE) && l.contains("\"adhoc\"")),
        "{audit}"
    );
    lab.ejabberd.wait_log("the approve, by the ad-hoc command", T, |l| {
        l.contains(
            "mod_server_trust (verona.lit): approve montague.lit for 90d by ad-hoc command of admin@verona.lit",
        )
    });

    // A new session offers what is still pending; deny capulet.lit there.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(form_peers(&r), [CAPULET], "{r}");
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(CAPULET, "deny")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(notes(&r), format!("info: {CAPULET}: deny"), "{r}");
    p.wait_for("unsubscribed from verona.lit", T, from_verona(CAPULET, "unsubscribed"));
    lab.sidecar.wait_state(CAPULET, "absent", T);
    assert_eq!(count(&lab, from_verona(CAPULET, "subscribed")), 0, "denied, not approved");
    assert!(!lab.sidecar.pending_file(CAPULET).exists());
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(notes(&r), "info: No pending requests", "{r}");

    // "Request a server buddy": one required text-single "peer"; capulet.lit gets subscribe.
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(r["title"], "Request a server buddy", "{r}");
    let peer = list(&r["fields"]).into_iter().find(|f| f["var"] == "peer").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        (&peer["type"], &peer["required"], &peer["label"]),
        (&"text-single".into(), &true.into(), &"Server domain".into())
    );
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", CAPULET)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(notes(&r), format!("info: request {CAPULET}: done"), "{r}");
    p.wait_for("subscribe from verona.lit", T, from_verona(CAPULET, "subscribe"));
    lab.sidecar.wait_state(CAPULET, "none+pending-out", T);
    // A user JID is not a server: an error note, nothing sent.
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", "juliet@capulet.lit")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(errors(&r).len(), 1, "{r}");

    // "Revoke a server buddy": montague.lit gets unsubscribed and unsubscribe, is untrusted.
    let r = adhoc(&mut admin, NODE_REVOKE, None, &[], None);
    assert_eq!(r["title"], "Revoke a server buddy", "{r}");
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(notes(&r), format!("info: revoke {MONTAGUE}: done"), "{r}");
    p.wait_for("unsubscribed from verona.lit", T, from_verona(MONTAGUE, "unsubscribed"));
    p.wait_for("unsubscribe from verona.lit", T, from_verona(MONTAGUE, "unsubscribe"));
    lab.sidecar.wait_state(MONTAGUE, "absent", T);
    // Again: not in the roster any more, an error note.
    let r = adhoc(&mut admin, NODE_REVOKE, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    let e = errors(&r);
    assert!(e.len() == 1 && e[0].contains("not in the roster"), "{r}");

    // Cancel is honoured, and ends the session: its form then decides nothing.
    let r = adhoc(&mut admin, NODE_REVOKE, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REVOKE, Some("cancel"), &[], Some(&sid));
    assert_eq!(r["status"], "canceled", "{r}");
    let r = adhoc(&mut admin, NODE_REVOKE, Some("complete"), &[("peer", CAPULET)], Some(&sid));
    assert_eq!(r["status"], "executing", "a canceled session acted: {r}");
    assert_eq!(lab.sidecar.state(CAPULET), "none+pending-out");
    admin.close();

    readme_config_is_the_labs(&lab);
}

#[test]
fn a_plain_user_sees_no_commands_and_is_refused() {
    let lab = lab();
    two_pending(&lab);
    // The admin does see them: the list below is not empty for want of commands.
    let mut admin = login(&lab, ADMIN_USER, ADMIN_PASSWORD);
    let nodes = admin.command_nodes(VERONA);
    assert!(NODES.iter().all(|n| nodes.iter().any(|l| l == n)), "{nodes:?}");
    admin.close();

    let e = lab.client(EVE_USER, "not-eve-secret").err().expect("a wrong password");
    assert!(e.contains("authentication failed"), "{e}");
    let mut eve = login(&lab, EVE_USER, EVE_PASSWORD);
    let listed = eve.command_nodes(VERONA);
    assert!(NODES.iter().all(|n| !listed.iter().any(|l| l == n)), "eve sees {listed:?}");
    for node in NODES {
        let info = eve.info(VERONA, node);
        assert_eq!((&info["type"], &info["error"]), (&"error".into(), &"forbidden".into()), "{node}: {info}");
        let r = adhoc(&mut eve, node, None, &[], None);
        assert_eq!((&r["type"], &r["error"]), (&"error".into(), &"forbidden".into()), "{node}: {r}");
        assert_eq!(r["error_type"], "auth", "{node}: {r}");
    }
    // ... even with a made-up session and a filled-in form.
    for (node, fields) in [
        (NODE_PENDING, vec![(MONTAGUE, "approve"), (CAPULET, "deny")]),
        (NODE_REQUEST, vec![("peer", ROMEO)]),
        (NODE_REVOKE, vec![("peer", MONTAGUE)]),
    ] {
        let r = adhoc(&mut eve, node, Some("complete"), &fields, Some("forged"));
        assert_eq!(r["error"], "forbidden", "{node}: {r}");
    }
    eve.close();
    nothing_decided(&lab, "a plain user must decide nothing");
    assert_eq!(lab.sidecar.state(ROMEO), "absent");

    // access_adhoc decides who: pointed at a rule naming eve only (reload_config), eve sees
    // and runs the commands and the admin ACL's account no longer does.
    let yml_path = lab.ejabberd.etc.join("ejabberd.yml");
    let yml = fs::read_to_string(&yml_path).unwrap();
    assert!(yml.contains("\n    access_adhoc: configure\n"), "{yml}");
    let yml = yml
        .replace(
            "\naccess_rules:\n",
            "\naccess_rules:\n  trust_adhoc:\n    allow:\n      user: \"eve@verona.lit\"\n",
        )
        .replace("\n    access_adhoc: configure\n", "\n    access_adhoc: trust_adhoc\n");
    fs::write(&yml_path, yml).unwrap();
    lab.ejabberd.ctl_ok(&["reload_config"]);
    let mut eve = login(&lab, EVE_USER, EVE_PASSWORD);
    let listed = eve.command_nodes(VERONA);
    assert!(NODES.iter().all(|n| listed.iter().any(|l| l == n)), "eve, now allowed, sees {listed:?}");
    let r = adhoc(&mut eve, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(form_peers(&r), [CAPULET, MONTAGUE], "{r}");
    eve.close();
    let mut admin = login(&lab, ADMIN_USER, ADMIN_PASSWORD);
    let listed = admin.command_nodes(VERONA);
    assert!(
        NODES.iter().all(|n| !listed.iter().any(|l| l == n)),
        "admin, no longer allowed, sees {listed:?}"
    );
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["error"], "forbidden", "{r}");
    admin.close();
}

#[test]
fn tampered_stale_and_made_up_forms_decide_nothing() {
    let lab = lab();
    let p = lab.prosody();
    two_pending(&lab);
    let mut admin = login(&lab, ADMIN_USER, ADMIN_PASSWORD);

    // Changed values ("approve " and "APPROVE" are not choices) and a peer not offered: each
    // unknown value is an error note, never read as "later"; nothing decided.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let sid = sessionid(&r);
    let tampered = [(MONTAGUE, "approve "), (CAPULET, "APPROVE"), (ROMEO, "approve")];
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &tampered, Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(list(&r["notes"])[0]["text"], "Nothing decided", "{r}");
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{r}");
    for (peer, value) in &tampered[..2] {
        assert!(
            e[0].contains(&format!("{peer}: \"{value}\" is not approve, deny or later; nothing done")),
            "{r}"
        );
    }
    assert!(!e[0].contains(ROMEO), "a peer the form never offered is not even looked at: {r}");
    nothing_decided(&lab, "a tampered form");
    assert_eq!(lab.sidecar.state(ROMEO), "absent");

    // The same session again, now with a valid choice: it is over, so a fresh form comes back
    // (with both peers still) and nothing is decided. A made-up session id: the same.
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "executing", "a completed session replayed: {r}");
    assert_ne!(r["sessionid"], sid.as_str(), "{r}");
    assert_eq!(form_peers(&r), [CAPULET, MONTAGUE], "{r}");
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(CAPULET, "deny")], Some("made-up-session"));
    assert_eq!(r["status"], "executing", "{r}");
    nothing_decided(&lab, "a stale or made-up session");

    // Another command's session: "Request a server buddy"'s submitted as the pending form, and
    // the pending form's submitted to "Request a server buddy".
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let request_sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&request_sid));
    assert_eq!(r["status"], "executing", "another command's session decided: {r}");
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let pending_sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", ROMEO)], Some(&pending_sid));
    assert_eq!(r["status"], "executing", "another command's session requested: {r}");
    nothing_decided(&lab, "a session of another command");
    assert_eq!(lab.sidecar.state(ROMEO), "absent");

    // Another client of the same admin (another resource) cannot complete this one's form.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let sid = sessionid(&r);
    let mut other = login(&lab, ADMIN_USER, ADMIN_PASSWORD);
    let r = adhoc(&mut other, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "executing", "another resource's session decided: {r}");
    other.close();
    nothing_decided(&lab, "another resource's session");

    // The form of its own session: decided, exactly once, even replayed.
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(notes(&r), format!("info: {MONTAGUE}: approve"), "{r}");
    p.wait_for("subscribed from verona.lit", T, from_verona(MONTAGUE, "subscribed"));
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(form_peers(&r), [CAPULET], "{r}");
    thread::sleep(QUIET);
    assert_eq!(count(&lab, from_verona(MONTAGUE, "subscribed")), 1, "one approval, one subscribed");

    // Another admin decides first (ejabberdctl server_trust_deny while the form is open): the
    // form's approve is refused with an error note naming that decision; capulet.lit gets
    // unsubscribed, never subscribed.
    let sid = sessionid(&r);
    lab.ejabberd.ctl_ok(&["server_trust_deny", VERONA, CAPULET]);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(CAPULET, "approve")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(list(&r["notes"])[0]["text"], "Nothing decided", "{r}");
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{r}");
    // As the README shows it.
    let (head, tail) = e[0].split_once(" at ").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(head, format!("sidecar answered 409: {CAPULET}: `deny` by ejabberdctl"), "{r}");
    assert!(tail.ends_with("Z came first (carried out); the first decision stands, nothing changed"), "{r}");
    p.wait_for("unsubscribed from verona.lit", T, from_verona(CAPULET, "unsubscribed"));
    thread::sleep(QUIET);
    assert_eq!(count(&lab, from_verona(CAPULET, "subscribed")), 0, "the later approve must not win");
    assert_eq!(lab.sidecar.state(CAPULET), "absent");
    admin.close();
}

/// Every configuration line the README section shows (its yaml blocks) is in the lab's
/// ejabberd.yml, which the tests above ran; the section shows no `ejabberdctl` or `curl` line
/// (ejabberd_commands.rs's README check reads on past its own section, to the end).
fn readme_config_is_the_labs(lab: &EjabberdLab) {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ejabberd/mod_server_trust/README.md"))
            .unwrap();
    let section = readme
        .split_once(&format!("\n{README_SECTION}\n"))
        .unwrap_or_else(|| panic!("README section {README_SECTION:?}"))
        .1;
    // This section only: up to the next heading (`## Title`, or a title over a line of dashes).
    let section = match (section.find("\n## "), section.find("\n---")) {
        (Some(h), u) if u.is_none_or(|u| h < u) => &section[..h],
        (_, Some(u)) => section[..u].rsplit_once('\n').map_or(section, |(s, _)| s),
        _ => section,
    };
    let yml = fs::read_to_string(lab.ejabberd.etc.join("ejabberd.yml")).unwrap();
    let mut in_yaml = false;
    let mut shown = 0;
    for line in section.lines() {
        let t = line.trim_start();
        assert!(!t.starts_with("ejabberdctl ") && !t.starts_with("curl "), "{line}");
        if line.starts_with("```") {
            in_yaml = line == "```yaml";
            continue;
        }
        let line = line.split("  #").next().unwrap().trim_end();
        if in_yaml && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            shown += 1;
            assert!(
                yml.lines().any(|l| l == line),
                "the README shows {line:?}, the lab's ejabberd.yml has not:\n{yml}"
            );
        }
    }
    assert!(shown >= 8, "the README section shows {shown} lines of configuration");
    for node in NODES {
        assert!(section.contains(&format!("`{node}`")), "the README does not name {node}");
    }
}
