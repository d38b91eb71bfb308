//! Evidence at approval time on ejabberd (issue 15, item 2), between real servers: ejabberd
//! 23.01 (`verona.lit`) with mod_server_trust and this sidecar, and Prosody 0.12 whose hosts
//! publish XEP-0157 contact addresses (`server_contact_info`) and answer XEP-0092
//! (`version`), as verona.lit does (mod_disco `server_info`, mod_version): the ejabberd lab's
//! `contact_info` (crates/lab/src/ejabberd.rs). ejabberd runs `federation: buddies`, so the
//! queries and their answers must pass between the host JIDs of servers that are not buddies.
//! ejabberd must be installed (`bash scripts/ejabberd-setup.sh`); without it the test fails
//! saying so.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA, contact_addresses};
use server_trust_lab::{MONTAGUE, Stanza, TrustAdmin};

const T: Duration = Duration::from_secs(30);
/// Another Prosody host, presenting montague.lit's certificate (the lab's peer has one).
const STRANGER: &str = "stranger.lit";

fn lab() -> EjabberdLab {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.prosody_hosts = vec![STRANGER.into()];
    o.federation = "buddies".into();
    o.contact_info = true;
    EjabberdLab::start(o)
}

/// `peer`'s entry in `server-trust --json pending` on verona, once its evidence holds both
/// answers (or says why not).
fn wait_evidence(lab: &EjabberdLab, peer: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v: Value = serde_json::from_slice(&lab.sidecar.cli(&["--json", "pending"]).stdout).unwrap();
        if let Some(req) = v.as_array().unwrap().iter().find(|r| r["peer"] == peer) {
            let ev = &req["evidence"];
            let has = |field: &str, short: &str| !ev[field].is_null() || !ev["unanswered"][short].is_null();
            if has("contacts", "disco#info") && has("software", "version") {
                return req.clone();
            }
        }
        assert!(t0.elapsed() < T, "no evidence for {peer} after {T:?}: {v}\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }
}

fn contacts(host: &str) -> Value {
    let mut m = serde_json::Map::new();
    for (kind, addr) in contact_addresses(host) {
        m.insert(kind.into(), Value::from(vec![addr]));
    }
    Value::Object(m)
}

#[test]
fn a_prosody_peers_request_on_ejabberd_carries_its_contacts_software_and_stream() {
    let lab = lab();
    let p = lab.prosody();
    // montague.lit's certificate is the one ejabberd trusts (s2s_cafile) and names it;
    // stranger.lit presents the same certificate, which does not name it: dialback.
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    p.admin(STRANGER).cli(&["request", VERONA]);
    let req = wait_evidence(&lab, MONTAGUE);
    let ev = &req["evidence"];
    assert_eq!(ev["contacts"], contacts(MONTAGUE), "{req}");
    let software = ev["software"].as_str().unwrap_or_default();
    assert!(software.starts_with("Prosody 0.12"), "{req}");
    assert_eq!(ev["auth"], "certificate", "{req}");
    assert!(ev["cert_issuer"].as_str().is_some_and(|i| i.contains(MONTAGUE)), "{req}");
    assert!(ev["cert_expires"].is_string(), "{req}");
    assert!(ev.get("unanswered").is_none(), "{req}");
    let other = wait_evidence(&lab, STRANGER);
    assert_eq!(other["evidence"]["auth"], "dialback", "{other}");
    assert_eq!(other["evidence"]["contacts"], contacts(STRANGER), "{other}");

    // The same in `show` (for people) and the sidecar's HTTP view.
    let shown = lab.sidecar.cli_text(&["show", MONTAGUE]);
    for (_, addr) in contact_addresses(MONTAGUE) {
        assert!(shown.contains(&addr), "{shown}");
    }
    assert!(shown.contains(software), "{shown}");
    let http = lab.sidecar.admin_api("GET", &format!("/v1/hosts/{VERONA}/pending"), "");
    assert_eq!(http.status, 200, "{}", http.body);
    let pending: Value = serde_json::from_str(&http.body).unwrap();
    let mine = pending.as_array().unwrap().iter().find(|r| r["peer"] == MONTAGUE).unwrap();
    assert_eq!(mine["evidence"], req["evidence"]);

    // verona's admins got the summary in chat (the sidecar's send_message; ejabberd logs it).
    lab.ejabberd.wait_log("the evidence notice sent to verona's admin", T, |l| {
        l.contains("API call send_message")
            && l.contains("Evidence on the server buddy request from montague.lit")
            && l.contains("xmpp:admin@montague.lit")
    });

    // Gathering decided nothing: both still wait for the admin, and are strangers.
    for peer in [MONTAGUE, STRANGER] {
        assert_eq!(lab.sidecar.state(peer), "none+pending-in");
        assert!(!lab.ejabberd.is_trusted(peer, None));
    }
}

/// The reverse direction, for the Prosody side's evidence: verona.lit answers a stranger's
/// disco#info and version queries to its host JID with its contact addresses and software,
/// through `federation: buddies`; a user of the stranger is still refused.
#[test]
fn ejabberd_answers_a_strangers_host_queries_with_its_contacts_and_version() {
    let lab = lab();
    let p = lab.prosody();
    let ask = |from: &str, id: &str, ns: &str| {
        p.inject(&format!("<iq type='get' from='{from}' to='{VERONA}' id='{id}'><query xmlns='{ns}'/></iq>"))
    };
    let answer =
        |id: &'static str| move |s: &Stanza| s.host == STRANGER && s.id.as_deref() == Some(id) && s.via_s2s();
    ask(STRANGER, "ev-d1", "http://jabber.org/protocol/disco#info");
    let disco = p.wait_for("verona's disco#info", T, answer("ev-d1"));
    assert!(disco.is_type("result"), "{}", disco.xml);
    for (kind, addr) in contact_addresses(VERONA) {
        assert!(
            disco.xml.contains(&format!("{kind}-addresses")) && disco.xml.contains(&addr),
            "{}",
            disco.xml
        );
    }
    ask(STRANGER, "ev-v1", "jabber:iq:version");
    let version = p.wait_for("verona's version", T, answer("ev-v1"));
    assert!(version.is_type("result") && version.xml.contains("<name>ejabberd</name>"), "{}", version.xml);
    // Not a host-to-host query: refused as before.
    ask(&format!("romeo@{STRANGER}"), "ev-d2", "http://jabber.org/protocol/disco#info");
    let refused = p.wait_for("the refusal of a user's query", T, answer("ev-d2"));
    assert!(refused.is_type("error") && refused.xml.contains("policy-violation"), "{}", refused.xml);
}

/// The other way round, with the Prosody module's own gathering: verona's admin asks
/// montague.lit, whose pending request shows verona's contact addresses and ejabberd's
/// version, asked for through verona's `federation: buddies`.
#[test]
fn ejabberds_request_on_prosody_carries_veronas_contacts_and_software() {
    let lab = lab();
    let p = lab.prosody();
    lab.sidecar.cli(&["request", MONTAGUE]);
    let t0 = Instant::now();
    let req = loop {
        let v: Value = serde_json::from_slice(&p.admin(MONTAGUE).cli(&["--json", "pending"]).stdout).unwrap();
        let found = v.as_array().unwrap().iter().find(|r| r["peer"] == VERONA).cloned();
        if let Some(r) =
            found.filter(|r| !r["evidence"]["contacts"].is_null() && !r["evidence"]["software"].is_null())
        {
            break r;
        }
        assert!(t0.elapsed() < T, "no evidence about verona on montague.lit: {v}\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(req["evidence"]["contacts"], contacts(VERONA), "{req}");
    assert!(req["evidence"]["software"].as_str().unwrap().starts_with("ejabberd 23.01"), "{req}");
    assert_eq!(p.admin(MONTAGUE).state(VERONA), "none+pending-in");
}

/// A peer that publishes nothing and does not answer version queries (Prosody without
/// `server_contact_info` and `version`): shown as such, not as unknown, and not as empty.
#[test]
fn what_a_peer_does_not_publish_is_shown_as_missing() {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.federation = "buddies".into();
    let lab = EjabberdLab::start(o);
    lab.prosody().admin(MONTAGUE).cli(&["request", VERONA]);
    let req = wait_evidence(&lab, MONTAGUE);
    let ev = &req["evidence"];
    assert_eq!(ev["contacts"], serde_json::json!({}), "{req}");
    assert!(ev["software"].is_null(), "{req}");
    assert_eq!(ev["unanswered"]["version"], "error: service-unavailable", "{req}");
    let shown = lab.sidecar.cli_text(&["show", MONTAGUE]);
    assert!(shown.contains("none published") && shown.contains("service-unavailable"), "{shown}");
}
