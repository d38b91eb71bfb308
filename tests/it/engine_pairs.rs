//! Two engines wired back to back: the XEP-0267 handshake and its policy, without a server.

use server_trust::{Action, Actor, Domain, Engine, PresenceKind, Subscription};

use crate::support::{cfg, deliver, engine, sent};

struct Pair {
    _dir: tempfile::TempDir,
    m: Engine,
    c: Engine,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let m = engine(&dir.path().join("m"), "montague.lit", cfg());
    let c = engine(&dir.path().join("c"), "capulet.lit", cfg());
    Pair { _dir: dir, m, c }
}

#[test]
fn full_handshake_reaches_both_with_one_prompt() {
    let p = pair();
    // Nothing is sent until the admin asks.
    assert!(p.m.poll().unwrap().is_empty());
    let a = p.m.request("capulet.lit", Actor::Cli).unwrap();
    assert_eq!(sent(&a), [("capulet.lit".into(), "subscribe")]);
    assert_eq!(p.m.state("capulet.lit").unwrap(), Subscription::NonePendingOut);

    // capulet: pending, admin notified, nothing sent back.
    let c1 = deliver("montague.lit", &a, &p.c);
    assert!(sent(&c1).is_empty(), "must not auto-approve: {c1:?}");
    assert!(
        c1.iter().any(|a| matches!(a, Action::Notify { text, .. } if text.contains("approve montague.lit")))
    );
    assert_eq!(p.c.state("montague.lit").unwrap(), Subscription::NonePendingIn);
    assert!(p.c.store().pending_path(&Domain::new("montague.lit").unwrap()).exists());
    assert!(!p.c.is_trusted("montague.lit", None));

    // capulet approves: subscribed + presence + reciprocal subscribe.
    let c2 = p.c.approve("montague.lit", Actor::Cli).unwrap();
    assert_eq!(
        sent(&c2),
        [
            ("montague.lit".into(), "subscribed"),
            ("montague.lit".into(), "available"),
            ("montague.lit".into(), "subscribe")
        ]
    );
    assert!(p.c.is_trusted("montague.lit", None));
    assert!(!p.c.store().pending_path(&Domain::new("montague.lit").unwrap()).exists());

    // montague: To, then the reciprocal subscribe is pre-approved: no second prompt.
    let m2 = deliver("capulet.lit", &c2, &p.m);
    assert_eq!(sent(&m2), [("capulet.lit".into(), "subscribed"), ("capulet.lit".into(), "available")]);
    assert!(!m2.iter().any(|a| matches!(a, Action::Notify { text, .. } if text.contains("request from"))));
    assert_eq!(p.m.state("capulet.lit").unwrap(), Subscription::Both);
    assert_eq!(p.m.store().pending_count(), 0);

    let c3 = deliver("montague.lit", &m2, &p.c);
    assert!(sent(&c3).is_empty());
    assert_eq!(p.c.state("montague.lit").unwrap(), Subscription::Both);
    assert!(p.m.is_trusted("capulet.lit", None) && p.c.is_trusted("montague.lit", None));

    // Audit trail names the actors.
    let log = p.c.store().read_audit().unwrap();
    assert!(log.iter().any(|r| r.actor.as_str() == "cli" && r.event == "approve"));
    assert!(log.iter().any(|r| r.actor.as_str() == "peer" && r.event == "inbound subscribe"));
}

#[test]
fn deny_sends_unsubscribed_and_grants_nothing() {
    let p = pair();
    let a = p.m.request("capulet.lit", Actor::Cli).unwrap();
    deliver("montague.lit", &a, &p.c);
    let d = p.c.deny("montague.lit", Actor::Cli).unwrap();
    assert_eq!(sent(&d), [("montague.lit".into(), "unsubscribed")]);
    assert_eq!(p.c.state("montague.lit").unwrap(), Subscription::None);
    deliver("capulet.lit", &d, &p.m);
    assert_eq!(p.m.state("capulet.lit").unwrap(), Subscription::None);
    assert!(p.m.entry("capulet.lit").unwrap().is_none(), "denial clears the pre-approval");
    // So a later request from capulet prompts montague's admin.
    let later = p.m.inbound("capulet.lit", PresenceKind::Subscribe, None).unwrap();
    assert!(sent(&later).is_empty(), "{later:?}");
    assert_eq!(p.m.state("capulet.lit").unwrap(), Subscription::NonePendingIn);
    assert!(!p.m.is_trusted("capulet.lit", None) && !p.c.is_trusted("montague.lit", None));
    assert!(p.c.approve("montague.lit", Actor::Cli).is_err(), "nothing left to approve");
}

#[test]
fn revoke_drops_trust_on_both_sides() {
    let p = pair();
    let a = p.m.request("capulet.lit", Actor::Cli).unwrap();
    deliver("montague.lit", &a, &p.c);
    let c2 = p.c.approve("montague.lit", Actor::Cli).unwrap();
    let m2 = deliver("capulet.lit", &c2, &p.m);
    deliver("montague.lit", &m2, &p.c);
    let r = p.m.revoke("capulet.lit", Actor::Cli).unwrap();
    assert_eq!(sent(&r), [("capulet.lit".into(), "unsubscribe"), ("capulet.lit".into(), "unsubscribed")]);
    assert!(r.contains(&Action::TrustChanged { peer: Domain::new("capulet.lit").unwrap(), trusted: false }));
    deliver("montague.lit", &r, &p.c);
    assert_eq!(p.m.state("capulet.lit").unwrap(), Subscription::None);
    assert_eq!(p.c.state("montague.lit").unwrap(), Subscription::None);
    assert!(!p.m.is_trusted("capulet.lit", None) && !p.c.is_trusted("montague.lit", None));
}

#[test]
fn probe_reveals_presence_only_to_approved_peers() {
    let p = pair();
    let a = p.c.inbound("montague.lit", PresenceKind::Probe, Some("p1")).unwrap();
    assert_eq!(sent(&a), [("montague.lit".into(), "unsubscribed")]);
    let r = p.m.request("capulet.lit", Actor::Cli).unwrap();
    deliver("montague.lit", &r, &p.c);
    p.c.approve("montague.lit", Actor::Cli).unwrap();
    let a = p.c.inbound("montague.lit", PresenceKind::Probe, Some("p2")).unwrap();
    assert_eq!(sent(&a), [("montague.lit".into(), "available")]);
}

#[test]
fn repeated_subscribe_prompts_once_and_subscribed_unasked_is_ignored() {
    let p = pair();
    let first = p.c.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    assert_eq!(first.iter().filter(|a| matches!(a, Action::Notify { .. })).count(), 1);
    for _ in 0..50 {
        let again = p.c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
    // An approval we never asked for grants nothing.
    let x = p.c.inbound("verona.lit", PresenceKind::Subscribed, None).unwrap();
    assert!(x.is_empty());
    assert_eq!(p.c.state("verona.lit").unwrap(), Subscription::None);
}

#[test]
fn user_and_full_jids_never_enter_the_roster() {
    let p = pair();
    for bad in ["alice@montague.lit", "montague.lit/res", "../../etc/passwd", ""] {
        assert!(p.c.inbound(bad, PresenceKind::Subscribe, None).is_err(), "{bad}");
    }
    assert!(p.c.roster().is_empty());
    assert_eq!(p.c.store().pending_count(), 0);
}
