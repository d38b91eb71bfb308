//! Policy details that need the engine's insides or a crafted store: the defects of the
//! hardening issue, each reproduced here.

use std::fs;
use std::time::Duration;

use super::*;
use crate::{Domain, Error, Subscription};

fn engine(root: &std::path::Path, watch: bool) -> Engine {
    Engine::open(root, "capulet.lit", Config { watch, ..Config::default() }).unwrap()
}

fn sends(actions: &[Action]) -> Vec<(&str, PresenceKind)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, kind, .. } => Some((to.as_str(), *kind)),
            _ => None,
        })
        .collect()
}

/// montague.lit asked us and we approved: state From (we did not ask back).
fn approved(e: &Engine) {
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
}

#[test]
fn an_explicit_request_always_sends_subscribe() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.request("montague.lit", Actor::Cli).unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribed, None).unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::To);
    // The peer dropped us without telling us: asking again must reach it.
    let acts = e.request("montague.lit", Actor::Cli).unwrap();
    assert_eq!(sends(&acts), [("montague.lit", PresenceKind::Subscribe)]);
}

#[test]
fn pre_approval_ends_when_the_peer_drops_us_or_is_denied() {
    let t = tempfile::tempdir().unwrap();
    let e = Engine::open(
        t.path(),
        "capulet.lit",
        Config { watch: false, reciprocate: false, ..Config::default() },
    )
    .unwrap();
    e.request("montague.lit", Actor::Cli).unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribed, None).unwrap();
    e.inbound("montague.lit", PresenceKind::Unsubscribed, None).unwrap();
    // It asks later: the admin is prompted, no automatic approval.
    let acts = e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    assert!(sends(&acts).is_empty(), "{acts:?}");
    assert!(!e.is_trusted("montague.lit", None));
    // Requested, and the peer says it does not want us: the pre-approval is gone too.
    e.request("verona.lit", Actor::Cli).unwrap();
    e.inbound("verona.lit", PresenceKind::Unsubscribe, None).unwrap();
    let acts = e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    assert!(sends(&acts).is_empty(), "{acts:?}");
}

#[test]
fn a_hand_written_decided_by_cannot_spoof_the_actor() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = e.store().pending_path(&Domain::new("montague.lit").unwrap());
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("decision = \"pending\"", "decision = \"approve\"\ndecided_by = \"peer\"");
    fs::write(&path, text).unwrap();
    e.poll().unwrap();
    let approval = e.store().read_audit().unwrap().into_iter().find(|r| r.event == "approve").unwrap();
    assert_eq!(approval.actor, Actor::File);
}

#[test]
fn a_pending_file_for_our_own_host_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    let path = e.store().pending_path(e.host());
    fs::write(&path, "peer = \"capulet.lit\"\ndecision = \"approve\"\nfirst_seen = \"x\"\nlast_seen = \"x\"\ntimes_seen = 1\n").unwrap();
    let acts = e.poll().unwrap();
    assert!(sends(&acts).is_empty());
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("own host"))),
        "{acts:?}"
    );
    assert!(!e.is_trusted("capulet.lit", None));
}

#[test]
fn a_replaced_host_folder_is_watched_again() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), true);
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap();
    // Restore a backup by renaming a copy over the folder, then decide in the new folder.
    let dir = e.store().dir().to_path_buf();
    let copy = t.path().join("restore");
    fs::create_dir_all(copy.join("pending")).unwrap();
    fs::create_dir_all(copy.join("outbound")).unwrap();
    fs::copy(dir.join("roster.toml"), copy.join("roster.toml")).unwrap();
    let pending = fs::read_to_string(e.store().pending_path(&Domain::new("montague.lit").unwrap())).unwrap();
    fs::write(copy.join("pending/montague.lit.toml"), pending.replace("\"pending\"", "\"approve\"")).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&copy, &dir).unwrap();
    let mut acts = Vec::new();
    for _ in 0..100 {
        acts = e.poll().unwrap();
        if !acts.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sends(&acts).contains(&("montague.lit", PresenceKind::Subscribed)), "{acts:?}");
}

#[test]
fn a_roster_written_in_place_is_never_written_over_and_hand_edits_are_audited() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e);
    let path = e.store().dir().join("roster.toml");
    let full = fs::read_to_string(&path).unwrap();
    // An in-place `cp` has written the first half: valid TOML, montague.lit not there yet.
    let half = &full[..full.find("[peers").unwrap()];
    fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    fs::write(&path, half).unwrap();
    let err = e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), half, "the file being written is left alone");
    let log = e.store().read_audit().unwrap();
    assert!(
        log.iter().any(|r| r.peer == "montague.lit" && r.actor == Actor::File && r.event.contains("by hand"))
    );
    // The copy completes: nothing was lost, and the trust is back.
    fs::write(&path, &full).unwrap();
    let done = std::time::SystemTime::now() - Duration::from_secs(10);
    fs::File::options().write(true).open(&path).unwrap().set_modified(done).unwrap();
    e.poll().unwrap();
    assert!(e.is_trusted("montague.lit", None));
}

#[test]
fn a_held_store_lock_never_blocks_the_server_and_nothing_is_lost() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    let other = crate::Store::open(t.path(), e.host()).unwrap();
    let held = other.lock().unwrap();
    // A stanza arriving now is deferred, with one line saying who holds the lock.
    let acts = e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("locked by pid"))),
        "{acts:?}"
    );
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None);
    // An admin act cannot be deferred: it fails and says who holds the lock.
    let err = e.request("verona.lit", Actor::Shell).unwrap_err();
    assert!(matches!(&err, Error::Busy { holder, .. } if holder.contains("pid")), "{err}");
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::Notify { .. })));
    drop(held);
    // Once free, the next poll applies the deferred request: the admin is prompted.
    let acts = e.poll().unwrap();
    assert!(acts.iter().any(|a| matches!(a, Action::Notify { peer, .. } if peer.as_str() == "montague.lit")));
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingIn);
}

#[test]
fn a_wildcard_flood_is_capped_per_site_and_prompts_are_summed_up() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    let mut prompts = 0;
    for i in 0..1000 {
        let acts = e.inbound(&format!("x{i}.attacker.example"), PresenceKind::Subscribe, None).unwrap();
        prompts += acts.iter().filter(|a| matches!(a, Action::Notify { .. })).count();
    }
    let config = Config::default();
    assert_eq!(e.store().pending_peers().len(), config.max_pending_per_site);
    assert_eq!(prompts, config.notify_burst, "one prompt each for the first few, then silence");
    // A legitimate request still gets through, and is pending (the digest waits for its minute).
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingIn);
    assert_eq!(e.stats().cap_drops, 1000 - config.max_pending_per_site as u64);
}

#[test]
fn the_wakeup_fd_fires_when_the_lock_holder_lets_go() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), true);
    let fd = e.wakeup_fd().expect("watching");
    e.poll().unwrap(); // drains the start-up wakeup
    let other = crate::Store::open(t.path(), e.host()).unwrap();
    let held = other.lock().unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap();
    // Nothing on disk changes when the holder lets go; the driver must still be woken.
    let readable = || {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut p, 1, 5000) == 1 }
    };
    drop(held);
    assert!(readable(), "no wakeup after the lock was released");
    let acts = e.poll().unwrap();
    assert!(acts.iter().any(|a| matches!(a, Action::Notify { .. })), "{acts:?}");
}
