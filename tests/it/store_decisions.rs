//! Decisions an admin records in the store (file edits, the CLI, deleting a request) reach the
//! engine through poll and its wakeup fd; the roster and scopes survive a reopen.

use std::fs;

use server_trust::store::{Decision, QueuedAct};
use server_trust::{Actor, Config, Domain, PresenceKind, Subscription};

use crate::support::{cfg, engine, sent};

#[test]
fn file_edit_and_cli_decisions_are_picked_up_by_poll() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { watch: true, ..cfg() });
    c.poll().unwrap();
    c.inbound("montague.lit", PresenceKind::Subscribe, Some("s1")).unwrap();
    c.inbound("verona.lit", PresenceKind::Subscribe, Some("s2")).unwrap();
    // An admin edits one file by hand ...
    let path = c.store().pending_path(&Domain::new("montague.lit").unwrap());
    let text = fs::read_to_string(&path).unwrap().replace("\"pending\"", "\"approve\"");
    fs::write(&path, text).unwrap();
    // ... and another process (the CLI) denies the other through the store.
    let cli = server_trust::Store::open(dir.path(), &Domain::new("capulet.lit").unwrap()).unwrap();
    cli.set_decision(&Domain::new("verona.lit").unwrap(), Decision::Deny, Actor::Cli).unwrap();
    cli.queue(&Domain::new("padua.lit").unwrap(), QueuedAct::Request, Actor::Cli).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(c.poll().unwrap());
        if sent(&got).len() >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let s = sent(&got);
    assert!(s.contains(&("montague.lit".into(), "subscribed")), "{got:?}");
    assert!(s.contains(&("verona.lit".into(), "unsubscribed")), "{got:?}");
    assert!(s.contains(&("padua.lit".into(), "subscribe")), "{got:?}");
    assert!(c.is_trusted("montague.lit", None));
    assert_eq!(c.state("padua.lit").unwrap(), Subscription::NonePendingOut);
    let log = c.store().read_audit().unwrap();
    assert!(log.iter().any(|r| r.actor.as_str() == "file" && r.event == "approve"), "{log:?}");
    assert!(log.iter().any(|r| r.actor.as_str() == "cli" && r.event == "deny"));
    // Nothing changed since: poll is empty.
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.poll().unwrap();
    assert!(c.poll().unwrap().is_empty());
}

#[test]
fn deleting_a_pending_file_dismisses_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", cfg());
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    fs::remove_file(c.store().pending_path(&Domain::new("montague.lit").unwrap())).unwrap();
    let a = c.poll().unwrap();
    assert!(sent(&a).is_empty(), "dismissed without an answer: {a:?}");
    assert_eq!(c.state("montague.lit").unwrap(), Subscription::None);
    assert!(c.store().read_audit().unwrap().iter().any(|r| r.event.starts_with("dismissed")));
}

#[test]
fn wakeup_fd_signals_store_changes_and_poll_resets_it() {
    fn readable(fd: i32, ms: i32) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { watch: true, ..cfg() });
    let fd = c.wakeup_fd().expect("watching engines have a wakeup fd");
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    c.poll().unwrap(); // consume our own write
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.poll().unwrap();
    assert!(!readable(fd, 0), "nothing changed: the fd must be quiet");
    let cli = server_trust::Store::open(dir.path(), &Domain::new("capulet.lit").unwrap()).unwrap();
    cli.set_decision(&Domain::new("montague.lit").unwrap(), Decision::Approve, Actor::Cli).unwrap();
    assert!(readable(fd, 2000), "an approval by another process wakes the driver");
    let a = c.poll().unwrap();
    assert!(sent(&a).contains(&("montague.lit".into(), "subscribed")), "{a:?}");
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.poll().unwrap();
    assert!(!readable(fd, 0), "poll resets the fd");
    assert!(engine(dir.path(), "capulet.lit", cfg()).wakeup_fd().is_none(), "no watcher, no fd");
}

#[test]
fn state_survives_reopen_and_scopes_filter_trust() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = engine(dir.path(), "capulet.lit", cfg());
        c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
        c.approve("montague.lit", Actor::Shell).unwrap();
        c.set_groups("montague.lit", vec!["incidents".into()], Actor::Cli).unwrap();
    }
    let c = engine(dir.path(), "capulet.lit", cfg());
    assert_eq!(c.state("montague.lit").unwrap(), Subscription::FromPendingOut);
    assert!(c.is_trusted("montague.lit", None));
    assert!(c.is_trusted("Montague.LIT", Some("incidents")));
    assert!(!c.is_trusted("montague.lit", Some("muc-limits")));
    let start = c.startup_actions();
    assert_eq!(sent(&start), [("montague.lit".into(), "available")]);
}
