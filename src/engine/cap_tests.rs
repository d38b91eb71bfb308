//! The pending caps (issue 14, defect 4): counted by the ICANN registrable domain, a per-site
//! rate limit, expiry of requests nobody decided, and drops named and counted.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::store::Decision;
use crate::{Domain, Subscription};

fn engine_with(root: &std::path::Path, config: Config) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..config }).unwrap()
}

fn logs(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// 10,000 names from one private-section suffix (`aN.github.io`, each its own registrable
/// domain under the PSL's private section) are one site: they fill its 10 places, not the
/// global 1000, and another site's request is still recorded. On the old code the first
/// 1000 filled `max_pending` and montague.lit was dropped.
#[test]
fn ten_thousand_names_under_one_private_suffix_leave_room_for_other_sites() {
    let t = tempfile::tempdir().unwrap();
    let e = engine_with(t.path(), Config::default());
    let started = Instant::now();
    for i in 0..10_000 {
        e.inbound(&format!("a{i}.github.io"), PresenceKind::Subscribe, None).unwrap();
    }
    let flood = started.elapsed();
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    let recorded = e.state("montague.lit").unwrap() == Subscription::NonePendingIn;
    // Printed before the checks, so the figure shows on the old code too.
    eprintln!(
        "10000 subscribes from aN.github.io in {} ms: {} pending, {} dropped; montague.lit then recorded: {recorded}",
        flood.as_millis(),
        e.store().pending_count() - usize::from(recorded),
        e.stats().cap_drops,
    );
    assert!(recorded, "another site is recorded");
    let cap = Config::default().max_pending_per_site;
    assert_eq!(e.store().pending_count(), cap + 1);
    assert_eq!(e.stats().cap_drops, 10_000 - cap as u64);
}

/// One site gets `site_requests_per_minute` new requests a minute, even when its pending
/// cap would allow more; other sites are not slowed, and the bucket fills again with time.
#[test]
fn new_requests_are_rate_limited_per_site() {
    let t = tempfile::tempdir().unwrap();
    let config = Config { max_pending_per_site: 1000, site_requests_per_minute: 5, ..Config::default() };
    let e = engine_with(t.path(), config);
    for i in 0..20 {
        e.inbound(&format!("x{i}.attacker.example"), PresenceKind::Subscribe, None).unwrap();
    }
    assert_eq!(e.store().pending_count(), 5, "a minute's worth");
    assert_eq!(e.stats().cap_drops, 15);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingIn);
    // A minute later the site's bucket is full again (its clock set back, not slept).
    for b in e.ops.lock().site_tokens.values_mut() {
        b.1 -= Duration::from_secs(60);
    }
    for i in 20..40 {
        e.inbound(&format!("x{i}.attacker.example"), PresenceKind::Subscribe, None).unwrap();
    }
    assert_eq!(e.store().pending_count(), 11);
}

/// Writes `peer`'s pending file again with `first_seen` (and `last_seen`) `age` ago.
fn backdate(e: &Engine, peer: &str, age: Duration, decision: Decision) {
    let store = e.store();
    let mut req = store.read_pending(&Domain::new(peer).unwrap()).unwrap().unwrap();
    let then = crate::store::format_rfc3339(SystemTime::now() - age);
    req.first_seen = then.clone();
    req.last_seen = then;
    req.decision = decision;
    if decision != Decision::Pending {
        req.decided_by = Some(Actor::Cli);
    }
    store.write_pending(&req).unwrap();
}

