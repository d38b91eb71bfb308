//! Two engines wired back to back: the XEP-0267 handshake and its policy, without a server.

use std::fs;
use std::path::Path;

use server_trust::store::{Decision, QueuedAct};
use server_trust::{Action, Actor, Config, Domain, Engine, PresenceKind, Subscription};

fn engine(root: &Path, host: &str, config: Config) -> Engine {
    Engine::open(root, host, config).unwrap()
}

fn cfg() -> Config {
    Config { watch: false, ..Config::default() }
}

/// Presence the engine asked to send, as (to, type).
fn sent(actions: &[Action]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, kind, .. } => Some((to.to_string(), kind.as_str())),
            _ => None,
        })
        .collect()
}

/// Delivers every Send from `from_host` to `to` and returns what `to` answered.
fn deliver(from_host: &str, actions: &[Action], to: &Engine) -> Vec<Action> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Send { to: dest, kind, id } = a
            && dest.as_str() == to.host().as_str()
        {
            out.extend(to.inbound(from_host, *kind, id.as_deref()).unwrap());
        }
    }
    out
}

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
    assert!(log.iter().any(|r| r.actor == "cli" && r.event == "approve"));
    assert!(log.iter().any(|r| r.actor == "peer" && r.event == "inbound subscribe"));
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

#[test]
fn pending_cap_drops_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { max_pending: 3, ..cfg() });
    let mut logs = Vec::new();
    for i in 0..10 {
        for a in c.inbound(&format!("s{i}.lit"), PresenceKind::Subscribe, None).unwrap() {
            if let Action::Log { text, .. } = a {
                logs.push(text);
            }
        }
    }
    assert_eq!(c.store().pending_count(), 3);
    assert_eq!(c.roster().len(), 3);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains("dropped subscribe from s3.lit") && logs[0].contains("3 requests already pending")
    );
    c.inbound("late.lit", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(c.state("late.lit").unwrap(), Subscription::None);
    assert!(!c.store().pending_path(&Domain::new("late.lit").unwrap()).exists());
}

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
    cli.set_decision(&Domain::new("verona.lit").unwrap(), Decision::Deny, "cli").unwrap();
    cli.queue(&Domain::new("padua.lit").unwrap(), QueuedAct::Request, "cli").unwrap();
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
    assert!(log.iter().any(|r| r.actor == "file" && r.event == "approve"), "{log:?}");
    assert!(log.iter().any(|r| r.actor == "cli" && r.event == "deny"));
    // Nothing changed since: poll is empty.
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.poll().unwrap();
    assert!(c.poll().unwrap().is_empty());
}

#[test]
fn corrupt_pending_file_is_reported_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", cfg());
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = c.store().pending_path(&Domain::new("montague.lit").unwrap());
    fs::write(&path, "peer = \"montague.lit\"\ndecision = [oops\n").unwrap();
    let a = c.poll().unwrap();
    assert!(
        a.iter().any(|a| matches!(a, Action::Log { text, .. } if text.contains("montague.lit.toml:2"))),
        "{a:?}"
    );
    assert!(c.poll().unwrap().is_empty(), "reported once");
    assert_eq!(fs::read_to_string(&path).unwrap(), "peer = \"montague.lit\"\ndecision = [oops\n");
    // A repeat subscribe does not overwrite it either.
    c.inbound("montague.lit", PresenceKind::Subscribe, None).ok();
    assert_eq!(fs::read_to_string(&path).unwrap(), "peer = \"montague.lit\"\ndecision = [oops\n");
}

#[test]
fn corrupt_roster_refuses_to_open_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(engine(dir.path(), "capulet.lit", cfg()));
    let path = dir.path().join("capulet.lit/roster.toml");
    fs::write(&path, "[peers.\"montague.lit\"]\nstate = \"bestest\"\n").unwrap();
    let err = Engine::open(dir.path(), "capulet.lit", cfg()).err().unwrap().to_string();
    assert!(err.contains("roster.toml:2"), "{err}");
    assert!(fs::read_to_string(&path).unwrap().contains("bestest"));
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

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let e = Engine::open(&root, "capulet.lit", cfg()).unwrap();
                for i in 0..25 {
                    e.inbound(&format!("p{t}-{i}.lit"), PresenceKind::Subscribe, None).unwrap();
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

/// Re-run of this test binary as a child that writes to the store until killed.
#[test]
fn writer_child() {
    let Ok(root) = std::env::var("ST_WRITER_ROOT") else { return };
    let e = engine(Path::new(&root), "capulet.lit", Config { max_pending: 100_000, ..cfg() });
    let t0 = std::time::Instant::now();
    let mut i = 0;
    while t0.elapsed() < std::time::Duration::from_secs(20) {
        e.inbound(&format!("p{i}.lit"), PresenceKind::Subscribe, None).unwrap();
        i += 1;
    }
}

#[test]
fn kill_9_mid_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    engine(dir.path(), "capulet.lit", cfg());
    let pending = dir.path().join("capulet.lit/pending");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env("ST_WRITER_ROOT", dir.path())
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
    cli.set_decision(&Domain::new("montague.lit").unwrap(), Decision::Approve, "cli").unwrap();
    assert!(readable(fd, 2000), "an approval by another process wakes the driver");
    let a = c.poll().unwrap();
    assert!(sent(&a).contains(&("montague.lit".into(), "subscribed")), "{a:?}");
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.poll().unwrap();
    assert!(!readable(fd, 0), "poll resets the fd");
    assert!(engine(dir.path(), "capulet.lit", cfg()).wakeup_fd().is_none(), "no watcher, no fd");
}

#[test]
fn a_flood_of_repeats_writes_nothing_and_a_flood_of_strangers_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { max_pending: 50, ..cfg() });
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = c.store().pending_path(&Domain::new("montague.lit").unwrap());
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let audit_before = c.store().read_audit().unwrap().len();
    for _ in 0..5000 {
        assert!(c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap().is_empty());
    }
    assert_eq!(
        fs::metadata(&path).unwrap().modified().unwrap(),
        before,
        "repeats inside the window rewrite nothing"
    );
    assert_eq!(c.store().read_audit().unwrap().len(), audit_before, "and log nothing");
    let mut notices = 0;
    for i in 0..2000 {
        let a = c.inbound(&format!("stranger{i}.lit"), PresenceKind::Subscribe, None).unwrap();
        notices += a.iter().filter(|a| matches!(a, Action::Log { .. })).count();
    }
    assert_eq!(c.store().pending_count(), 50);
    assert_eq!(notices, 1, "one notice for the whole flood, not one per stanza");
    assert_eq!(c.store().read_audit().unwrap().len(), audit_before + 49, "dropped requests write nothing");
    // Oversized and hostile names are refused before touching the store.
    let huge = "a".repeat(1 << 20);
    assert!(c.inbound(&huge, PresenceKind::Subscribe, None).is_err());
    assert!(c.inbound("..%2f..%2fetc", PresenceKind::Subscribe, None).is_err());
    assert_eq!(c.store().pending_count(), 50);
}
