//! XEP-0050 ad-hoc commands for admins, driven by a real client (slixmpp over c2s, STARTTLS +
//! SASL) on Prosody 0.12 and 13: the pending form, request and revoke; a plain user is refused;
//! stale, replayed and tampered forms decide nothing. Each scenario runs twice: on the run's
//! default Prosody and, as `..._on_prosody_13`, on the Prosody 13 build.

use super::*;
use crate::support::QUIET;
use server_trust_lab::xmpp_client::reply::{TRUST_FOR, form_peers, sessionid};

const NODES: [&str; 3] = [NODE_PENDING, NODE_REQUEST, NODE_REVOKE];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Nothing was decided on capulet: both still pending, nothing sent to either, nothing done
/// by an ad-hoc command in the audit log.
fn nothing_decided(lab: &Lab, why: &str) {
    let (m, c) = (&lab.montague, &lab.capulet);
    m.assert_none_for(
        QUIET,
        |s| s.via_s2s() && s.from.as_deref() == Some(CAPULET) && s.name == "presence",
        why,
    );
    assert_eq!(c.state(MONTAGUE), "none+pending-in", "{why}");
    assert_eq!(c.state(VERONA), "none+pending-in", "{why}");
    assert!(c.pending_file(MONTAGUE).exists() && c.pending_file(VERONA).exists(), "{why}");
    let log = String::from_utf8(c.cli(&["log"]).stdout).unwrap();
    assert!(
        !log.lines().any(|l| l.contains(" adhoc ")),
        "{why}: an ad-hoc decision in the audit log:\n{log}"
    );
}

