//! Policy details that need the engine's insides or a crafted store: the defects of the
//! hardening issue, each reproduced here.

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

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

/// Makes `path` look written 10 s ago: no longer a file another program may be writing.
fn settle(path: &std::path::Path) {
    let settled = std::time::SystemTime::now() - Duration::from_secs(10);
    fs::File::options().write(true).open(path).unwrap().set_modified(settled).unwrap();
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
fn a_roster_written_in_place_is_neither_read_half_written_nor_written_over() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e);
    let path = e.store().dir().join("roster.toml");
    let full = fs::read_to_string(&path).unwrap();
    // An in-place `cp` has written the first half: valid TOML, montague.lit not there yet.
    let half = &full[..full.find("[peers").unwrap()];
    fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    fs::write(&path, half).unwrap();
    // A stanza meanwhile waits for the next poll, with one line saying why.
    let acts = e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("being written"))),
        "{acts:?}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), half, "the file being written is left alone");
    // Half a file is not taken for the roster: no trust lost and found again.
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::TrustChanged { .. })));
    assert!(e.is_trusted("montague.lit", None));
    assert!(!e.store().read_audit().unwrap().iter().any(|r| r.event.contains("by hand")));
    // Cut in the middle of a line, it does not even parse: still a file being written, not
    // a corrupt roster (the server's poll must not fail on it).
    let cut = &full[..full.find("state = ").unwrap() + 10];
    fs::write(&path, cut).unwrap();
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::TrustChanged { .. })));
    assert!(e.is_trusted("montague.lit", None));
    // The copy completes: nothing was lost, and the deferred request is applied.
    fs::write(&path, &full).unwrap();
    let acts = e.poll().unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, Action::Notify { peer, .. } if peer.as_str() == "verona.lit")),
        "{acts:?}"
    );
    assert!(e.is_trusted("montague.lit", None));
    assert_eq!(e.state("verona.lit").unwrap(), Subscription::NonePendingIn);
}

#[test]
fn a_roster_written_from_scratch_by_hand_is_taken_once_it_settles() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e);
    let path = e.store().dir().join("roster.toml");
    fs::write(&path, "[peers.\"verona.lit\"]\nstate = \"from\"\n").unwrap();
    e.poll().unwrap();
    assert!(e.is_trusted("montague.lit", None), "not taken while it may still be written");
    settle(&path);
    let acts = e.poll().unwrap();
    assert!(acts.iter().any(
        |a| matches!(a, Action::TrustChanged { peer, trusted: false } if peer.as_str() == "montague.lit")
    ));
    assert!(e.is_trusted("verona.lit", None) && !e.is_trusted("montague.lit", None));
    let log = e.store().read_audit().unwrap();
    assert!(
        log.iter().any(|r| r.peer == "montague.lit" && r.actor == Actor::File && r.event.contains("by hand"))
    );
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

fn journal(e: &Engine) -> String {
    fs::read_to_string(e.store().dir().join("roster.journal")).unwrap_or_default()
}

/// (inode, length, mtime) of roster.toml: whether it was rewritten.
fn roster_toml_id(e: &Engine) -> (u64, u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(e.store().dir().join("roster.toml")).unwrap();
    (m.ino(), m.len(), m.modified().unwrap())
}

