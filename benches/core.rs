//! Performance goals of server-trust, measured with criterion (see `benches/README.md`).
//!
//! 1. `is_trusted/*`: `st_is_trusted` through the C ABI on a 100k-peer roster, hit and miss,
//!    against a plain `HashSet<String>` lookup of the same `&str` (goal: ratio <= 1.5x).
//! 2. `engine_open/100k_peers`: `Engine::open` (watch off) on a 100k-peer roster.toml
//!    (goal: <= 150 ms). The file size is printed on stderr.
//! 3. `poll_1000_pending/*`: `Engine::poll` with nothing changed on a store holding 1000
//!    pending requests, with the inotify watcher on and with it off (the scanning fallback).
//!
//! `is_trusted_parts/*` and `engine_open_parts/*` break goals 1 and 2 down (lock, C string,
//! normalisation; file read, TOML parse, map conversion) to show where the time goes.
//!
//! Stores are built directly (`Store::save_roster`, one pending file per peer) so set-up
//! takes about a second, not the minutes that 100k handshakes through the engine would.
//! `cargo test --benches` runs every benchmark once (criterion's test mode) as a smoke test,
//! on a 5k-peer roster instead of 100k.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::hint::black_box;
use std::path::Path;
use std::ptr;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use server_trust::ffi::{
    st_engine, st_engine_free, st_engine_open, st_is_trusted, st_is_trusted_n, st_options_default, st_status,
};
use server_trust::store::{Decision, PendingRequest, RosterEntry, RosterFile, now_rfc3339};
use server_trust::{Actor, Config, Domain, Engine, Store, Subscription};

const HOST: &str = "bench.example";
const ROSTER_PEERS: usize = 100_000;
/// Roster size in criterion's test mode (`cargo test --benches`, no `--bench` flag): a quick
/// smoke run of the same code, so CI does not parse 20 MB of TOML in a debug build.
const SMOKE_ROSTER_PEERS: usize = 5_000;
const PENDING_PEERS: usize = 1_000;
/// A valid, already normalised domain that is not in the roster.
const MISS: &str = "stranger.example.net";

fn roster_peer(i: usize) -> String {
    format!("xmpp{i}.example.net")
}

fn pending_peer(i: usize) -> String {
    format!("req{i}.example.com")
}

fn domain(s: &str) -> Domain {
    Domain::new(s).expect("benchmark domains are valid")
}

/// An approved buddy as the engine leaves it after approve + reciprocate.
fn approved_entry(i: usize, now: &str) -> RosterEntry {
    RosterEntry {
        state: if i.is_multiple_of(4) { Subscription::From } else { Subscription::Both },
        groups: if i.is_multiple_of(10) { vec!["incidents".into()] } else { Vec::new() },
        requested_at: Some(now.to_string()),
        requested_by: Some(Actor::Engine),
        approved_at: Some(now.to_string()),
        approved_by: Some(Actor::Cli),
        updated_at: Some(now.to_string()),
        ..RosterEntry::new()
    }
}

/// Writes `<root>/bench.example/roster.toml` with `n` approved peers; returns its size.
fn build_roster(root: &Path, n: usize) -> u64 {
    let store = Store::open(root, &domain(HOST)).expect("open store");
    let now = now_rfc3339();
    let peers: BTreeMap<Domain, RosterEntry> =
        (0..n).map(|i| (domain(&roster_peer(i)), approved_entry(i, &now))).collect();
    store.save_roster(&peers).expect("save roster");
    std::fs::metadata(store.dir().join("roster.toml")).expect("roster.toml written").len()
}