fn pending_form_approves_denies_and_leaves_for_later(v: Prosody) {
    let Some(lab) = two_pending_on(v) else { return };
    let (m, c) = (&lab.montague, &lab.capulet);
    let mut admin = admin_client(&lab);

    // The admin's client lists the three commands and may see each node.
    let nodes = sorted(admin.command_nodes(CAPULET));
    assert_eq!(nodes, sorted(NODES.iter().map(|n| n.to_string()).collect()));
    for node in NODES {
        let info = admin.info(CAPULET, node);
        assert_eq!(info["type"], "result", "{node}: {info}");
    }

    // "Pending server buddies": a form with one list-single per pending peer, no default
    // value, choices approve / deny / later.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(r["node"], NODE_PENDING);
    assert_eq!(strs(&r["actions"]), ["complete"], "{r}");
    assert_eq!(r["form_type"], "form", "{r}");
    let sid = sessionid(&r);
    let fields = list(&r["fields"]);
    let form_type: Vec<&Value> = fields.iter().filter(|f| f["var"] == "FORM_TYPE").collect();
    assert_eq!(form_type.len(), 1, "{r}");
    assert_eq!(form_type[0]["type"], "hidden");
    assert_eq!(form_peers(&r), [MONTAGUE, VERONA], "{r}");
    // Above each choice, what is known about the requester (the engine's summary).
    let known: Vec<String> =
        fields.iter().filter(|f| f["type"] == "fixed").map(|f| strs(&f["values"]).join("\n")).collect();
    for peer in [MONTAGUE, VERONA] {
        let prefix = format!("{peer}: authenticated by: ");
        assert!(known.iter().any(|k| k.starts_with(&prefix) && k.contains("asked once")), "{peer}: {r}");
    }
    // And one optional text field: approve for a time only (empty: no end).
    let trust_for: Vec<&Value> = fields.iter().filter(|f| f["var"] == TRUST_FOR).collect();
    assert_eq!(trust_for.len(), 1, "{r}");
    assert_eq!(trust_for[0]["type"], "text-single", "{r}");
    assert!(strs(&trust_for[0]["values"]).is_empty(), "no end unless asked: {r}");
    for f in
        fields.iter().filter(|f| f["var"] != "FORM_TYPE" && f["var"] != TRUST_FOR && f["type"] != "fixed")
    {
        assert_eq!(f["type"], "list-single", "{f}");
        assert!(strs(&f["values"]).is_empty(), "no default allowed: {f}");
        assert_eq!(strs(&f["options"]), ["approve", "deny", "later"], "{f}");
    }
    // Opening the form decides nothing.
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribed"), "the form alone approves nothing");

    // Submit: approve montague for 90 days, decide verona later.
    let r = adhoc(
        &mut admin,
        NODE_PENDING,
        Some("complete"),
        &[(MONTAGUE, "approve"), (VERONA, "later"), (TRUST_FOR, "90d")],
        Some(&sid),
    );
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["sessionid"], sid.as_str());
    let n = notes(&r);
    assert!(n.contains(&format!("{MONTAGUE}: approve")), "{n}");
    assert!(!n.contains(VERONA), "verona was left for later: {n}");
    let sub = c.wait_for("montague's subscribe", WAIT, presence(MONTAGUE, CAPULET, "subscribe"));
    let ok = m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    assert_eq!(ok.id, sub.id, "the approval echoes the request's id");
    m.wait_for("reciprocal subscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribe"));
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);
    assert!(!c.pending_file(MONTAGUE).exists());
    let show: Value = serde_json::from_slice(&c.cli(&["--json", "show", MONTAGUE]).stdout).unwrap();
    assert!(show["entry"]["expires_at"].is_string(), "approved for 90d has an end: {show}");
    assert_eq!(c.state(VERONA), "none+pending-in", "later means later");
    assert!(c.pending_file(VERONA).exists());
    // (The evidence queries went to verona when it asked; no answer since.)
    let to_verona = |s: &Stanza| s.via_s2s() && s.name == "presence" && s.to.as_deref() == Some(VERONA);
    m.assert_none_for(QUIET, to_verona, "nothing to verona yet");
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(
        log.lines().any(|l| l.contains(" adhoc ") && l.contains("approve")),
        "actor adhoc missing:\n{log}"
    );

    // A new session offers what is still pending; deny verona there; then nothing is pending.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(form_peers(&r), [VERONA], "{r}");
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(VERONA, "deny")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains(&format!("{VERONA}: deny")), "{r}");
    m.wait_for("unsubscribed to verona", WAIT, presence(CAPULET, VERONA, "unsubscribed"));
    m.assert_none_for(QUIET, presence(CAPULET, VERONA, "subscribed"), "denied, not approved");
    c.wait_state(VERONA, "absent", WAIT);
    assert!(!c.pending_file(VERONA).exists());
    let log = String::from_utf8(c.cli(&["log", "--peer", VERONA]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" adhoc ") && l.contains("deny")), "{log}");
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains("No pending requests"), "{r}");

    // Cancel is honoured.
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("cancel"), &[], Some(&sid));
    assert_eq!(r["status"], "canceled", "{r}");
    admin.close();
}

#[test]
fn pending_form_approves_denies_and_leaves_for_later_by_a_real_client() {
    pending_form_approves_denies_and_leaves_for_later(Prosody::Default);
}

#[test]
fn pending_form_approves_denies_and_leaves_for_later_on_prosody_13() {
    pending_form_approves_denies_and_leaves_for_later(Prosody::V13);
}