#[test]
fn a_change_costs_one_journal_line_not_a_roster_rewrite() {
    let t = tempfile::tempdir().unwrap();
    let store = crate::Store::open(t.path(), &Domain::new("capulet.lit").unwrap()).unwrap();
    let peers: Vec<(Domain, crate::store::RosterEntry)> = (0..2000)
        .map(|i| {
            let entry = crate::store::RosterEntry { state: Subscription::Both, ..Default::default() };
            (Domain::new(&format!("p{i}.example")).unwrap(), entry)
        })
        .collect();
    store.save_roster(peers.iter().map(|(d, e)| (d, e))).unwrap();
    let e = engine(t.path(), false);
    let before = roster_toml_id(&e);
    e.inbound("montague.lit", PresenceKind::Subscribe, Some("x1")).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    assert_eq!(roster_toml_id(&e), before, "roster.toml must not be rewritten per change");
    let j = journal(&e);
    assert_eq!(j.lines().count(), 3, "a header and one line per change: {j}");
    assert!(j.len() < 1024, "{} bytes for two changes", j.len());
    // What a fresh reader (the CLI, a restarted server) sees includes the journal.
    let again = Engine::open(t.path(), "capulet.lit", Config { watch: false, ..Config::default() }).unwrap();
    assert_eq!(again.state("montague.lit").unwrap(), Subscription::FromPendingOut);
    assert!(again.is_trusted("p7.example", None));
    assert_eq!(again.roster().len(), 2001);
}

#[test]
fn another_process_s_journal_lines_are_read_from_where_we_stopped() {
    let t = tempfile::tempdir().unwrap();
    let server = engine(t.path(), false);
    server.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    server.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    let cli = engine(t.path(), false);
    cli.approve("montague.lit", Actor::Cli).unwrap();
    let acts = server.poll().unwrap();
    assert!(
        acts.iter().any(
            |a| matches!(a, Action::TrustChanged { peer, trusted: true } if peer.as_str() == "montague.lit")
        ),
        "{acts:?}"
    );
    assert!(server.is_trusted("montague.lit", None));
    // Audited once, by the process that decided; not again as a hand edit.
    let log = server.store().read_audit().unwrap();
    assert_eq!(log.iter().filter(|r| r.peer == "montague.lit" && r.event.contains("approve")).count(), 1);
    assert!(!log.iter().any(|r| r.event.contains("by hand")), "{log:?}");
    // And the server's own next change goes on from there.
    server.approve("verona.lit", Actor::Cli).unwrap();
    let fresh = engine(t.path(), false);
    assert!(fresh.is_trusted("montague.lit", None) && fresh.is_trusted("verona.lit", None));
}

#[test]
fn a_journal_line_cut_short_by_a_crash_is_ignored_and_cut_off() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e);
    let path = e.store().dir().join("roster.journal");
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"peer":"verona.lit","set":{"sta"#)
        .unwrap();
    let e = engine(t.path(), false);
    assert!(e.is_trusted("montague.lit", None));
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    let j = journal(&e);
    assert!(j.ends_with('\n') && !j.contains(r#""sta""#) && j.lines().all(|l| l.ends_with('}')), "{j}");
    let e = engine(t.path(), false);
    assert_eq!(e.state("verona.lit").unwrap(), Subscription::NonePendingIn);
}

#[test]
fn a_corrupt_journal_line_stops_the_engine_and_names_the_file() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e);
    drop(e);
    let path = t.path().join("capulet.lit/roster.journal");
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"peer\":\"evil.lit\",\"set\":{\"trusted\":true}}\n")
        .unwrap();
    let err =
        Engine::open(t.path(), "capulet.lit", Config { watch: false, ..Config::default() }).err().unwrap();
    assert!(matches!(err, Error::Corrupt { .. }) && err.to_string().contains("roster.journal"), "{err}");
}

#[test]
fn a_hand_edit_of_roster_toml_is_merged_with_the_journal() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e); // roster.toml says pending-in, the journal says from
    let path = e.store().dir().join("roster.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("none+pending-in"), "{text}");
    fs::write(&path, text.replace("note = \"\"", "note = \"met at FOSDEM\"")).unwrap();
    e.poll().unwrap();
    let entry = e.entry("montague.lit").unwrap().unwrap();
    assert_eq!((entry.state, entry.note.as_str()), (Subscription::FromPendingOut, "met at FOSDEM"));
    assert!(e.is_trusted("montague.lit", None));
    let log = e.store().read_audit().unwrap();
    assert!(!log.iter().any(|r| r.event.contains("by hand")), "nothing changed trust: {log:?}");
}