/// A store with 1000 undecided inbound requests: roster entries in `none+pending-in` and one
/// `pending/<peer>.toml` each, byte for byte what `Store::write_pending` writes (written
/// without 1000 fsyncs: the first file is the template for the others).
fn build_pending_1000(root: &Path) {
    let store = Store::open(root, &domain(HOST)).expect("open store");
    let now = now_rfc3339();
    let template_peer = "template-peer.example.com";
    let req = |peer: &str| PendingRequest {
        peer: domain(peer),
        decision: Decision::Pending,
        decided_by: None,
        decided_at: None,
        first_seen: now.clone(),
        last_seen: now.clone(),
        times_seen: 1,
        stanza_id: Some("sub-1".into()),
        evidence: Default::default(),
    };
    store.write_pending(&req(template_peer)).expect("write pending");
    let template_path = store.pending_path(&domain(template_peer));
    let template = std::fs::read_to_string(&template_path).expect("read template");
    std::fs::remove_file(&template_path).expect("remove template");
    let mut peers = BTreeMap::new();
    for i in 0..PENDING_PEERS {
        let peer = pending_peer(i);
        let d = domain(&peer);
        std::fs::write(store.pending_path(&d), template.replace(template_peer, &peer))
            .expect("write pending file");
        let entry = RosterEntry {
            state: Subscription::NonePendingIn,
            updated_at: Some(now.clone()),
            ..RosterEntry::new()
        };
        peers.insert(d, entry);
    }
    store.save_roster(&peers).expect("save roster");
    let (ok, bad) = store.list_pending();
    assert!(bad.is_empty() && ok.len() == PENDING_PEERS, "pending set-up: {bad:?}");
}

/// Goal 1: the C ABI lookup against the best a host could do with its own `HashSet`.
fn bench_is_trusted(c: &mut Criterion, root: &Path, n: usize) {
    let root_c = CString::new(root.to_str().expect("UTF-8 temp path")).unwrap();
    let host_c = CString::new(HOST).unwrap();
    let mut options = st_options_default();
    options.watch = false;
    let mut engine: *mut st_engine = ptr::null_mut();
    let status = unsafe { st_engine_open(root_c.as_ptr(), host_c.as_ptr(), &options, &mut engine) };
    assert_eq!(status, st_status::Ok, "st_engine_open");

    let hit_str = roster_peer(n / 2 + 1); // state Both
    let hit = CString::new(hit_str.as_str()).unwrap();
    let miss = CString::new(MISS).unwrap();
    let set: HashSet<String> = (0..n).map(roster_peer).collect();

    let ffi = |peer: &CString| -> bool {
        let mut out = false;
        let status = unsafe { st_is_trusted(engine, peer.as_ptr(), ptr::null(), &mut out) };
        assert_eq!(status, st_status::Ok);
        out
    };
    assert!(ffi(&hit) && set.contains(hit_str.as_str()), "hit must be trusted");
    assert!(!ffi(&miss) && !set.contains(MISS), "miss must not be trusted");

    let mut g = c.benchmark_group("is_trusted");
    g.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, peer) in [("hit", &hit), ("miss", &miss)] {
        let p = peer.as_ptr();
        g.bench_function(format!("ffi_{name}"), |b| {
            let mut out = false;
            b.iter(|| {
                // Exactly what a C host does: pass a NUL-terminated string, read *out.
                let s = unsafe { st_is_trusted(black_box(engine), black_box(p), ptr::null(), &mut out) };
                black_box((s, out))
            })
        });
    }
    for (name, key) in [("hit", hit_str.as_str()), ("miss", MISS)] {
        g.bench_function(format!("ffi_n_{name}"), |b| {
            let mut out = false;
            b.iter(|| {
                // The counted variant: what a host with the name's length at hand calls.
                let (p, n) = (black_box(key.as_ptr()), black_box(key.len()));
                let s = unsafe { st_is_trusted_n(black_box(engine), p.cast(), n, &mut out) };
                black_box((s, out))
            })
        });
        g.bench_function(format!("hashset_{name}"), |b| b.iter(|| set.contains(black_box(key))));
    }
    g.finish();
    unsafe { st_engine_free(engine) };

    // Where the FFI lookup's time goes (diagnostics for goal 1, no goal of their own).
    let engine = Engine::open(root, HOST, Config { watch: false, ..Config::default() }).expect("open");
    let locked = parking_lot::RwLock::new(set);
    let mut g = c.benchmark_group("is_trusted_parts");
    g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500));
    g.bench_function("engine_hit_no_ffi", |b| b.iter(|| engine.is_trusted(black_box(&hit_str), None)));
    g.bench_function("engine_miss_no_ffi", |b| b.iter(|| engine.is_trusted(black_box(MISS), None)));
    g.bench_function("rwlock_hashset_hit", |b| {
        b.iter(|| locked.read().contains(black_box(hit_str.as_str())))
    });
    g.bench_function("domain_new_normal_miss", |b| b.iter(|| Domain::new(black_box(MISS)).is_ok()));
    g.finish();
}

