//! The outbox: subscription stanzas recorded with their change, kept until delivered.

use std::time::Duration;

use super::*;
use crate::Domain;
use crate::store::Waiting;

fn engine(root: &std::path::Path) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..Config::default() }).unwrap()
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

fn kinds(w: &[Waiting]) -> Vec<PresenceKind> {
    w.iter().map(|w| w.kind).collect()
}

fn due(e: &Engine) -> Vec<(String, PresenceKind, Option<String>)> {
    e.outbox_due()
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { to, kind, id } => Some((to.to_string(), kind, id)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_approval_records_its_stanzas_in_the_same_journal_line_and_a_new_engine_finds_them() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    assert!(e.outbox().is_empty(), "a request sends nothing");
    let acts = e.approve("montague.lit", Actor::Cli).unwrap();
    let m = d("montague.lit");
    assert_eq!(kinds(&e.waiting(&m)), [PresenceKind::Subscribed, PresenceKind::Subscribe]);
    assert!(e.is_waiting(&m, PresenceKind::Subscribed, Some("x1")));
    assert!(!e.is_waiting(&m, PresenceKind::Available, None), "plain presence is not kept");
    // The actions still carry them: a driver sends at once.
    assert!(acts.iter().any(|a| matches!(a, Action::Send { kind: PresenceKind::Subscribed, .. })));
    // The approval's journal line is the one that holds them.
    let journal = std::fs::read_to_string(t.path().join("capulet.lit/roster.journal")).unwrap();
    let line = journal.lines().last().unwrap();
    assert!(line.contains("\"state\":\"from+pending-out\""), "{journal}");
    assert!(line.contains("\"outbox\"") && line.contains("\"subscribed\""), "{journal}");
    // Dropped without a word (kill -9): another engine on the store has them, all due.
    drop(e);
    let e2 = engine(t.path());
    assert_eq!(
        due(&e2),
        [
            ("montague.lit".into(), PresenceKind::Subscribed, Some("x1".into())),
            ("montague.lit".into(), PresenceKind::Subscribe, None)
        ]
    );
    assert!(due(&e2).is_empty(), "handed out once until the driver says how it went");
    e2.delivered(&m, PresenceKind::Subscribed, Some("x1")).unwrap();
    e2.delivered(&m, PresenceKind::Subscribe, None).unwrap();
    assert!(e2.outbox().is_empty());
    assert_eq!(e2.state("montague.lit").unwrap(), crate::Subscription::FromPendingOut);
    drop(e2);
    assert!(engine(t.path()).outbox().is_empty(), "the confirmation is on disk");
}

#[test]
fn a_revoke_supersedes_an_undelivered_approval_and_a_deny_keeps_its_unsubscribed() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    let m = d("montague.lit");
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    e.revoke("montague.lit", Actor::Cli).unwrap();
    assert_eq!(kinds(&e.waiting(&m)), [PresenceKind::Unsubscribe, PresenceKind::Unsubscribed]);
    // A denied stranger leaves no roster state but its unsubscribed waits.
    e.inbound("verona.lit", PresenceKind::Subscribe, Some("v1")).unwrap();
    e.deny("verona.lit", Actor::Cli).unwrap();
    let v = d("verona.lit");
    assert_eq!(kinds(&e.waiting(&v)), [PresenceKind::Unsubscribed]);
    e.delivered(&v, PresenceKind::Unsubscribed, Some("v1")).unwrap();
    assert!(e.entry("verona.lit").unwrap().is_none(), "nothing left to keep");
}

#[test]
fn probe_answers_and_repeats_never_enter_the_outbox() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    for i in 0..100 {
        e.inbound(&format!("s{i}.example"), PresenceKind::Probe, None).unwrap();
    }
    assert!(e.outbox().is_empty());
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    let m = d("montague.lit");
    e.delivered(&m, PresenceKind::Subscribed, Some("x1")).unwrap();
    e.delivered(&m, PresenceKind::Subscribe, None).unwrap();
    // Asked again while approved: answered, not recorded (nothing was decided).
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x2")).unwrap();
    assert!(e.outbox().is_empty());
}

#[test]
fn a_failed_try_backs_off_and_the_servers_hello_makes_it_due_again() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.request("montague.lit", Actor::Cli).unwrap();
    let m = d("montague.lit");
    assert_eq!(due(&e).len(), 1);
    e.undelivered(&m, PresenceKind::Subscribe);
    assert!(due(&e).is_empty());
    let wait = e.outbox_next_due().unwrap();
    assert!(wait > Duration::from_millis(500) && wait <= outbox::FIRST_RETRY, "{wait:?}");
    assert_eq!(outbox::backoff(1), Duration::from_secs(1));
    assert_eq!(outbox::backoff(3), Duration::from_secs(4));
    assert_eq!(outbox::bounce_backoff(1), Duration::from_secs(2));
    assert_eq!(outbox::bounce_backoff(30), outbox::MAX_BOUNCE_RETRY);
    assert_eq!(outbox::backoff(40), outbox::MAX_RETRY);
    e.outbox_retry_now();
    assert_eq!(due(&e).len(), 1);
}

