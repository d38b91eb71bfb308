//! What one state change costs the driver, by roster size: an inbound `subscribe` from a new
//! peer and an admin `approve`, through the C ABI as a C host calls them, with the store
//! watched as a server runs it. Each change is one journal line; roster.toml is rewritten by
//! the compaction thread, during which the server defers stanzas (replayed by `poll`, timed
//! here too, since that is driver time as well).
//!
//! `cargo bench --bench writes [-- SIZES]` (default `0,1000,10000,100000`); a figure, not a
//! test. `BENCH_DIR=/dev/shm` puts the store on tmpfs, where fsync costs nothing: what is
//! left is the CPU cost, which is what must not grow with the roster. `cargo test --benches` runs it once at sizes 0 and 1000 with fewer changes.

use std::ffi::CString;
use std::ptr;
use std::time::{Duration, Instant};

use server_trust::ffi::{
    ST_PRESENCE_TYPE_SUBSCRIBE, st_actions, st_actions_free, st_engine, st_engine_approve, st_engine_deny,
    st_engine_free, st_engine_inbound, st_engine_open, st_engine_poll, st_engine_wakeup_fd,
    st_options_default, st_status,
};
use server_trust::store::RosterEntry;
use server_trust::{Actor, Domain, Store, Subscription};

const HOST: &str = "bench.example";

fn build_roster(root: &std::path::Path, n: usize) {
    let store = Store::open(root, &Domain::new(HOST).unwrap()).unwrap();
    let entry = RosterEntry {
        state: Subscription::Both,
        approved_by: Some(Actor::Cli),
        approved_at: Some(server_trust::store::now_rfc3339()),
        ..RosterEntry::new()
    };
    let peers: Vec<(Domain, RosterEntry)> = (0..n)
        .map(|i| (Domain::new(&format!("peer{i}.example{}.org", i % 997)).unwrap(), entry.clone()))
        .collect();
    store.save_roster(peers.iter().map(|(d, e)| (d, e))).unwrap();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{what:<10} n={:<5} p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        v.len(),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.95)),
        ms(pct(&v, 0.99)),
        ms(*v.last().unwrap())
    )
}

struct Host {
    engine: *mut st_engine,
    fd: i32,
    polls: Vec<Duration>,
}

impl Host {
    fn call(&mut self, f: impl FnOnce(*mut *mut st_actions) -> st_status) -> Duration {
        let mut out: *mut st_actions = ptr::null_mut();
        let t = Instant::now();
        let s = f(&mut out);
        unsafe { st_actions_free(out) };
        let took = t.elapsed();
        assert_eq!(s, st_status::Ok);
        took
    }

    /// What a server's event loop does when the wakeup fd is readable.
    fn poll_if_woken(&mut self) {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        if unsafe { libc::poll(&mut p, 1, 0) } == 1 {
            let e = self.engine;
            let took = self.call(|out| unsafe { st_engine_poll(e, out) });
            self.polls.push(took);
        }
    }
}