#[test]
fn compaction_folds_the_journal_in_off_the_thread_and_a_restored_backup_wins() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    let backup = fs::read_to_string(e.store().dir().join("roster.toml")).unwrap();
    approved(&e);
    let generation = e.generation();
    // Idle for a second: roster.toml is rewritten with the changes, the journal restarts.
    let mut folded = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let text = fs::read_to_string(e.store().dir().join("roster.toml")).unwrap();
        let whole =
            text.contains("[peers.\"montague.lit\"]") && text.contains("state = \"from+pending-out\"");
        if whole && journal(&e).lines().count() == 1 {
            folded = true;
            break;
        }
    }
    assert!(folded, "roster.toml never caught up with the journal: {}", journal(&e));
    e.poll().unwrap();
    assert_eq!(e.generation(), generation, "adopting our own compaction changes nothing for readers");
    assert!(e.is_trusted("montague.lit", None));
    // The admin restores the older file: it names another seal, so the journal no longer
    // applies and the restored state is the truth, audited.
    fs::write(e.store().dir().join("roster.toml"), &backup).unwrap();
    let acts = e.poll().unwrap();
    assert!(acts.iter().any(|a| matches!(a, Action::TrustChanged { trusted: false, .. })), "{acts:?}");
    assert!(!e.is_trusted("montague.lit", None));
    let log = e.store().read_audit().unwrap();
    assert!(log.iter().any(|r| r.peer == "montague.lit" && r.event.contains("by hand")), "{log:?}");
}

#[test]
fn the_per_site_count_follows_files_removed_by_others() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    let cap = Config::default().max_pending_per_site;
    for i in 0..cap + 1 {
        e.inbound(&format!("x{i}.attacker.example"), PresenceKind::Subscribe, None).unwrap();
    }
    assert_eq!(e.state(&format!("x{cap}.attacker.example")).unwrap(), Subscription::None, "over the cap");
    // The admin dismisses one request by deleting its file; the site has room again.
    fs::remove_file(e.store().pending_path(&Domain::new("x0.attacker.example").unwrap())).unwrap();
    e.inbound("late.attacker.example", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(e.state("late.attacker.example").unwrap(), Subscription::NonePendingIn);
    // And our own approvals free room without a listing of the folder.
    e.approve("x1.attacker.example", Actor::Cli).unwrap();
    e.inbound("later.attacker.example", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(e.state("later.attacker.example").unwrap(), Subscription::NonePendingIn);
    e.inbound("latest.attacker.example", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(e.state("latest.attacker.example").unwrap(), Subscription::None, "full again");
}

#[test]
fn held_back_prompts_come_as_one_digest_when_their_minute_is_over() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), true);
    let mut prompts = 0;
    for i in 0..20 {
        let acts = e.inbound(&format!("s{i}.example{i}.org"), PresenceKind::Subscribe, None).unwrap();
        prompts += acts.iter().filter(|a| matches!(a, Action::Notify { .. })).count();
    }
    assert_eq!(prompts, Config::default().notify_burst);
    let digest = |acts: &[Action]| {
        acts.iter().any(
            |a| matches!(a, Action::Notify { text, .. } if text.starts_with("15 more server buddy requests")),
        )
    };
    assert!(!digest(&e.poll().unwrap()), "not before the minute is over");
    // The minute is over (moved back rather than waited for): an idle poll sends the digest once.
    let started = Instant::now() - Duration::from_secs(61);
    e.ops.lock().burst_started = Some(started);
    e.set_digest_at(Some(started + super::policy::DIGEST_EVERY));
    let acts = e.poll().unwrap();
    assert!(digest(&acts), "{acts:?}");
    assert!(!digest(&e.poll().unwrap()), "only once");
}

/// Waits until the compaction thread has folded the journal into roster.toml.
fn wait_for_compaction(e: &Engine) {
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if journal(e).lines().count() == 1 && e.store().dir().join("roster.journal.prev").exists() {
            return;
        }
    }
    panic!("no compaction: {}", journal(e));
}

