//! Buddies-only federation on Prosody: three real servers over s2s, capulet.lit guarded with
//! `server_trust_federation = "buddies"`, montague.lit becoming its buddy and verona.lit a
//! stranger. Assertions are on what each server received.

use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, Stanza, TrustAdmin, VERONA, presence_from};

use crate::support::{QUIET, WAIT};

fn guarded(extra: &str) -> Lab {
    Lab::start(LabOptions {
        server_trust: true,
        verona: true,
        extra_global_for: vec![(CAPULET.into(), format!("server_trust_federation = \"buddies\"\n{extra}"))],
        ..LabOptions::default()
    })
}

fn message(from: &str, to: &str, id: &str) -> String {
    format!("<message type='chat' from='{from}' to='{to}' id='{id}'><body>{id}</body></message>")
}

fn got(id: &'static str) -> impl Fn(&Stanza) -> bool {
    move |s| s.name == "message" && s.id.as_deref() == Some(id) && s.via_s2s()
}

fn refused(id: &'static str) -> impl Fn(&Stanza) -> bool {
    move |s| got(id)(s) && s.is_type("error") && s.xml.contains("policy-violation")
}

#[test]
fn a_stranger_cannot_message_a_guarded_host_but_can_ask_to_become_a_buddy() {
    let lab = guarded("");
    let (c, v) = (&lab.capulet, lab.verona.as_ref().unwrap());

    // verona's user writes to capulet's user: refused with a policy-violation error, never
    // delivered to any handler on capulet.
    v.inject(&message("romeo@verona.lit", "juliet@capulet.lit", "v1"));
    v.wait_for("the refusal", WAIT, refused("v1"));
    c.assert_none_for(QUIET, |s| s.name == "message" && s.via_s2s(), "a stranger's message reached capulet");
    // capulet's user writes to verona: never sent; the user gets the error.
    c.inject(&message("juliet@capulet.lit", "romeo@verona.lit", "c1"));
    v.assert_none_for(QUIET, |s| s.id.as_deref() == Some("c1"), "capulet sent to a stranger");
    let back =
        c.wait_for("the error to the sender", WAIT, |s| s.id.as_deref() == Some("c1") && s.is_type("error"));
    assert!(back.xml.contains("policy-violation"), "{}", back.xml);

    // The stranger can still ask; the guarded host never auto-approves.
    v.cli(&["request", CAPULET]);
    c.wait_state(VERONA, "none+pending-in", WAIT);
    assert!(c.pending_file(VERONA).exists());
    v.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "capulet must not auto-approve");
}

#[test]
fn approval_opens_federation_and_a_revoke_closes_it_and_its_streams() {
    let lab = guarded("");
    let (m, c) = (&lab.montague, &lab.capulet);
    m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "m0"));
    m.wait_for("refused before approval", WAIT, refused("m0"));

    m.cli(&["request", CAPULET]);
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    c.cli(&["approve", MONTAGUE]);
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);

    // Both ways now.
    m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "m1"));
    c.wait_for("montague's message", WAIT, got("m1"));
    c.inject(&message("juliet@capulet.lit", "romeo@montague.lit", "c1"));
    m.wait_for("capulet's message", WAIT, got("c1"));

    // A revoke: montague is told, capulet closes its streams with montague at once ...
    c.cli(&["revoke", MONTAGUE]);
    m.wait_for("unsubscribed", WAIT, presence_from(CAPULET, "unsubscribed"));
    let closed = |log: &str| {
        log.contains("policy-violation") && log.contains("No longer a server buddy of capulet.lit")
    };
    let t0 = std::time::Instant::now();
    while !closed(&std::fs::read_to_string(&m.log).unwrap_or_default()) {
        assert!(t0.elapsed() < WAIT, "montague's stream from capulet was not closed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // ... and messages stop both ways.
    m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "m2"));
    m.wait_for("refused after the revoke", WAIT, refused("m2"));
    c.assert_none_for(QUIET, |s| s.id.as_deref() == Some("m2") && s.via_s2s(), "delivered after the revoke");
    c.inject(&message("juliet@capulet.lit", "romeo@montague.lit", "c2"));
    m.assert_none_for(QUIET, |s| s.id.as_deref() == Some("c2"), "capulet sent to montague after the revoke");
}

#[test]
fn a_group_narrows_federation_to_the_buddies_in_it() {
    let lab = guarded("server_trust_federation_group = \"federate\"\n");
    let (m, c) = (&lab.montague, &lab.capulet);
    m.cli(&["request", CAPULET]);
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    c.cli(&["approve", MONTAGUE]);
    c.wait_state(MONTAGUE, "both", WAIT);
    // A buddy outside the group is refused ...
    m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "g1"));
    m.wait_for("refused outside the group", WAIT, refused("g1"));
    // ... and federates once in it.
    c.cli(&["groups", MONTAGUE, "--set", "federate"]);
    let t0 = std::time::Instant::now();
    loop {
        m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "g2"));
        if c.received().iter().any(got("g2")) {
            break;
        }
        assert!(t0.elapsed() < WAIT, "never delivered once in the group");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn a_bad_federation_value_fails_closed() {
    let lab = guarded("server_trust_federation_group = \"a,b\"\n");
    let (m, c) = (&lab.montague, &lab.capulet);
    let console = std::fs::read_to_string(&c.console_log).unwrap();
    assert!(console.contains("federation_group"), "{console}");
    m.inject(&message("romeo@montague.lit", "juliet@capulet.lit", "b1"));
    m.wait_for("refused", WAIT, refused("b1"));
}
