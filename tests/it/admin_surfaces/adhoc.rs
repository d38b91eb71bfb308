//! XEP-0050 ad-hoc commands for admins: the pending form, request and revoke; others are refused.

use super::*;
use crate::support::QUIET;

#[test]
fn pending_form_approve_later_and_forbidden() {
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
fn request_and_revoke_fire_events() {
    let lab = Lab::server_trust();
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

/// Two admins at once: one opens "Pending server buddies", the other denies with the CLI,
/// then the form comes back with approve. The deny, recorded first, stands: the form gets
/// an error note naming it, and the peer gets `unsubscribed`, never `subscribed`.
#[test]
fn a_form_submitted_after_another_admin_decided_is_refused_with_an_error_note() {
    let lab = two_pending();
    let (m, c) = (&lab.montague, &lab.capulet);
    let r = adhoc(c, ADMIN, NODE_PENDING, None, &[], None);
    assert_eq!(r["status"], "executing", "{r}");
    let sid = r["sessionid"].as_str().unwrap().to_string();
    c.cli(&["deny", MONTAGUE]);
    let r = adhoc(c, ADMIN, NODE_PENDING, Some("complete"), &[(MONTAGUE, "approve")], Some(&sid));
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
}