#[test]
fn a_bounce_puts_the_delivered_stanza_back_with_backoff() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    let m = d("montague.lit");
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    e.delivered(&m, PresenceKind::Subscribed, Some("x1")).unwrap();
    e.delivered(&m, PresenceKind::Subscribe, None).unwrap();
    assert!(e.outbox().is_empty());
    let acts = e.bounced("montague.lit", "remote-server-not-found").unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("2 stanza(s)"))),
        "{acts:?}"
    );
    assert_eq!(kinds(&e.waiting(&m)), [PresenceKind::Subscribed, PresenceKind::Subscribe]);
    assert!(due(&e).is_empty(), "not at once: with backoff");
    let wait = e.outbox_next_due().unwrap();
    assert!(wait > Duration::from_millis(1500), "{wait:?}");
    // Audited, and durable: a new engine has them.
    let log = std::fs::read_to_string(t.path().join("capulet.lit/audit.log")).unwrap();
    assert!(log.contains("bounced (remote-server-not-found)"), "{log}");
    drop(e);
    assert_eq!(due(&engine(t.path())).len(), 2);
    // A bounce with nothing delivered lately changes nothing.
    let e = engine(t.path());
    e.bounced("verona.lit", "remote-server-not-found").unwrap();
    assert!(e.waiting(&d("verona.lit")).is_empty());
}

#[test]
fn the_outbox_survives_roster_toml_and_a_sealed_read() {
    let t = tempfile::tempdir().unwrap();
    let store = crate::Store::open(t.path(), &d("capulet.lit")).unwrap();
    let mut e = crate::store::RosterEntry { state: crate::Subscription::From, ..Default::default() };
    e.outbox =
        Some(vec![Waiting { kind: PresenceKind::Subscribed, id: Some("a\"b".into()), since: "t".into() }]);
    let plain = crate::store::RosterEntry { state: crate::Subscription::Both, ..Default::default() };
    let peers = [(d("montague.lit"), e.clone()), (d("verona.lit"), plain.clone())];
    store.save_roster(peers.iter().map(|(p, e)| (p, e))).unwrap();
    let text = std::fs::read_to_string(t.path().join("capulet.lit/roster.toml")).unwrap();
    assert!(
        text.contains("[[peers.\"montague.lit\".outbox]]\ntype = \"subscribed\"\nid = 'a\"b'\n"),
        "{text}"
    );
    assert!(!text.contains("[peers.\"verona.lit\".outbox"), "{text}");
    let read = store.load_roster().unwrap();
    assert_eq!(read.peers[&d("montague.lit")], e);
    assert_eq!(read.peers[&d("verona.lit")], plain);
}

#[test]
fn the_outbox_kept_up_to_date_change_by_change_matches_a_full_read() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    assert!(e.outbox().is_empty());
    for i in 0..40 {
        let p = format!("p{i}.example");
        e.inbound(&p, PresenceKind::Subscribe, Some("x")).unwrap();
        e.outbox(); // cached at every step
        e.approve(&p, Actor::Cli).unwrap();
        if i % 3 == 0 {
            e.delivered(&d(&p), PresenceKind::Subscribed, Some("x")).unwrap();
        }
        if i % 5 == 0 {
            e.revoke(&p, Actor::Cli).unwrap();
        }
        if i % 2 == 0 {
            e.outbox();
        }
    }
    let fresh = engine(t.path());
    assert_eq!(*e.outbox(), *fresh.outbox());
    assert_eq!(e.outbox().len(), 40);
}

#[test]
fn a_stanza_the_roster_contradicts_is_never_sent() {
    let t = tempfile::tempdir().unwrap();
    let store = crate::Store::open(t.path(), &d("capulet.lit")).unwrap();
    // A store writer adds a `subscribed` (and a probe) for a peer we do not trust.
    let w = |kind| Waiting { kind, id: None, since: "t".into() };
    let e = crate::store::RosterEntry {
        outbox: Some(vec![
            w(PresenceKind::Subscribed),
            w(PresenceKind::Probe),
            w(PresenceKind::Unsubscribed),
        ]),
        ..Default::default()
    };
    store.save_roster([(&d("montague.lit"), &e)]).unwrap();
    let e = engine(t.path());
    assert_eq!(due(&e), [("montague.lit".into(), PresenceKind::Unsubscribed, None)]);
    // Nothing else is ever due (a driver waiting for it would spin).
    assert!(e.outbox_next_due().unwrap() > Duration::from_secs(30));
}