#[test]
fn an_edit_begun_before_a_compaction_is_merged_and_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    let path = e.store().dir().join("roster.toml");
    let opened = fs::read_to_string(&path).unwrap(); // the admin opens roster.toml
    approved(&e); // montague.lit: journalled...
    wait_for_compaction(&e); // ...and folded into a new roster.toml meanwhile
    e.poll().unwrap();
    e.approve("verona.lit", Actor::Cli).unwrap(); // on the new journal
    // The admin saves the file as opened, with a note added.
    assert!(opened.contains("[peers.\"verona.lit\"]") && !opened.contains("montague"), "{opened}");
    fs::write(&path, opened.replace("note = \"\"", "note = \"met at FOSDEM\"")).unwrap();
    let acts = e.poll().unwrap();
    assert!(!acts.iter().any(|a| matches!(a, Action::TrustChanged { .. })), "{acts:?}");
    assert!(e.is_trusted("montague.lit", None) && e.is_trusted("verona.lit", None));
    assert_eq!(e.entry("verona.lit").unwrap().unwrap().note, "met at FOSDEM");
    let log = e.store().read_audit().unwrap();
    assert!(!log.iter().any(|r| r.event.contains("by hand")), "{log:?}");
    // And a fresh reader agrees.
    let fresh = engine(t.path(), false);
    assert!(fresh.is_trusted("montague.lit", None) && fresh.is_trusted("verona.lit", None));
}

#[test]
fn a_compaction_cut_short_after_writing_roster_toml_loses_no_line() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    approved(&e);
    let old_journal = journal(&e);
    wait_for_compaction(&e);
    drop(e);
    // As if the compaction died right after putting roster.toml in place, with one more line
    // appended to the old journal while it worked.
    let line = r#"{"peer":"montague.lit","set":{"note":"appended meanwhile"}}"#;
    fs::write(t.path().join("capulet.lit/roster.journal"), format!("{old_journal}{line}\n")).unwrap();
    let e = engine(t.path(), false);
    assert!(e.is_trusted("montague.lit", None));
    assert_eq!(e.entry("montague.lit").unwrap().unwrap().note, "appended meanwhile");
    // Work goes on from there, and a fresh reader sees it all.
    e.approve("verona.lit", Actor::Cli).unwrap();
    let fresh = engine(t.path(), false);
    assert!(fresh.is_trusted("verona.lit", None));
    assert_eq!(fresh.entry("montague.lit").unwrap().unwrap().note, "appended meanwhile");
}

#[test]
fn mirrors_learn_which_peers_changed_not_the_whole_roster() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    let g0 = e.generation();
    assert_eq!(e.changed_since(g0), Some((g0, Vec::new())));
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.approve("montague.lit", Actor::Cli).unwrap();
    e.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    let (g, mut peers) = e.changed_since(g0).expect("known");
    peers.sort();
    peers.dedup();
    assert_eq!(g, e.generation());
    assert_eq!(peers.iter().map(Domain::as_str).collect::<Vec<_>>(), ["montague.lit", "verona.lit"]);
    // A replaced roster.toml may change anyone: the mirror must copy it all.
    let path = e.store().dir().join("roster.toml");
    fs::write(&path, "[peers.\"verona.lit\"]\nstate = \"from\"\n").unwrap();
    settle(&path);
    e.poll().unwrap();
    assert_eq!(e.changed_since(g), None);
    assert_eq!(e.changed_since(e.generation()), Some((e.generation(), Vec::new())));
}

#[test]
fn a_section_added_after_the_last_line_keeps_the_journal() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    approved(&e); // montague.lit's approval is only in the journal
    let path = e.store().dir().join("roster.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text + "\n[peers.\"verona.lit\"]\nstate = \"from\"\n").unwrap();
    e.poll().unwrap();
    assert!(e.is_trusted("montague.lit", None), "the journal still applies");
    assert!(e.is_trusted("verona.lit", None), "the added section is taken at once");
}

