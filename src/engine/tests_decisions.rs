//! The first recorded decision wins (issue 14, defect 1): a later act that disagrees,
//! through any driver, is refused and names the earlier decision; an editor saving over a
//! recorded decision, or after the answer went out, changes nothing.

use std::fs;

use super::api::MAX_STANZA_ID;
use super::*;
use crate::admin;
use crate::store::Decision;
use crate::{Domain, Error, Subscription};

fn engine(root: &std::path::Path) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..Config::default() }).unwrap()
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn sent(actions: &[Action]) -> Vec<PresenceKind> {
    actions
        .iter()
        .filter_map(|a| if let Action::Send { kind, .. } = a { Some(*kind) } else { None })
        .collect()
}

fn events(e: &Engine) -> Vec<String> {
    e.store()
        .read_audit()
        .unwrap()
        .into_iter()
        .map(|r| format!("{} by {}", r.event, r.actor.as_str()))
        .collect()
}

/// The CLI denies; before the server's poll, an engine approve (ad-hoc form, C host, HTTP)
/// comes: refused, naming the deny, who and when; the poll then carries out the deny.
#[test]
fn an_engine_approve_after_a_recorded_deny_is_refused_and_the_deny_goes_out() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    admin::decide(e.store(), &d("montague.lit"), Decision::Deny, Actor::Cli).unwrap();
    for actor in [Actor::Adhoc, Actor::Api, Actor::Engine] {
        let err = e.approve("montague.lit", actor).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::AlreadyDecided {
                    decision: Decision::Deny,
                    by: Some(Actor::Cli),
                    at: Some(_),
                    applied: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("`deny` by cli at 20") && text.contains("first decision stands"), "{text}");
    }
    assert!(!e.is_trusted("montague.lit", None));
    let acts = e.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Unsubscribed], "{acts:?}");
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    assert!(!e.is_trusted("montague.lit", None));
    let log = events(&e);
    assert!(log.contains(&"deny recorded by cli".to_string()), "{log:?}");
    assert!(log.contains(&"deny by cli".to_string()), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("approve")), "{log:?}");
    // The same decision again changes nothing and is no error.
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    admin::decide(e.store(), &d("verona.lit"), Decision::Approve, Actor::Cli).unwrap();
    admin::decide(e.store(), &d("verona.lit"), Decision::Approve, Actor::Api).unwrap();
    e.approve("verona.lit", Actor::Adhoc).unwrap();
    assert!(e.is_trusted("verona.lit", None));
}

/// An engine approve carried out first: a CLI deny afterwards is refused and says so.
#[test]
fn a_cli_deny_after_an_approval_is_refused_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.approve("montague.lit", Actor::Adhoc).unwrap();
    let err = admin::decide(e.store(), &d("montague.lit"), Decision::Deny, Actor::Cli).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::AlreadyDecided { decision: Decision::Approve, by: Some(Actor::Adhoc), applied: true, .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("`approve` by adhoc at"), "{err}");
    // And through the engine (C, Lua, HTTP) the same.
    let err = e.deny("montague.lit", Actor::Api).unwrap_err();
    assert!(matches!(err, Error::AlreadyDecided { .. }), "{err:?}");
    assert!(e.is_trusted("montague.lit", None));
    // A new request starts afresh: nothing decided yet.
    e.revoke("montague.lit", Actor::Cli).unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    admin::decide(e.store(), &d("montague.lit"), Decision::Deny, Actor::Cli).unwrap();
}

/// An editor had the file open before the CLI recorded a deny and saves `approve` over it:
/// the deny recorded first is carried out, and the admins are told.
#[test]
fn an_edit_saved_over_a_recorded_decision_does_not_override_it() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = e.store().pending_path(&d("montague.lit"));
    let opened = fs::read_to_string(&path).unwrap();
    admin::decide(e.store(), &d("montague.lit"), Decision::Deny, Actor::Cli).unwrap();
    fs::write(&path, opened.replace("decision = \"pending\"", "decision = \"approve\"")).unwrap();
    let acts = e.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Unsubscribed], "{acts:?}");
    assert!(!e.is_trusted("montague.lit", None));
    assert!(
        acts.iter().any(|a| matches!(a, Action::Notify { text, .. } if text.contains("saved over an earlier decision") && text.contains("`deny` by cli"))),
        "{acts:?}"
    );
    assert!(events(&e).contains(&"deny by cli".to_string()));
}

/// The answer went out and the file was removed; an editor then saves the old file with
/// the other decision: not taken for a recovered request, the answer stands.
#[test]
fn a_decided_file_saved_after_the_answer_went_out_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = e.store().pending_path(&d("montague.lit"));
    let opened = fs::read_to_string(&path).unwrap();
    e.deny("montague.lit", Actor::Adhoc).unwrap();
    assert!(!path.exists());
    fs::write(&path, opened.replace("decision = \"pending\"", "decision = \"approve\"")).unwrap();
    let acts = e.poll().unwrap();
    assert!(sent(&acts).is_empty(), "{acts:?}");
    assert!(!e.is_trusted("montague.lit", None));
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    assert!(!path.exists());
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("`deny` by adhoc"))),
        "{acts:?}"
    );
}

/// Smaller defects of the second hostile pass (issue 14, defect 8): single-label peers and
/// oversized stanza ids.
#[test]
fn single_label_peers_are_refused_and_long_ids_are_not_kept() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    for name in ["com", "localhost", "LOCALHOST."] {
        for r in [
            e.inbound(name, PresenceKind::Subscribe, None),
            e.request(name, Actor::Cli),
            e.approve(name, Actor::Cli),
        ] {
            let err = r.unwrap_err();
            assert!(err.to_string().contains("single label"), "{name}: {err}");
        }
        let err =
            admin::queue(e.store(), &d(name), crate::store::QueuedAct::Request, Actor::Cli).unwrap_err();
        assert!(err.to_string().contains("single label"), "{name}: {err}");
    }
    assert!(e.store().pending_peers().is_empty() && e.roster().is_empty());
    // A served host may still have one label (Prosody ships VirtualHost "localhost").
    let t2 = tempfile::tempdir().unwrap();
    Engine::open(t2.path(), "localhost", Config { watch: false, ..Config::default() }).unwrap();

    let long = "x".repeat(100 * 1024);
    let acts = e.inbound("montague.lit", PresenceKind::Subscribe, Some(&long)).unwrap();
    assert!(acts.iter().all(|a| !matches!(a, Action::Send { id: Some(_), .. })));
    let file = e.store().pending_path(&d("montague.lit"));
    assert!(fs::metadata(&file).unwrap().len() < 2048, "{} bytes", fs::metadata(&file).unwrap().len());
    assert_eq!(e.store().read_pending(&d("montague.lit")).unwrap().unwrap().stanza_id, None);
    let fine = "y".repeat(MAX_STANZA_ID);
    e.inbound("verona.lit", PresenceKind::Subscribe, Some(&fine)).unwrap();
    assert_eq!(e.store().read_pending(&d("verona.lit")).unwrap().unwrap().stanza_id, Some(fine.clone()));
    let acts = e.inbound("verona.lit", PresenceKind::Probe, Some(&long)).unwrap();
    assert!(matches!(&acts[..], [Action::Send { id: None, .. }]), "{acts:?}");
}