/// Goal 2: start-up cost of a big roster.
fn bench_open(c: &mut Criterion, root: &Path, n: usize) {
    let config = Config { watch: false, ..Config::default() };
    let e = Engine::open(root, HOST, config.clone()).expect("open 100k");
    assert_eq!(e.roster().len(), n);
    drop(e);

    let mut g = c.benchmark_group("engine_open");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("100k_peers", |b| {
        // Dropping 100k entries is not part of opening: keep it out of the timing.
        b.iter_with_large_drop(|| Engine::open(black_box(root), HOST, config.clone()).expect("open"))
    });
    g.finish();

    // Where the open's time goes (diagnostics for goal 2, no goal of their own).
    let path = root.join(HOST).join("roster.toml");
    let text = std::fs::read_to_string(&path).expect("read roster");
    let mut g = c.benchmark_group("engine_open_parts");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("read_to_string", |b| {
        b.iter_with_large_drop(|| std::fs::read_to_string(black_box(&path)).expect("read"))
    });
    g.bench_function("toml_parse_roster_file", |b| {
        b.iter_with_large_drop(|| toml::from_str::<RosterFile>(black_box(&text)).expect("parse"))
    });
    let parsed: RosterFile = toml::from_str(&text).expect("parse");
    g.bench_function("btreemap_into_hashmap", |b| {
        b.iter_batched(
            || parsed.peers.clone(),
            |peers| peers.into_iter().collect::<std::collections::HashMap<_, _>>(),
            criterion::BatchSize::PerIteration,
        )
    });
    // The same roster as JSON (serde_json is already a dependency): what a non-TOML cache
    // or format would cost to load.
    let json = serde_json::to_string(&parsed).expect("to json");
    g.bench_function("json_parse_same_roster", |b| {
        b.iter_with_large_drop(|| serde_json::from_str::<RosterFile>(black_box(&json)).expect("parse json"))
    });
    g.finish();
}

/// Goal 3: the idle timer tick a driver runs every few seconds.
fn bench_poll(c: &mut Criterion, watched_root: &Path, scanned_root: &Path) {
    let watched = Engine::open(watched_root, HOST, Config::default()).expect("open watched");
    assert!(watched.config().watch);
    let scanned =
        Engine::open(scanned_root, HOST, Config { watch: false, ..Config::default() }).expect("open scanned");
    for e in [&watched, &scanned] {
        // The first poll after open always scans; it must find nothing to do.
        let actions = e.poll().expect("poll");
        assert!(actions.is_empty(), "nothing changed, yet poll returned {actions:?}");
        assert_eq!(e.store().pending_count(), PENDING_PEERS);
    }
    // Let any late inotify event land, then clear it, so the measured polls are idle ones.
    // Diagnostic: a poll that scans opens every pending file; if the watcher counts those
    // opens as changes, each scan arms the next one and idle polls keep scanning.
    let idle: Vec<Duration> = (0..4)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let t = std::time::Instant::now();
            assert!(watched.poll().expect("poll").is_empty());
            t.elapsed()
        })
        .collect();
    eprintln!("diagnostic: watch-on polls, each after a 100 ms pause with no change: {idle:.2?}");

    let mut g = c.benchmark_group("poll_1000_pending");
    g.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("watch_on", |b| b.iter(|| black_box(watched.poll().expect("poll"))));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("watch_off", |b| b.iter(|| black_box(scanned.poll().expect("poll"))));
    g.finish();
    assert!(watched.poll().expect("poll").is_empty() && scanned.poll().expect("poll").is_empty());
}

fn main() {
    // `cargo bench` passes --bench; without it criterion only runs each benchmark once.
    let n = if std::env::args().any(|a| a == "--bench") { ROSTER_PEERS } else { SMOKE_ROSTER_PEERS };
    let mut c = Criterion::default().configure_from_args();

    let big = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let size = build_roster(big.path(), n);
    eprintln!(
        "fixture: roster.toml with {n} peers = {size} bytes ({:.1} MiB), built in {:.2?}",
        size as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    bench_is_trusted(&mut c, big.path(), n);
    bench_open(&mut c, big.path(), n);
    drop(big);

    let watched = tempfile::tempdir().expect("tempdir");
    let scanned = tempfile::tempdir().expect("tempdir");
    build_pending_1000(watched.path());
    build_pending_1000(scanned.path());
    eprintln!("fixture: 2 stores with {PENDING_PEERS} pending requests each");
    bench_poll(&mut c, watched.path(), scanned.path());

    c.final_summary();
}