#[test]
fn dropping_an_engine_never_waits_for_its_compaction_thread() {
    // An engine with a compaction due in a second, dropped at once: the join must return
    // promptly. A lost wake-up left the thread waiting out its second (or for ever when it
    // had no job), which showed as c_abi fuzzing at 59 runs/s instead of 900.
    let t = tempfile::tempdir().unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let e = engine(t.path(), false);
        e.inbound(&format!("p{i}.example{i}.org"), PresenceKind::Subscribe, None).unwrap();
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_micros(50 * (i % 7)));
        }
        let started = Instant::now();
        drop(e);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "a drop took {slowest:?}");
}

/// A new request's file is written without waiting for the disk; its journal line is the
/// durable record. After a crash that lost the file (or left it empty), the next open writes
/// it again instead of taking the request for one the admin deleted. Once compaction has
/// synced the files and folded the line in, a deleted file is the admin's dismissal again.
#[test]
fn a_request_file_lost_in_a_crash_is_written_again_from_the_journal() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    // The first change writes roster.toml whole (synced with the files); the next are lines.
    for peer in ["first.lit", "montague.lit", "verona.lit"] {
        e.inbound(peer, PresenceKind::Subscribe, Some("s1")).unwrap();
    }
    let (lost, emptied) =
        (e.store().pending_path(&d("montague.lit")), e.store().pending_path(&d("verona.lit")));
    drop(e); // before the compaction's second of quiet: the lines stay in the journal
    fs::remove_file(&lost).unwrap();
    fs::File::create(&emptied).unwrap();
    // An admin tool's engine (it never polls) leaves the store as it is: while a server runs,
    // a file missing behind an unfolded line is the admin's doing, not a crash's.
    let admin = engine(t.path(), false);
    admin.set_groups("first.lit", vec!["ops".into()], Actor::Cli).unwrap(); // an act under the lock
    drop(admin);
    assert!(!lost.exists());
    // The server, at its first poll after start, under the lock.
    let e = engine(t.path(), false);
    assert!(e.poll().unwrap().iter().all(|a| !matches!(a, Action::Log { level: LogLevel::Error, .. })));
    for (peer, path) in [("montague.lit", &lost), ("verona.lit", &emptied)] {
        let req = e.store().read_pending(&d(peer)).unwrap().expect("written again");
        assert_eq!((req.decision, req.times_seen), (crate::store::Decision::Pending, 1), "{path:?}");
        assert_eq!(e.state(peer).unwrap(), Subscription::NonePendingIn, "not dismissed");
    }
    let audit = e.store().read_audit().unwrap();
    assert_eq!(audit.iter().filter(|r| r.event.contains("lost in a crash")).count(), 2, "{audit:?}");

    // Folded in: the journal no longer names the request, and a deleted file is a dismissal.
    e.inbound("later.lit", PresenceKind::Subscribe, None).unwrap(); // something to compact
    wait_for_compaction(&e);
    drop(e);
    fs::remove_file(&lost).unwrap();
    let e = engine(t.path(), false);
    assert!(e.store().read_pending(&d("montague.lit")).unwrap().is_none());
    e.poll().unwrap();
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::None, "dismissed by the admin");
}

fn d(s: &str) -> Domain {
    Domain::new(s).unwrap()
}