/// A registered user who is not an admin (on 13: `prosody:registered`, and a provisioned
/// `prosody:member` too) sees none of the commands and is refused each one, with a forged
/// session and a filled-in form as well; nothing changes.
fn a_plain_user_is_refused(v: Prosody) {
    let Some(lab) = two_pending_on(v) else { return };
    let c = &lab.capulet;
    // The admin's client does see them: the list below is not empty for want of commands.
    let mut admin = admin_client(&lab);
    assert_eq!(admin.command_nodes(CAPULET).len(), 3);
    admin.close();

    create_user(c, "mia", "mia-secret", None); // 13: prosody:member (default_provisioned_role)
    let eve = eve_client(&lab);
    // The client logs in only with the password, and only to the server whose certificate it
    // was given (montague's is not capulet's: TLS verification is on, not switched off).
    let certs = lab.dir.join("certs");
    let e = XmppClient::login(c, &certs, EVE_USER, "not-eve-secret").err().expect("a wrong password");
    assert!(e.contains("authentication failed"), "{e}");
    let wrong_ca = certs.join(format!("{MONTAGUE}.crt"));
    let e = XmppClient::connect(EVE, EVE_PASSWORD, &c.ip, 5222, &wrong_ca, WAIT)
        .err()
        .expect("an unknown certificate");
    assert!(e.contains("certificate is not trusted"), "{e}");
    let mia = XmppClient::login(c, &lab.dir.join("certs"), "mia", "mia-secret").unwrap();
    for mut user in [eve, mia] {
        let who = user.jid.clone();
        let listed = user.command_nodes(CAPULET);
        assert!(NODES.iter().all(|n| !listed.iter().any(|l| l == n)), "{who} sees {listed:?}");
        for node in NODES {
            let info = user.info(CAPULET, node);
            assert_eq!(
                (&info["type"], &info["error"]),
                (&"error".into(), &"forbidden".into()),
                "{who} {node}: {info}"
            );
            let r = adhoc(&mut user, node, None, &[], None);
            assert_eq!(r["type"], "error", "{who} {node}: {r}");
            assert_eq!(r["error"], "forbidden", "{who} {node}: {r}");
            assert_eq!(r["error_type"], "auth", "{who} {node}: {r}");
            assert_eq!(r["status"], "canceled", "{who} {node}: {r}");
        }
        // ... even with a forged session and a filled-in form.
        for (node, fields) in [
            (NODE_PENDING, vec![(MONTAGUE, "approve"), (VERONA, "deny")]),
            (NODE_REQUEST, vec![("peer", STRANGER)]),
            (NODE_REVOKE, vec![("peer", MONTAGUE)]),
        ] {
            let r = adhoc(&mut user, node, Some("complete"), &fields, Some("forged"));
            assert_eq!(r["error"], "forbidden", "{who} {node}: {r}");
        }
        user.close();
    }
    nothing_decided(&lab, "a plain user must decide nothing");
    assert_eq!(c.state(STRANGER), "absent");
    c.assert_none_for(QUIET, |s| s.dir == "out" && s.to.as_deref() == Some(STRANGER), "no request to tybalt");
}

#[test]
fn a_plain_user_is_refused_by_the_server() {
    a_plain_user_is_refused(Prosody::Default);
}

#[test]
fn a_plain_user_is_refused_on_prosody_13() {
    a_plain_user_is_refused(Prosody::V13);
}

/// Forms a client did not get from this session decide nothing: a submission with changed
/// values and a peer the form never offered, the same submission replayed after its session
/// completed, a made-up session id, and a session of another command.
fn tampered_stale_and_replayed_forms_decide_nothing(v: Prosody) {
    let Some(lab) = two_pending_on(v) else { return };
    let (m, c) = (&lab.montague, &lab.capulet);
    let mut admin = admin_client(&lab);

    // Changed values ("approve " and "APPROVE" are not choices) and a peer not offered.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let sid = sessionid(&r);
    let tampered = [(MONTAGUE, "approve "), (VERONA, "APPROVE"), (STRANGER, "approve")];
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &tampered, Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains("Nothing decided"), "{r}");
    // Each unrecognised value is reported as such, never read as "later".
    for (peer, value) in &tampered[..2] {
        assert!(notes(&r).contains(&format!("{peer}: \"{value}\" is not approve, deny or later")), "{r}");
    }
    assert_eq!(c.state(STRANGER), "absent");
    nothing_decided(&lab, "a tampered form");

    // The same session again, now with a valid choice: it is over, so a fresh form comes back
    // (listing both still) and nothing is decided.
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "executing", "a completed session replayed: {r}");
    assert_eq!(form_peers(&r), [MONTAGUE, VERONA], "{r}");
    // A made-up session id: the same.
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(VERONA, "deny")], Some("made-up-session"));
    assert_eq!(r["status"], "executing", "{r}");
    nothing_decided(&lab, "a stale or made-up session");

    // A session of another command: "Request a server buddy"'s, submitted as the pending
    // form, and the pending form's submitted to "Request a server buddy" (which would send
    // a subscribe to a peer no request form was shown for).
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let request_sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&request_sid));
    assert_eq!(r["type"], "result", "{r}");
    assert_ne!(r["status"], "completed", "another command's session decided: {r}");
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let pending_sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", STRANGER)], Some(&pending_sid));
    assert_eq!(r["type"], "result", "{r}");
    assert_ne!(r["status"], "completed", "another command's session requested: {r}");
    nothing_decided(&lab, "a session of another command");
    assert_eq!(c.state(STRANGER), "absent");
    c.assert_none_for(
        QUIET,
        |s| s.dir == "out" && s.to.as_deref() == Some(STRANGER),
        "no subscribe to tybalt",
    );

    // The same client, a form of its own session: decided, exactly once, even replayed.
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert!(notes(&r).contains(&format!("{MONTAGUE}: approve")), "{r}");
    m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "executing", "{r}");
    assert_eq!(form_peers(&r), [VERONA], "{r}");
    std::thread::sleep(QUIET);
    assert_eq!(count(m, presence(CAPULET, MONTAGUE, "subscribed")), 1, "one approval, one subscribed");
    assert_eq!(c.state(VERONA), "none+pending-in");

    // A completed "Request a server buddy" replayed with another peer requests nothing.
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", STRANGER)], Some(&sid));
    assert_eq!(r["status"], "executing", "{r}");
    c.assert_none_for(
        QUIET,
        |s| s.dir == "out" && s.to.as_deref() == Some(STRANGER),
        "no subscribe to tybalt",
    );
    assert_eq!(c.state(STRANGER), "absent");
    admin.close();
}

