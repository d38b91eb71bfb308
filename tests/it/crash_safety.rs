//! The store loses nothing when writers race or die: concurrent engines, a writer killed with
//! SIGKILL mid-write (the lab's `st-lab-store-writer`), a crash between two files.

use std::fs;

use server_trust::{Actor, Engine, PresenceKind, Subscription};
use server_trust_lab::artifacts;

use crate::support::{cfg, engine, sent};

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let e = Engine::open(&root, "capulet.lit", cfg()).unwrap();
                let mine: Vec<String> = (0..25).map(|i| format!("p{t}-{i}.lit")).collect();
                for peer in &mine {
                    e.inbound(peer, PresenceKind::Subscribe, None).unwrap();
                }
                // A server never waits for the store lock: a stanza that met another writer's
                // lock is deferred to the next poll, which a server's timer runs soon after.
                for _ in 0..1000 {
                    if mine.iter().all(|p| e.state(p).unwrap() == Subscription::NonePendingIn) {
                        break;
                    }
                    e.poll().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let e = engine(&root, "capulet.lit", cfg());
    assert_eq!(e.roster().len(), 100, "every writer's entries survive");
    assert_eq!(e.store().pending_count(), 100);
}

#[test]
fn kill_9_mid_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path(), "capulet.lit", cfg());
    let pending = dir.path().join("capulet.lit/pending");
    for round in 0..3 {
        let mut child = std::process::Command::new(&artifacts::get().store_writer)
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let want = 30 * (round + 1);
        let t0 = std::time::Instant::now();
        let count = || {
            fs::read_dir(&pending)
                .unwrap()
                .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
                .count()
        };
        while count() < want && t0.elapsed() < std::time::Duration::from_secs(15) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Every file parses; the engine opens; poll recovers a request the roster missed.
    let c = engine(dir.path(), "capulet.lit", cfg());
    let (reqs, bad) = c.store().list_pending();
    assert!(bad.is_empty(), "torn files: {bad:?}");
    assert!(reqs.len() >= 90, "{}", reqs.len());
    c.poll().unwrap();
    for r in &reqs {
        assert_eq!(c.state(r.peer.as_str()).unwrap(), Subscription::NonePendingIn, "{}", r.peer);
    }
    let stray: Vec<_> = fs::read_dir(&pending)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.len() <= 3, "at most one temp file per killed writer: {stray:?}");
}

#[test]
fn a_pending_file_the_roster_missed_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", cfg());
    // As if the process died after writing the file and before saving the roster.
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    fs::remove_file(dir.path().join("capulet.lit/roster.toml")).unwrap();
    let c = engine(dir.path(), "capulet.lit", cfg());
    assert_eq!(c.state("montague.lit").unwrap(), Subscription::None);
    c.poll().unwrap();
    assert_eq!(c.state("montague.lit").unwrap(), Subscription::NonePendingIn);
    let a = c.approve("montague.lit", Actor::Cli).unwrap();
    assert_eq!(sent(&a)[0], ("montague.lit".into(), "subscribed"));
}