/// Copies the host folder (`cp -a`), revokes montague.lit, then puts the copy back in place
/// of the folder while `e` runs, and polls until the admins are told: the actions seen.
fn restore_a_backup_after_a_revoke(e: &Engine, t: &std::path::Path) -> Vec<Action> {
    let dir = e.store().dir().to_path_buf();
    let backup = t.join("backup");
    let cp = |from: &std::path::Path, to: &std::path::Path| {
        assert!(std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
    };
    cp(&dir, &backup);
    e.revoke("montague.lit", Actor::Cli).unwrap();
    e.poll().unwrap();
    assert!(!e.is_trusted("montague.lit", None));
    fs::rename(&dir, t.join("old")).unwrap();
    cp(&backup, &dir);
    let mut acts = Vec::new();
    for _ in 0..100 {
        acts.extend(e.poll().unwrap());
        if acts.iter().any(|a| matches!(a, Action::Notify { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    acts
}

fn told_of_the_restore(acts: &[Action]) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Notify { text, .. } if text.contains("montague.lit (none -> from")))
}

/// A backup (the whole folder, audit log included) put back while the server runs: the states
/// it brings back are audited as changed outside the server, with an alert, although the
/// restored audit log agrees with the restored roster (it is the one of the backup).
#[test]
fn a_backup_restored_while_running_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), true);
    approved(&e);
    e.poll().unwrap();
    let acts = restore_a_backup_after_a_revoke(&e, t.path());
    assert!(e.is_trusted("montague.lit", None), "the restored roster was not adopted");
    assert!(told_of_the_restore(&acts), "{acts:?}");
    let log = e.store().read_audit().unwrap();
    assert!(
        log.iter().any(|r| r.event.starts_with("changed outside the server") && r.peer == "montague.lit")
    );
}

/// The same when the store was new at start (no audit log to read then).
#[test]
fn a_backup_restored_in_a_store_new_at_start_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), true);
    e.poll().unwrap();
    approved(&e);
    e.poll().unwrap();
    // Another process's change makes the server read the log (as the CLI's acts do).
    let other = engine(t.path(), false);
    other.inbound("verona.lit", PresenceKind::Subscribe, None).unwrap();
    drop(other);
    for _ in 0..50 {
        e.poll().unwrap();
        if e.state("verona.lit").is_ok_and(|s| s == Subscription::NonePendingIn) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let acts = restore_a_backup_after_a_revoke(&e, t.path());
    assert!(told_of_the_restore(&acts), "{acts:?}");
}

/// A driver with the XEP-0050 commands (Prosody's) gets prompts that name them first; the
/// CLI line stays for admins at a shell.
#[test]
fn prompts_name_the_adhoc_command_where_the_driver_offers_it() {
    let prompt = |adhoc: bool| {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::open(t.path(), "capulet.lit", Config { watch: false, adhoc, ..Config::default() })
            .unwrap();
        let acts = e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
        acts.iter()
            .find_map(|a| match a {
                Action::Notify { text, .. } => Some(text.clone()),
                _ => None,
            })
            .unwrap()
    };
    let with = prompt(true);
    assert!(with.contains("\"Pending server buddies\"") && with.contains("approve montague.lit"), "{with}");
    let without = prompt(false);
    assert!(
        !without.contains("Pending server buddies") && without.contains("approve montague.lit"),
        "{without}"
    );
}

/// Availability survives a restart (presence.toml), and only a change is written: a peer
/// repeating the same presence costs no write.
#[test]
fn availability_is_kept_across_a_restart_and_written_only_on_change() {
    let t = tempfile::tempdir().unwrap();
    let e = engine(t.path(), false);
    e.request("montague.lit", Actor::Cli).unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribed, None).unwrap();
    e.inbound("montague.lit", PresenceKind::Available, None).unwrap();
    let file = e.store().dir().join("presence.toml");
    let first = fs::read_to_string(&file).unwrap();
    assert!(first.contains("available = true"), "{first}");
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&file).unwrap());
    e.inbound("montague.lit", PresenceKind::Available, None).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&file).unwrap()),
        ino,
        "rewritten without a change"
    );
    // A stranger's presence is not kept.
    e.inbound("verona.lit", PresenceKind::Available, None).unwrap();
    assert!(e.presence("verona.lit").is_none());
    drop(e);
    let again = engine(t.path(), false);
    let p = again.presence("montague.lit").expect("kept across the restart");
    assert!(p.available);
    // A clean stop: unavailable to the peers we approved (none here), everyone last seen now.
    again.shutdown_actions();
    assert!(!again.presence("montague.lit").unwrap().available);
    assert!(fs::read_to_string(&file).unwrap().contains("available = false"));
}
