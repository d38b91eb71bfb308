//! Evidence at approval time between real Prosody servers: montague.lit publishes XEP-0157
//! contact addresses; when it asks capulet.lit, capulet's admin sees them, with montague's
//! software, how its stream was authenticated and its certificate, in the pending file, the
//! CLI and a chat notice. The queries go on the wire from capulet's host JID, and pass a
//! buddies-only capulet for a stranger, whose messages stay refused.

use std::time::{Duration, Instant};

use serde_json::Value;
use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, Stanza, TrustAdmin, VERONA};

use crate::support::WAIT;

const CONTACTS: &str = r#"contact_info = {
	abuse = { "mailto:abuse@montague.lit" };
	security = { "xmpp:security@montague.lit", "https://montague.lit/security" };
}"#;

/// capulet's pending request from `peer` once its evidence has `software` (both answers in).
fn gathered(c: &impl TrustAdmin, peer: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let out = c.cli(&["show", peer, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let ev = &v["pending"]["evidence"];
        if ev["software"].is_string() || ev["unanswered"]["version"].is_string() {
            return v;
        }
        assert!(t0.elapsed() < WAIT * 2, "no evidence for {peer} in time: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn query(from: &'static str, to: &'static str, ns: &'static str) -> impl Fn(&Stanza) -> bool {
    move |s| {
        s.name == "iq"
            && s.is_type("get")
            && s.via_s2s()
            && s.from.as_deref() == Some(from)
            && s.to.as_deref() == Some(to)
            && s.xml.contains(ns)
    }
}

#[test]
fn a_request_shows_the_peers_contacts_software_and_stream() {
    let lab = Lab::start(LabOptions {
        server_trust: true,
        extra_global_for: vec![(MONTAGUE.into(), CONTACTS.into())],
        ..LabOptions::default()
    });
    let (m, c) = (&lab.montague, &lab.capulet);
    m.cli(&["request", CAPULET]);
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);

    // On the wire: capulet's host asked montague's host, after recording the request.
    m.wait_for(
        "disco#info from capulet",
        WAIT,
        query(CAPULET, MONTAGUE, "http://jabber.org/protocol/disco#info"),
    );
    m.wait_for("version from capulet", WAIT, query(CAPULET, MONTAGUE, "jabber:iq:version"));

    let v = gathered(c, MONTAGUE);
    let ev = &v["pending"]["evidence"];
    assert_eq!(ev["contacts"]["abuse"], serde_json::json!(["mailto:abuse@montague.lit"]), "{v}");
    assert_eq!(
        ev["contacts"]["security"],
        serde_json::json!(["xmpp:security@montague.lit", "https://montague.lit/security"]),
        "{v}"
    );
    assert!(ev["software"].as_str().unwrap_or("").starts_with("Prosody "), "{v}");
    // The lab's certificates are self-signed: dialback authenticated the stream.
    assert_eq!(ev["auth"], "dialback", "{v}");
    assert_eq!(ev["cert_issuer"], format!("CN={MONTAGUE}"), "{v}");
    assert!(ev["cert_expires"].as_str().is_some_and(|e| e.ends_with('Z')), "{v}");

    // The file the admin edits says it too, and so does `show` for people.
    let file = std::fs::read_to_string(c.pending_file(MONTAGUE)).unwrap();
    assert!(file.contains("[evidence") && file.contains("mailto:abuse@montague.lit"), "{file}");
    let show = c.cli_text(&["show", MONTAGUE]);
    assert!(show.contains("authenticated by: dialback only"), "{show}");
    assert!(
        show.contains("contacts: abuse mailto:abuse@montague.lit; security xmpp:security@montague.lit"),
        "{show}"
    );
    assert!(show.contains("asked once: first "), "{show}");
    let pending = c.cli_text(&["pending"]);
    assert!(pending.contains("software: Prosody "), "{pending}");

    // The admins were told what is known once the answers were in.
    let notice = c.wait_for("the evidence notice", WAIT, |s| {
        s.name == "message"
            && s.to.as_deref() == Some("admin@capulet.lit")
            && s.body
                .as_deref()
                .is_some_and(|b| b.starts_with("Evidence on the server buddy request from montague.lit"))
    });
    assert!(notice.body.unwrap().contains("mailto:abuse@montague.lit"));

    // Evidence decides nothing: still pending, and no subscribed went out.
    assert_eq!(c.state(MONTAGUE), "none+pending-in");
    assert!(!m.received().iter().any(|s| s.via_s2s() && s.name == "presence" && s.is_type("subscribed")));
}

#[test]
fn a_buddies_only_host_still_learns_about_a_stranger() {
    let lab = Lab::start(LabOptions {
        server_trust: true,
        verona: true,
        extra_global_for: vec![(CAPULET.into(), "server_trust_federation = \"buddies\"".into())],
        ..LabOptions::default()
    });
    let (c, v) = (&lab.capulet, lab.verona.as_ref().unwrap());
    v.cli(&["request", CAPULET]);
    c.wait_state(VERONA, "none+pending-in", WAIT);
    let got = gathered(c, VERONA);
    let ev = &got["pending"]["evidence"];
    assert!(ev["software"].as_str().unwrap_or("").starts_with("Prosody "), "{got}");
    // Debian's default: the admins, as xmpp: addresses.
    assert_eq!(ev["contacts"]["admin"], serde_json::json!(["xmpp:admin@verona.lit"]), "{got}");

    // A message still does not pass, nor an iq that is not an evidence query.
    v.inject("<message type='chat' from='romeo@verona.lit' to='juliet@capulet.lit' id='x1'><body>hi</body></message>");
    v.wait_for("the refusal", WAIT, |s| {
        s.id.as_deref() == Some("x1") && s.is_type("error") && s.xml.contains("policy-violation")
    });
    v.inject(
        "<iq type='get' from='verona.lit' to='capulet.lit' id='x2'><query xmlns='jabber:iq:last'/></iq>",
    );
    v.wait_for("the refused iq", WAIT, |s| {
        s.id.as_deref() == Some("x2") && s.is_type("error") && s.xml.contains("policy-violation")
    });
}