/// A request nobody decided within `pending_max_age` expires at the next poll: audited, no
/// stanza, file gone, pending-in cleared (RFC 6121: like a dismissal). A younger one, and an
/// old one with a decision recorded, are not expired.
#[test]
fn pending_requests_expire_unanswered_after_their_max_age() {
    let t = tempfile::tempdir().unwrap();
    let e = engine_with(t.path(), Config::default());
    for p in ["old.example", "young.example", "decided.example"] {
        e.inbound(p, PresenceKind::Subscribe, Some("x1")).unwrap();
    }
    let day = Duration::from_secs(86_400);
    backdate(&e, "old.example", 31 * day, Decision::Pending);
    backdate(&e, "young.example", 29 * day, Decision::Pending);
    backdate(&e, "decided.example", 40 * day, Decision::Deny);
    let acts = e.poll().unwrap();
    let sends: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, kind, .. } => Some((to.as_str(), *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(sends, [("decided.example", PresenceKind::Unsubscribed)], "nothing sent to the expired one");
    assert!(
        logs(&acts).iter().any(|l| l.contains("1 pending request(s) expired") && l.contains("old.example"))
    );
    let old = Domain::new("old.example").unwrap();
    assert!(!e.store().pending_path(&old).exists(), "file removed");
    assert_eq!(e.state("old.example").unwrap(), Subscription::None);
    assert_eq!(e.state("young.example").unwrap(), Subscription::NonePendingIn);
    assert_eq!(e.stats().expired, 1);
    let audit = e.store().read_audit().unwrap();
    let rec = audit.iter().find(|r| r.peer == "old.example" && r.event.contains("expired")).expect("audited");
    assert_eq!(rec.actor, Actor::Engine);
    assert_eq!((rec.from, rec.to), (Some(Subscription::NonePendingIn), Some(Subscription::None)));
    // Not taken for a dismissal as well, and nothing more happens at the next poll.
    assert!(!audit.iter().any(|r| r.peer == "old.example" && r.event.contains("dismissed")));
    assert!(e.poll().unwrap().is_empty());
    // A new engine (a server restart) sees the same: the roster says None, no file.
    drop(e);
    let e = engine_with(t.path(), Config::default());
    assert_eq!(e.state("old.example").unwrap(), Subscription::None);
}

/// Requests dropped at the cap are named in the log line, up to ten with "and N more",
/// including those dropped after the last line (at a poll once 10 s are over), and counted
/// in the store for `pending` to show.
#[test]
fn dropped_requests_are_named_and_counted_in_the_store() {
    let t = tempfile::tempdir().unwrap();
    let e = engine_with(t.path(), Config { max_pending: 1, ..Config::default() });
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let first = e.inbound("d0.example", PresenceKind::Subscribe, None).unwrap();
    let line = logs(&first).join("\n");
    assert!(line.contains("dropped subscribe from d0.example (1 dropped"), "{line}");
    let mut quiet = Vec::new();
    for i in 1..=14 {
        quiet.extend(e.inbound(&format!("d{i}.example"), PresenceKind::Subscribe, None).unwrap());
    }
    assert!(logs(&quiet).is_empty(), "one line per 10 s: {quiet:?}");
    assert!(e.poll().unwrap().is_empty(), "not due yet");
    // Ten seconds later (the clock of the last line set back), a poll names them.
    let back = e.ops.lock().cap_logged.unwrap() - Duration::from_secs(10);
    e.ops.lock().cap_logged = Some(back);
    e.set_drop_notice_at(Some(back + Duration::from_secs(10)));
    let acts = e.poll().unwrap();
    let line = logs(&acts).join("\n");
    assert!(line.contains("d1.example, d2.example") && line.contains("d10.example"), "{line}");
    assert!(line.contains(" and 4 more (14 dropped since the last notice"), "{line}");
    let count = e.store().read_drops().unwrap().expect("counted");
    assert_eq!(count.dropped, 15);
    assert_eq!(count.last_peers.len(), 10);
    assert_eq!(e.stats().cap_drops, 15);
}

/// Drops held for the next notice are counted when the engine closes (a server stopping
/// right after a flood).
#[test]
fn drops_not_yet_noticed_are_counted_when_the_engine_closes() {
    let t = tempfile::tempdir().unwrap();
    let e = engine_with(t.path(), Config { max_pending: 1, ..Config::default() });
    for p in ["montague.lit", "d0.example", "d1.example", "d2.example"] {
        e.inbound(p, PresenceKind::Subscribe, None).unwrap();
    }
    assert_eq!(e.store().read_drops().unwrap().unwrap().dropped, 1, "the first, at once");
    let store = e.store().clone();
    drop(e);
    let count = store.read_drops().unwrap().unwrap();
    assert_eq!(count.dropped, 3);
    assert_eq!(count.last_peers, [Domain::new("d1.example").unwrap(), Domain::new("d2.example").unwrap()]);
}

/// Expiry costs an idle server nothing: with the watcher on, a poll with nothing changed does
/// not scan pending/ for old requests; the scan comes once its minute is over.
#[test]
fn expiry_runs_at_most_once_a_minute_on_an_idle_server() {
    let t = tempfile::tempdir().unwrap();
    let e = Engine::open(t.path(), "capulet.lit", Config::default()).unwrap(); // watching
    e.inbound("old.example", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap(); // the start-up scan (and expiry pass)
    // Aged through the engine's own store: its own write, which wakes no scan.
    backdate(&e, "old.example", Duration::from_secs(31 * 86_400), Decision::Pending);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(e.poll().unwrap().is_empty());
    }
    assert_eq!(e.state("old.example").unwrap(), Subscription::NonePendingIn, "not before its minute");
    e.set_expiry_at(Instant::now()); // the minute is over (timers are kept in whole ms)
    std::thread::sleep(Duration::from_millis(5));
    let acts = e.poll().unwrap();
    assert!(logs(&acts).iter().any(|l| l.contains("expired")), "{acts:?}");
    assert_eq!(e.state("old.example").unwrap(), Subscription::None);
}
