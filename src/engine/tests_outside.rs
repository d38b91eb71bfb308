//! Trust changed outside the server is audited, naming each peer, with one alert (issue 14,
//! defect 5): a sealed backup restored while stopped, a peer added to roster.toml while
//! stopped, a line appended to roster.journal while running.

use std::fs;
use std::io::Write;
use std::time::Duration;

use super::outside::OUTSIDE_EVENT;
use super::*;
use crate::Subscription;

fn engine(root: &std::path::Path) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch: false, ..Config::default() }).unwrap()
}

/// The records audited as changed outside the server: (peer, from, to).
fn outside(e: &Engine) -> Vec<(String, Option<Subscription>, Option<Subscription>)> {
    let log = e.store().read_audit().unwrap();
    log.into_iter().filter(|r| r.event == OUTSIDE_EVENT).map(|r| (r.peer, r.from, r.to)).collect()
}

fn alerts(acts: &[Action]) -> Vec<&str> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Notify { text, .. } if text.contains("changed outside the server") => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn roster_toml(e: &Engine) -> String {
    fs::read_to_string(e.store().dir().join("roster.toml")).unwrap()
}

/// Waits until the journal is folded into roster.toml (a sealed file holding `needle`).
fn folded(e: &Engine, needle: &str) -> String {
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(25));
        let text = roster_toml(e);
        let journal = fs::read_to_string(e.store().dir().join("roster.journal")).unwrap_or_default();
        if text.contains(needle) && journal.lines().count() <= 1 {
            return text;
        }
    }
    panic!("never folded: {}", roster_toml(e));
}

#[test]
fn a_sealed_backup_restored_while_stopped_is_audited_at_the_first_poll() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    let backup = folded(&e, "state = \"from+pending-out\"");
    e.revoke("montague.lit", Actor::Cli).unwrap();
    // (Its unsubscribe + unsubscribed wait in the outbox: nothing here confirms them.)
    folded(&e, "state = \"none\"");
    drop(e);
    // Stopped: the admin copies the old, sealed roster.toml back.
    fs::write(t.path().join("capulet.lit/roster.toml"), &backup).unwrap();
    let e = engine(t.path());
    assert!(e.is_trusted("montague.lit", None), "the restored file is the truth");
    let acts = e.poll().unwrap();
    assert_eq!(
        outside(&e),
        [("montague.lit".into(), Some(Subscription::None), Some(Subscription::FromPendingOut))]
    );
    let alerts = alerts(&acts);
    assert_eq!(alerts.len(), 1, "{acts:?}");
    assert!(alerts[0].contains("montague.lit (none -> from+pending-out)"), "{}", alerts[0]);
    // Once: the next polls and a restart find nothing new.
    assert!(alerts_of(e.poll().unwrap()).is_empty());
    drop(e);
    let e = engine(t.path());
    assert!(alerts_of(e.poll().unwrap()).is_empty());
    assert_eq!(outside(&e).len(), 1);
}

fn alerts_of(acts: Vec<Action>) -> Vec<String> {
    alerts(&acts).into_iter().map(String::from).collect()
}

#[test]
fn a_peer_added_to_roster_toml_while_stopped_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.deny("montague.lit", Actor::Cli).unwrap();
    drop(e);
    let path = t.path().join("capulet.lit/roster.toml");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    text.push_str("\n[peers.\"intruder.lit\"]\nstate = \"both\"\n");
    fs::write(&path, text).unwrap();
    let e = engine(t.path());
    let acts = e.poll().unwrap();
    assert!(e.is_trusted("intruder.lit", None));
    assert_eq!(outside(&e), [("intruder.lit".into(), Some(Subscription::None), Some(Subscription::Both))]);
    assert_eq!(alerts(&acts).len(), 1, "{acts:?}");
}

#[test]
fn a_journal_line_appended_by_hand_while_running_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path());
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap(); // the first look: nothing changed outside so far
    assert!(outside(&e).is_empty());
    fs::OpenOptions::new()
        .append(true)
        .open(e.store().dir().join("roster.journal"))
        .unwrap()
        .write_all(b"{\"peer\":\"verona.lit\",\"set\":{\"state\":\"both\"}}\n")
        .unwrap();
    let acts = e.poll().unwrap();
    assert!(e.is_trusted("verona.lit", None));
    assert_eq!(outside(&e), [("verona.lit".into(), Some(Subscription::None), Some(Subscription::Both))]);
    assert_eq!(alerts(&acts).len(), 1, "{acts:?}");
    // Another engine's lines (the CLI's) were audited by it: no alert for them.
    let cli = engine(t.path());
    cli.approve("montague.lit", Actor::Cli).unwrap();
    let acts = e.poll().unwrap();
    assert!(alerts(&acts).is_empty(), "{acts:?}");
    assert_eq!(outside(&e).len(), 1);
}
