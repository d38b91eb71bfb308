//! Evidence for new requests: queries asked once per new request, answers kept in the
//! pending file while it waits, unasked replies ignored, the admin's decision left alone.

use super::*;
use crate::evidence::{DISCO_INFO, VERSION};
use crate::store::Decision;
use crate::{Domain, Error};

const DISCO: &str = "<iq type='result' from='montague.lit' to='capulet.lit' id='q1'>\
    <query xmlns='http://jabber.org/protocol/disco#info'><x xmlns='jabber:x:data' type='result'>\
    <field var='FORM_TYPE'><value>http://jabber.org/network/serverinfo</value></field>\
    <field var='abuse-addresses'><value>mailto:abuse@montague.lit</value></field></x></query></iq>";
const SOFTWARE: &str = "<iq type='result'><query xmlns='jabber:iq:version'><name>Prosody</name>\
    <version>0.12.3</version></query></iq>";

fn engine(root: &std::path::Path) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..Config::default() }).unwrap()
}

fn queries(actions: &[Action]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Query { peer, ns } => Some((peer.as_str(), ns.as_str())),
            _ => None,
        })
        .collect()
}

fn notices(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| if let Action::Notify { text, .. } = a { Some(text.as_str()) } else { None })
        .collect()
}

#[test]
fn a_new_request_is_recorded_then_queried_and_answers_fill_its_file() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.session("montague.lit", "dialback", None).unwrap();
    let acts = e.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    assert_eq!(queries(&acts), [("montague.lit", DISCO_INFO), ("montague.lit", VERSION)]);
    let prompt = notices(&acts)[0];
    assert!(prompt.contains("authenticated by: dialback only"), "{prompt}");
    // The request is on disk before any answer.
    let file = |e: &Engine| e.store().read_pending(&Domain::new("montague.lit").unwrap()).unwrap().unwrap();
    assert_eq!(file(&e).evidence.auth, Some(crate::evidence::Auth::Dialback));
    assert!(file(&e).evidence.contacts.is_none());

    // A repeat asks nothing again.
    assert!(queries(&e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap()).is_empty());

    let first = e.answer("montague.lit", DISCO_INFO, Some(DISCO)).unwrap();
    assert!(notices(&first).is_empty(), "no notice before the last answer");
    assert_eq!(file(&e).evidence.contacts.unwrap()["abuse"], ["mailto:abuse@montague.lit"]);
    let last = e.answer("montague.lit", VERSION, Some(SOFTWARE)).unwrap();
    let n = notices(&last);
    assert_eq!(n.len(), 1);
    assert!(
        n[0].contains("contacts: abuse mailto:abuse@montague.lit")
            && n[0].contains("software: Prosody 0.12.3"),
        "{}",
        n[0]
    );
    assert_eq!(file(&e).evidence.software.as_deref(), Some("Prosody 0.12.3"));
}

#[test]
fn replies_nobody_asked_for_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    // No request: nothing asked.
    assert!(e.answer("montague.lit", VERSION, Some(SOFTWARE)).unwrap().is_empty());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let peer = Domain::new("montague.lit").unwrap();
    // A query the engine never sends, and a second answer to one already answered.
    assert!(e.answer("montague.lit", "jabber:iq:last", Some(SOFTWARE)).unwrap().is_empty());
    e.answer("montague.lit", VERSION, None).unwrap();
    e.answer("montague.lit", VERSION, Some(SOFTWARE)).unwrap();
    let req = e.store().read_pending(&peer).unwrap().unwrap();
    assert_eq!(req.evidence.software, None);
    assert_eq!(req.evidence.unanswered["version"], "no answer within 10 s");
    assert!(e.answer("not a domain", VERSION, None).is_err());
}

#[test]
fn an_admins_decision_is_never_rewritten_by_an_answer() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let peer = Domain::new("montague.lit").unwrap();
    e.store().set_decision(&peer, Decision::Approve, Actor::Cli).unwrap();
    let before = std::fs::read(e.store().pending_path(&peer)).unwrap();
    e.answer("montague.lit", DISCO_INFO, Some(DISCO)).unwrap();
    assert_eq!(std::fs::read(e.store().pending_path(&peer)).unwrap(), before);
    // Carried out at the next poll as recorded.
    e.poll().unwrap();
    assert!(e.state("montague.lit").unwrap().from());
}

#[test]
fn stream_facts_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    assert!(matches!(e.session("montague.lit", "trust-me", None), Err(Error::UnknownName { .. })));
    assert!(e.session("alice@montague.lit", "dialback", None).is_err());
    assert!(e.session("capulet", "dialback", None).is_err());
}

#[test]
fn buddies_mode_lets_the_handshake_and_the_queries_through() {
    use crate::engine::Federation;
    assert!(Federation::host_stanza("presence", Some("subscribe"), None));
    assert!(Federation::host_stanza("iq", Some("get"), Some(DISCO_INFO)));
    assert!(Federation::host_stanza("iq", Some("get"), Some(VERSION)));
    assert!(Federation::host_stanza("iq", Some("result"), None));
    assert!(Federation::host_stanza("iq", Some("error"), Some("anything")));
    assert!(!Federation::host_stanza("iq", Some("set"), Some(DISCO_INFO)));
    assert!(!Federation::host_stanza("iq", Some("get"), Some("jabber:iq:roster")));
    assert!(!Federation::host_stanza("iq", None, None));
    assert!(!Federation::host_stanza("message", Some("chat"), None));
}