#[test]
fn tampered_stale_and_replayed_forms_decide_nothing_by_a_real_client() {
    tampered_stale_and_replayed_forms_decide_nothing(Prosody::Default);
}

#[test]
fn tampered_stale_and_replayed_forms_decide_nothing_on_prosody_13() {
    tampered_stale_and_replayed_forms_decide_nothing(Prosody::V13);
}

fn request_and_revoke_fire_events(v: Prosody) {
    let Some(prefixes) = prefixes(v) else { return };
    let lab = Lab::with_server_trust(LabOptions { prefixes, ..LabOptions::default() });
    let (m, c) = (&lab.montague, &lab.capulet);
    let mut admin = admin_client(&lab);

    // "Request a server buddy": a form with one required text-single "peer".
    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let fields = list(&r["fields"]);
    let peer = fields.iter().find(|f| f["var"] == "peer").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(peer["type"], "text-single");
    assert_eq!(peer["required"], true);
    let sid = sessionid(&r);
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribe"), "the form alone sends nothing");

    // An invalid domain: completed with an error note, nothing sent.
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", "alice@montague.lit")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(list(&r["notes"]).iter().any(|n| n["type"] == "error"), "{r}");

    let r = adhoc(&mut admin, NODE_REQUEST, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REQUEST, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).contains(&format!("request {MONTAGUE}: done")), "{r}");
    let sub = m.wait_for("subscribe from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribe"));
    assert!(sub.id.is_some());
    m.wait_state(CAPULET, "none+pending-in", WAIT);
    c.wait_state(MONTAGUE, "none+pending-out", WAIT);
    assert_eq!(count(m, presence(CAPULET, MONTAGUE, "subscribe")), 1, "exactly one subscribe");
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" adhoc ") && l.contains("request")), "{log}");

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
    let r = adhoc(&mut admin, NODE_REVOKE, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
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
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" adhoc ") && l.contains("revoke")), "{log}");

    // Revoking again: an error note, no event.
    let r = adhoc(&mut admin, NODE_REVOKE, None, &[], None);
    let sid = sessionid(&r);
    let r = adhoc(&mut admin, NODE_REVOKE, Some("complete"), &[("peer", MONTAGUE)], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    assert!(notes(&r).starts_with("error: ") && notes(&r).contains("not in the roster"), "{r}");
    std::thread::sleep(QUIET);
    assert_eq!(count(c, event("server-trust/removed", MONTAGUE)), 1, "no second removed event");
    admin.close();
}

#[test]
fn request_and_revoke_fire_events_by_a_real_client() {
    request_and_revoke_fire_events(Prosody::Default);
}

#[test]
fn request_and_revoke_fire_events_on_prosody_13() {
    request_and_revoke_fire_events(Prosody::V13);
}

