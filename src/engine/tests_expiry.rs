//! Trust for a time: approval with an end, the reminder, the end, renewal, restarts and the
//! journal, with a clock the tests move instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::*;
use crate::store::{AuditRecord, Decision, Store};
use crate::{Domain, Subscription};

const DAY: u64 = 86_400;

/// A clock that starts now and moves only when told.
#[derive(Clone)]
struct Moved(Arc<AtomicU64>);

impl Moved {
    fn new() -> Moved {
        Moved(Arc::new(AtomicU64::new(0)))
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    fn clock(&self) -> Clock {
        let start = SystemTime::now();
        let by = self.0.clone();
        Clock::new(move || start + Duration::from_secs(by.load(Ordering::SeqCst)))
    }
}

fn engine(root: &std::path::Path, clock: &Clock) -> Engine {
    let config = Config { watch: false, reciprocate: false, clock: clock.clone(), ..Config::default() };
    Engine::open(root, "capulet.lit", config).unwrap()
}

fn sent(actions: &[Action]) -> Vec<PresenceKind> {
    actions
        .iter()
        .filter_map(|a| if let Action::Send { kind, .. } = a { Some(*kind) } else { None })
        .collect()
}

fn notes(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| if let Action::Notify { text, .. } = a { Some(text.as_str()) } else { None })
        .collect()
}

fn audit(root: &std::path::Path) -> Vec<AuditRecord> {
    Store::open(root, &Domain::new("capulet.lit").unwrap()).unwrap().read_audit().unwrap()
}

/// montague.lit asked and was approved for 90 days.
fn approved_for_90d(e: &Engine) -> Vec<Action> {
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    e.approve_for("montague.lit", Some(Duration::from_secs(90 * DAY)), Actor::Shell).unwrap()
}

#[test]
fn trust_for_a_time_is_reminded_once_then_withdrawn_as_by_a_revoke() {
    let t = tempfile::tempdir().unwrap();
    let time = Moved::new();
    let clock = time.clock();
    let e = engine(t.path(), &clock);
    let acts = approved_for_90d(&e);
    assert_eq!(sent(&acts), [PresenceKind::Subscribed, PresenceKind::Available]);
    let entry = e.entry("montague.lit").unwrap().unwrap();
    let end = humantime::parse_rfc3339(entry.expires_at.as_deref().unwrap()).unwrap();
    let want = clock.now() + Duration::from_secs(90 * DAY);
    assert!(end.duration_since(want).unwrap_or_else(|e| e.duration()) <= Duration::from_secs(1));
    assert!(entry.reminded_at.is_none());
    // We had asked it too: the end withdraws both directions, as a revoke does.
    e.request("montague.lit", Actor::Cli).unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribed, None).unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::Both);
    e.poll().unwrap();

    // 82 days on: nothing yet.
    time.advance(82 * DAY);
    assert!(e.poll().unwrap().is_empty());
    // 83 days and a bit: the reminder, once, naming the renewal.
    time.advance(DAY + 60);
    let acts = e.poll().unwrap();
    let n = notes(&acts);
    assert_eq!(n.len(), 1, "{acts:?}");
    assert!(n[0].contains("montague.lit") && n[0].contains(" renew montague.lit --for 90d"), "{}", n[0]);
    assert!(sent(&acts).is_empty());
    assert!(e.entry("montague.lit").unwrap().unwrap().reminded_at.is_some());
    time.advance(3 * DAY);
    assert!(e.poll().unwrap().is_empty(), "reminded once per end");
    assert!(e.is_trusted("montague.lit", None));

    // The end: unsubscribe and unsubscribed go out, trust goes, the engine audits it.
    time.advance(4 * DAY);
    let acts = e.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Unsubscribe, PresenceKind::Unsubscribed]);
    assert!(
        acts.contains(&Action::TrustChanged { peer: Domain::new("montague.lit").unwrap(), trusted: false })
    );
    assert!(notes(&acts).iter().any(|n| n.contains("expired")), "{acts:?}");
    assert!(!e.is_trusted("montague.lit", None));
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    let recs = audit(t.path());
    let tail: Vec<(&str, Actor)> =
        recs.iter().rev().take(3).rev().map(|r| (r.event.as_str(), r.actor)).collect();
    assert!(tail[0].0.starts_with("trust expired (trusted until "), "{tail:?}");
    assert_eq!(
        tail[1..],
        [("revoke: unsubscribe", Actor::Engine), ("revoke: unsubscribed", Actor::Engine)],
        "{tail:?}"
    );
    assert!(tail.iter().all(|(_, a)| *a == Actor::Engine));
    assert!(e.poll().unwrap().is_empty(), "withdrawn once");
}