fn run(size: usize, changes: usize) {
    // BENCH_DIR=/dev/shm measures the CPU cost alone (fsync is free on tmpfs).
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let t = Instant::now();
    build_roster(dir.path(), size);
    let built = t.elapsed();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let host = CString::new(HOST).unwrap();
    let mut o = st_options_default();
    o.max_pending = 1_000_000;
    o.max_pending_per_site = 1_000_000;
    let mut engine = ptr::null_mut();
    assert_eq!(unsafe { st_engine_open(root.as_ptr(), host.as_ptr(), &o, &mut engine) }, st_status::Ok);
    let mut fd = -1;
    assert_eq!(unsafe { st_engine_wakeup_fd(engine, &mut fd) }, st_status::Ok);
    let mut h = Host { engine, fd, polls: Vec::new() };
    h.poll_if_woken();
    h.polls.clear();
    // Steady state: a request from a new peer, which the admin then denies (so nothing piles
    // up in pending/).
    let (mut steady, mut deny) = (Vec::new(), Vec::new());
    for i in 0..changes / 2 {
        let p = CString::new(format!("steady{i}.s{i}.example")).unwrap();
        steady.push(h.call(|out| unsafe {
            st_engine_inbound(engine, p.as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, ptr::null(), out)
        }));
        h.poll_if_woken();
        deny.push(h.call(|out| unsafe { st_engine_deny(engine, p.as_ptr(), out) }));
        h.poll_if_woken();
    }
    let steady_polls = std::mem::take(&mut h.polls);
    // A flood: requests pile up undecided, then some are approved.
    let peers: Vec<CString> =
        (0..changes).map(|i| CString::new(format!("new{i}.site{i}.example")).unwrap()).collect();
    let mut inbound = Vec::with_capacity(changes);
    for p in &peers {
        let took = h.call(|out| unsafe {
            st_engine_inbound(engine, p.as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, ptr::null(), out)
        });
        inbound.push(took);
        h.poll_if_woken();
    }
    let mut approve = Vec::new();
    for p in peers.iter().take(changes / 5) {
        approve.push(h.call(|out| unsafe { st_engine_approve(engine, p.as_ptr(), out) }));
        h.poll_if_woken();
    }
    // Let the compaction finish and the deferred stanzas (if any) be replayed.
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(30));
        h.poll_if_woken();
    }
    // An admin edits roster.toml by hand (a section added after the seal line, as an editor
    // keeps it), then a burst of changes comes before the next fold.
    let toml = dir.path().join(HOST).join("roster.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[peers.\"edited.example\"]\nstate = \"none\"\nnote = \"added by hand\"\n");
    std::fs::write(&toml, text).unwrap();
    h.poll_if_woken();
    h.polls.clear();
    let mut edited = Vec::new();
    for i in 0..changes / 5 {
        let p = CString::new(format!("after{i}.edit{i}.example")).unwrap();
        edited.push(h.call(|out| unsafe {
            st_engine_inbound(engine, p.as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, ptr::null(), out)
        }));
        h.poll_if_woken();
    }
    let edit_polls = std::mem::take(&mut h.polls);
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(30));
        h.poll_if_woken();
    }
    let store = Store::open(dir.path(), &Domain::new(HOST).unwrap()).unwrap();
    let pending = store.pending_count();
    let roster = store.load_roster().unwrap().peers.len();
    println!("roster {size} peers (built in {built:.1?})");
    println!("  steady: {} requests from new peers, each denied", changes / 2);
    println!("    {}", line("inbound", steady));
    println!("    {}", line("deny", deny));
    if !steady_polls.is_empty() {
        println!("    {}", line("poll", steady_polls));
    }
    println!("  flood: {changes} requests left pending, then {} approved", changes / 5);
    println!("    {}", line("inbound", inbound));
    println!("    {}", line("approve", approve));
    if !h.polls.is_empty() {
        println!("    {}", line("poll", h.polls));
    }
    println!("  after a hand edit of roster.toml: {} requests from new peers", changes / 5);
    println!("    {}", line("inbound", edited));
    if !edit_polls.is_empty() {
        println!("    {}", line("poll", edit_polls));
    }
    let expected = (changes - changes / 5 + changes / 5, size + changes + 1 + changes / 5);
    println!(
        "  after: {pending} pending files, {roster} roster entries (expected {} and {})",
        expected.0, expected.1
    );
    assert_eq!(pending, expected.0, "every request kept until decided");
    assert_eq!(roster, expected.1, "every change in the roster");
    unsafe { st_engine_free(engine) };
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .find(|a| a.contains(',') || a.parse::<usize>().is_ok())
        .map(|a| a.split(',').map(|s| s.parse().expect("sizes: comma-separated numbers")).collect())
        .unwrap_or(if bench { vec![0, 1_000, 10_000, 100_000] } else { vec![0, 1_000] });
    for size in sizes {
        run(size, if bench { 1000 } else { 50 });
    }
}