/// Two admins at once: one opens "Pending server buddies", the other denies with the CLI,
/// then the form comes back with approve. The deny, recorded first, stands: the form gets
/// an error note naming it, and the peer gets `unsubscribed`, never `subscribed`.
fn a_form_submitted_after_another_admin_decided_is_refused(v: Prosody) {
    let Some(lab) = two_pending_on(v) else { return };
    let (m, c) = (&lab.montague, &lab.capulet);
    let mut admin = admin_client(&lab);
    let r = adhoc(&mut admin, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let sid = sessionid(&r);
    c.cli(&["deny", MONTAGUE]);
    let r = adhoc(&mut admin, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert_eq!(r["status"], "completed", "{r}");
    let errors: Vec<Value> = list(&r["notes"]).into_iter().filter(|n| n["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{r}");
    let text = errors[0]["text"].as_str().unwrap();
    assert!(text.contains("`deny` by cli at ") && text.contains("first decision stands"), "{text}");
    m.wait_for("unsubscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "unsubscribed"));
    m.assert_none_for(QUIET, presence(CAPULET, MONTAGUE, "subscribed"), "the later approve must not win");
    c.wait_state(MONTAGUE, "absent", WAIT);
    assert_eq!(is_trusted(c, MONTAGUE, None), "false");
    let log = String::from_utf8(c.cli(&["log", "--peer", MONTAGUE]).stdout).unwrap();
    assert!(log.lines().any(|l| l.contains(" cli ") && l.contains("deny recorded")), "{log}");
    assert!(!log.lines().any(|l| l.contains("approve")), "{log}");
    admin.close();
}

#[test]
fn a_form_submitted_after_another_admin_decided_is_refused_with_an_error_note() {
    a_form_submitted_after_another_admin_decided_is_refused(Prosody::Default);
}

#[test]
fn a_form_submitted_after_another_admin_decided_is_refused_on_prosody_13() {
    a_form_submitted_after_another_admin_decided_is_refused(Prosody::V13);
}

/// Prosody 13 keeps roles besides the config's `admins`: a user given prosody:admin with
/// `user:set_role` runs the commands like a configured admin, and is told of a new request
/// (on the old code only the config's admins were told: the role's admin could decide on a
/// request nobody told them of).
#[test]
fn an_admin_by_role_runs_the_commands_and_is_told_of_requests_on_prosody_13() {
    let Some(prefixes) = prefixes(Prosody::Only13) else { return };
    let lab = Lab::with_server_trust(LabOptions { prefixes, ..LabOptions::default() });
    let (m, c) = (&lab.montague, &lab.capulet);
    create_user(c, "nurse", "nurse-secret", None);
    let nurse_jid = format!("nurse@{CAPULET}");
    let out =
        c.shell_ok(&format!("user:set_role({}, {}, 'prosody:admin')", lua_str(&nurse_jid), lua_str(CAPULET)));
    assert!(!out.contains("Error"), "{out}");
    let mut nurse = XmppClient::login(c, &lab.dir.join("certs"), "nurse", "nurse-secret").unwrap();
    assert_eq!(nurse.command_nodes(CAPULET).len(), 3, "the role's admin sees the commands");

    m.cli(&["request", CAPULET]);
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    for admin in [ADMIN, nurse_jid.as_str()] {
        c.wait_for(&format!("the prompt to {admin}"), WAIT, |s| {
            s.name == "message"
                && s.to.as_deref() == Some(admin)
                && s.body.as_deref().is_some_and(|b| b.contains(MONTAGUE))
        });
    }
    let r = adhoc(&mut nurse, NODE_PENDING, None, &[], None);
    assert_eq!(form_peers(&r), [MONTAGUE], "{r}");
    let sid = sessionid(&r);
    let r = adhoc(&mut nurse, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
    assert!(notes(&r).contains(&format!("{MONTAGUE}: approve")), "{r}");
    m.wait_for("subscribed from capulet", WAIT, presence(CAPULET, MONTAGUE, "subscribed"));
    c.wait_state(MONTAGUE, "both", WAIT);
    nurse.close();
}