#[test]
fn ends_and_reminders_survive_a_restart_and_an_approval_without_a_time_has_no_end() {
    let t = tempfile::tempdir().unwrap();
    let time = Moved::new();
    let clock = time.clock();
    {
        let e = engine(t.path(), &clock);
        approved_for_90d(&e);
        e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
        e.approve("verona.lit", Actor::Cli).unwrap();
        assert_eq!(e.entry("verona.lit").unwrap().unwrap().expires_at, None);
        time.advance(84 * DAY);
        assert_eq!(notes(&e.poll().unwrap()).len(), 1);
    }
    // A new process (the server restarted): the end and the reminder are in the store.
    let e = engine(t.path(), &clock);
    assert!(e.entry("montague.lit").unwrap().unwrap().expires_at.is_some());
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::Notify { .. })), "not reminded again");
    time.advance(7 * DAY);
    let e = engine(t.path(), &clock);
    let acts = e.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Unsubscribed]);
    assert!(!e.is_trusted("montague.lit", None));
    assert!(e.is_trusted("verona.lit", None), "an approval with no time never ends");
    time.advance(3650 * DAY);
    assert!(e.poll().unwrap().is_empty());
    assert!(e.is_trusted("verona.lit", None));
}

#[test]
fn renewal_moves_the_end_and_a_new_reminder_is_due_before_it() {
    let t = tempfile::tempdir().unwrap();
    let time = Moved::new();
    let clock = time.clock();
    let e = engine(t.path(), &clock);
    approved_for_90d(&e);
    time.advance(85 * DAY);
    assert_eq!(notes(&e.poll().unwrap()).len(), 1);
    e.renew("montague.lit", &Until::For(Duration::from_secs(90 * DAY)), Actor::Cli).unwrap();
    let entry = e.entry("montague.lit").unwrap().unwrap();
    assert!(entry.reminded_at.is_none(), "a new end gets its own reminder");
    time.advance(10 * DAY); // past the first end
    assert!(e.poll().unwrap().is_empty());
    assert!(e.is_trusted("montague.lit", None));
    time.advance(74 * DAY);
    assert_eq!(notes(&e.poll().unwrap()).len(), 1);
    // For good: no end, no reminder.
    e.renew("montague.lit", &Until::Forever, Actor::Cli).unwrap();
    let entry = e.entry("montague.lit").unwrap().unwrap();
    assert_eq!((entry.expires_at, entry.reminded_at), (None, None));
    time.advance(1000 * DAY);
    assert!(e.poll().unwrap().is_empty());
    assert!(e.is_trusted("montague.lit", None));
    let events: Vec<String> = audit(t.path()).into_iter().map(|r| r.event).collect();
    assert!(events.iter().any(|e| e.starts_with("renew: trusted until ")), "{events:?}");
    assert!(events.iter().any(|e| e == "renew: trusted with no end"), "{events:?}");
    // Only a buddy's trust has an end to move; times out of bounds are refused.
    assert!(e.renew("verona.lit", &Until::For(Duration::from_secs(DAY)), Actor::Cli).is_err());
    assert!(e.renew("montague.lit", &Until::For(Duration::ZERO), Actor::Cli).is_err());
    assert!(e.renew("montague.lit", &Until::For(MAX_TRUST_FOR * 2), Actor::Cli).is_err());
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    assert!(e.approve_for("verona.lit", Some(Duration::ZERO), Actor::Cli).is_err());
    assert!(e.state("verona.lit").unwrap().pending_in(), "a refused time approves nothing");
}

