//! The store written by everyone at once: a server engine taking `subscribe` stanzas and
//! polling on its wakeup fd, the real `server-trust` CLI approving, denying and setting
//! groups, and an "editor" deciding pending files and adding notes to roster.toml in place,
//! all on disjoint peers, all concurrently. Every act that was acknowledged (CLI exit 0, a
//! file written) must be in the final state, and audited exactly once.
//!
//! `cargo bench --bench concurrent [-- PEERS_PER_ACTOR]` (default 40); a figure, not a test.
//! `cargo test --benches` runs it with 5 peers per actor.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use server_trust::store::AuditRecord;
use server_trust::{Actor, Config, Engine, PresenceKind, Store, Subscription};
use server_trust_lab::artifacts;

const HOST: &str = "capulet.lit";
const ACTORS: [&str; 7] =
    ["cli-approve", "cli-deny", "edit-approve", "edit-deny", "cli-groups", "edit-note", "undecided"];

fn peer(actor: usize, i: usize) -> String {
    format!("p{i}.{}.example", ACTORS[actor])
}

/// Retries `f` until it succeeds or 30 s pass; returns whether it succeeded.
fn until(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn cli(root: &Path, args: &[&str]) -> bool {
    let out = Command::new(&artifacts::get().cli)
        .arg("--store")
        .arg(root)
        .args(["--host", HOST])
        .args(args)
        .output()
        .expect("run server-trust");
    out.status.success()
}

/// What an editor such as nano does: read, change, write back in place (no rename).
fn edit_in_place(path: &Path, f: impl Fn(&str) -> Option<String>) -> bool {
    let Ok(text) = fs::read_to_string(path) else { return false };
    let Some(new) = f(&text) else { return false };
    fs::write(path, new).is_ok()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or_else(|| if std::env::args().any(|a| a == "--bench") { 40 } else { 5 });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = || Config {
        max_pending: 100_000,
        max_pending_per_site: 100_000,
        site_requests_per_minute: 100_000, // each actor's peers are one site
        ..Config::default()
    };
    let server = Engine::open(&root, HOST, config()).unwrap();
    artifacts::get(); // build the CLI before the clock starts
    let t0 = Instant::now();

    // The server: stanzas from a channel, polls when its wakeup fd says so.
    let (stanzas, inbox) = mpsc::channel::<String>();
    let stop = Arc::new(AtomicBool::new(false));
    let server_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let fd = server.wakeup_fd().expect("watching");
            let (mut polls, mut deferred_logs) = (0usize, 0usize);
            while !stop.load(Ordering::Acquire) {
                while let Ok(p) = inbox.try_recv() {
                    let acts = server.inbound(&p, PresenceKind::Subscribe, None).expect("inbound");
                    deferred_logs +=
                        acts.iter().filter(|a| matches!(a, server_trust::Action::Log { .. })).count();
                }
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                if unsafe { libc::poll(&mut pfd, 1, 5) } == 1 {
                    server.poll().expect("poll");
                    polls += 1;
                }
            }
            server.poll().expect("final poll");
            (polls, deferred_logs)
        })
    };
    for a in 0..ACTORS.len() {
        for i in 0..n {
            stanzas.send(peer(a, i)).unwrap();
        }
    }
    let store = Store::open(&root, &server_trust::Domain::new(HOST).unwrap()).unwrap();
    let pending_file = |p: &str| store.pending_path(&server_trust::Domain::new(p).unwrap());
    let trusted = |p: &str| {
        store.load_roster().is_ok_and(|r| r.peers.iter().any(|(d, e)| d.as_str() == p && e.state.from()))
    };

    // Six admins at once, each on its own peers.
    let acked = std::thread::scope(|s| {
        let r = &root;
        let handles = vec![
            s.spawn(|| (0..n).filter(|&i| until(|| cli(r, &["approve", &peer(0, i)]))).count()),
            s.spawn(|| (0..n).filter(|&i| until(|| cli(r, &["deny", &peer(1, i)]))).count()),
            s.spawn(|| {
                let decide = |t: &str| {
                    t.contains("decision = \"pending\"")
                        .then(|| t.replace("decision = \"pending\"", "decision = \"approve\""))
                };
                (0..n).filter(|&i| until(|| edit_in_place(&pending_file(&peer(2, i)), decide))).count()
            }),
            s.spawn(|| {
                let decide = |t: &str| {
                    t.contains("decision = \"pending\"")
                        .then(|| t.replace("decision = \"pending\"", "decision = \"deny\""))
                };
                (0..n).filter(|&i| until(|| edit_in_place(&pending_file(&peer(3, i)), decide))).count()
            }),
            // Groups for peers the CLI approves first (so they are in the roster).
            s.spawn(|| {
                (0..n)
                    .filter(|&i| {
                        let p = peer(4, i);
                        until(|| cli(r, &["approve", &p]))
                            && until(|| trusted(&p))
                            && until(|| cli(r, &["groups", &p, "--set", "ops"]))
                    })
                    .count()
            }),
            // Notes typed into roster.toml, in place, once the CLI approved the peer.
            s.spawn(|| {
                (0..n)
                    .filter(|&i| {
                        let p = peer(5, i);
                        let header = format!("[peers.\"{p}\"]\n");
                        let add_note = |t: &str| {
                            let at = t.find(&header)? + header.len();
                            let note = t[at..].find("note = \"\"")? + at;
                            Some(format!(
                                "{}note = \"note for {p}\"{}",
                                &t[..note],
                                &t[note + "note = \"\"".len()..]
                            ))
                        };
                        until(|| cli(r, &["approve", &p]))
                            && until(|| {
                                trusted(&p) && edit_in_place(&r.join(HOST).join("roster.toml"), add_note)
                            })
                    })
                    .count()
            }),
        ];
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let acting = t0.elapsed();

    // Let the server catch up, then stop it.
    let expect_state = |a: usize| match a {
        0 | 2 | 4 | 5 => |s: Subscription| s.from(),
        1 | 3 => |s: Subscription| s == Subscription::None,
        _ => |s: Subscription| s == Subscription::NonePendingIn,
    };
    let settled = until(|| {
        let Ok(r) = store.load_roster() else { return false };
        let state = |p: &str| {
            r.peers.iter().find(|(d, _)| d.as_str() == p).map_or(Subscription::None, |(_, e)| e.state)
        };
        (0..ACTORS.len()).all(|a| (0..n).all(|i| expect_state(a)(state(&peer(a, i)))))
    });
    std::thread::sleep(Duration::from_millis(1500)); // one more idle compaction
    stop.store(true, Ordering::Release);
    let (polls, busy_logs) = server_thread.join().unwrap();

    // The verdict, from a fresh reader of the store.
    let e = Engine::open(&root, HOST, Config { watch: false, ..config() }).unwrap();
    let audit: Vec<AuditRecord> = e.store().read_audit().unwrap();
    let mut lost = Vec::new();
    let mut audited_twice = Vec::new();
    for a in 0..ACTORS.len() {
        for i in 0..n {
            let p = peer(a, i);
            let entry = e.entry(&p).unwrap();
            let state = entry.as_ref().map_or(Subscription::None, |e| e.state);
            if !expect_state(a)(state) {
                lost.push(format!("{p}: {state}"));
            }
            if a == 4 && entry.as_ref().is_none_or(|e| e.groups != ["ops"]) {
                lost.push(format!("{p}: groups {:?}", entry.as_ref().map(|e| &e.groups)));
            }
            if a == 5 && entry.as_ref().is_none_or(|e| e.note != format!("note for {p}")) {
                lost.push(format!("{p}: note {:?}", entry.as_ref().map(|e| &e.note)));
            }
            let event = match a {
                0 | 2 | 4 | 5 => Some("approve"),
                1 | 3 => Some("deny"),
                _ => None,
            };
            if let Some(ev) = event {
                let n = audit.iter().filter(|r| r.peer == p && r.event == ev).count();
                if n != 1 {
                    audited_twice.push(format!("{p}: {n} × {ev}"));
                }
            }
            let pending = e.store().pending_path(&server_trust::Domain::new(&p).unwrap()).exists();
            if pending != (a == 6) {
                lost.push(format!("{p}: pending file {}", if pending { "left" } else { "missing" }));
            }
        }
    }
    let hand: Vec<String> = audit
        .iter()
        .filter(|r| r.actor == Actor::File && r.event.contains("by hand"))
        .map(|r| format!("{} {} ({:?} -> {:?})", r.peer, r.event, r.from, r.to))
        .collect();
    let mut by_actor: BTreeMap<String, usize> = BTreeMap::new();
    for r in &audit {
        *by_actor.entry(r.actor.as_str().to_string()).or_default() += 1;
    }
    println!(
        "concurrent CLI + editor + server, {n} peers per actor, {} peers: acts acknowledged {acked:?} in {acting:.1?}; settled: {settled}",
        n * ACTORS.len()
    );
    println!(
        "  server: {polls} polls, {busy_logs} log lines (lock contention notices); audit records by actor: {by_actor:?}; trust changes audited as hand edits of roster.toml: {hand:?}"
    );
    println!("  lost updates: {} {:?}", lost.len(), lost);
    println!("  acts not audited exactly once: {} {:?}", audited_twice.len(), audited_twice);
    let files: Vec<PathBuf> =
        fs::read_dir(root.join(HOST)).unwrap().flatten().map(|f| f.path()).filter(|p| p.is_file()).collect();
    println!(
        "  files: {:?}",
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>()
    );
    assert!(acked.iter().all(|&k| k == n), "every act acknowledged: {acked:?}");
    assert!(lost.is_empty() && audited_twice.is_empty(), "lost updates or audit miscounts");
}