#[test]
fn an_end_set_by_another_process_is_read_from_the_journal_and_kept() {
    let t = tempfile::tempdir().unwrap();
    let time = Moved::new();
    let clock = time.clock();
    let server = engine(t.path(), &clock);
    server.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    server.poll().unwrap();
    // The CLI records `approve --for 30d` in the pending file; the server carries it out.
    let store = Store::open(t.path(), &Domain::new("capulet.lit").unwrap()).unwrap();
    let peer = Domain::new("montague.lit").unwrap();
    store.set_decision_for(&peer, Decision::Approve, Actor::Cli, Some("30d")).unwrap();
    assert_eq!(store.read_pending(&peer).unwrap().unwrap().trust_for.as_deref(), Some("30d"));
    let acts = server.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Subscribed, PresenceKind::Available]);
    let end = server.entry("montague.lit").unwrap().unwrap().expires_at.expect("an end");
    // The CLI renews through an engine of its own: a journal line the server reads.
    let cli = engine(t.path(), &clock);
    cli.renew("montague.lit", &Until::at("2001-01-01T00:00:00Z").unwrap(), Actor::Cli).unwrap();
    assert_ne!(cli.entry("montague.lit").unwrap().unwrap().expires_at, Some(end));
    assert!(cli.is_trusted("montague.lit", None), "admin tools never end trust themselves");
    let acts = server.poll().unwrap();
    assert_eq!(sent(&acts), [PresenceKind::Unsubscribed]);
    assert!(!server.is_trusted("montague.lit", None));
    // And the cleared end is journalled too (`"expires_at":null`): read again, it is gone.
    drop(cli);
    let again = engine(t.path(), &clock);
    let entry = again.entry("montague.lit").unwrap().unwrap();
    assert_eq!((entry.state, entry.expires_at, entry.reminded_at), (Subscription::None, None, None));
    let journal = std::fs::read_to_string(t.path().join("capulet.lit/roster.journal")).unwrap();
    assert!(journal.contains(r#""expires_at":null"#), "{journal}");
}

#[test]
fn a_file_with_a_bad_time_is_not_carried_out_and_a_bad_end_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let clock = Moved::new().clock();
    let e = engine(t.path(), &clock);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap();
    let path = e.store().pending_path(&Domain::new("montague.lit").unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("decision = \"pending\"", "decision = \"approve\"\ntrust_for = \"90 days\"");
    std::fs::write(&path, text).unwrap();
    let acts = e.poll().unwrap();
    assert!(sent(&acts).is_empty(), "never approved with no end: {acts:?}");
    assert!(e.state("montague.lit").unwrap().pending_in());
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("90 days"))),
        "{acts:?}"
    );
    // A roster.toml whose end is not a time is refused whole, as any corrupt roster.
    let t2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t2.path().join("capulet.lit/pending")).unwrap();
    std::fs::write(
        t2.path().join("capulet.lit/roster.toml"),
        "[peers.\"montague.lit\"]\nstate = \"from\"\nexpires_at = \"in 90 days\"\n",
    )
    .unwrap();
    let config = Config { watch: false, clock, ..Config::default() };
    assert!(matches!(Engine::open(t2.path(), "capulet.lit", config), Err(crate::Error::Corrupt { .. })));
}

#[test]
fn a_short_trust_needs_no_reminder_and_losing_trust_clears_the_end() {
    let t = tempfile::tempdir().unwrap();
    let time = Moved::new();
    let clock = time.clock();
    let e = engine(t.path(), &clock);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.approve_for("montague.lit", Some(Duration::from_secs(2 * DAY)), Actor::Cli).unwrap();
    assert!(e.entry("montague.lit").unwrap().unwrap().reminded_at.is_some());
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::Notify { .. })));
    // The peer withdraws its subscription itself: the end goes with the trust.
    e.inbound("montague.lit", PresenceKind::Unsubscribe, None).unwrap();
    assert_eq!(e.entry("montague.lit").unwrap(), None);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    time.advance(30 * DAY);
    assert!(e.poll().unwrap().is_empty());
    assert!(e.is_trusted("montague.lit", None), "trust given again with no time has no end");
}

#[test]
fn what_admins_type_for_an_end_is_read_or_refused() {
    assert_eq!(Until::parse("forever").unwrap(), Until::Forever);
    assert_eq!(Until::parse(" 90d ").unwrap(), Until::For(Duration::from_secs(90 * DAY)));
    assert_eq!(Until::parse("2027-03-08T12:00:00Z").unwrap(), Until::At("2027-03-08T12:00:00Z".into()));
    for bad in ["", "soon", "0s", "3651d", "2027-13-08T12:00:00Z", "90 days"] {
        assert!(Until::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_duration("for", "1w2d").unwrap(), Duration::from_secs(9 * DAY));
}
