//! Prosody benchmarks (XEP-0267 issue goals), against two REAL Prosody 0.12 servers on
//! loopback (the lab crate, crates/lab). See benches/README.md.
//!
//! 1. Approval latency: `server-trust approve PEER` on capulet -> `subscribed` recorded by the
//!    montague server over s2s. Clock: wall time (Unix seconds) taken just before spawning the
//!    CLI, to the `t` (Prosody's util.time.now(), same machine clock) of montague's record.
//!    Requests come from extra VirtualHosts on the montague server (`r0.lit`, `r1.lit`, ...),
//!    one per run, all made pending first, then approved one at a time.
//!    Runs are spaced by a random 0-300 ms pause so the CLI lands at a random phase of the
//!    module's poll timer. Done for poll interval 0.1 s (the module default, which the lab
//!    also sets) and 0.25 s (a slower fallback timer). Goal: p95 <= 250 ms.
//! 2. Trust check inside Prosody (benches/lua/mod_server_trust_bench.lua, loaded on capulet):
//!    ns/call (os.clock CPU time, N = 1e6) of (a) `is_trusted(peer)` (Rust, via
//!    module:depends("server_trust"), answered from the module's Lua mirror of the trusted
//!    set), (b) a Lua table lookup, (c) `module:fire_event("peer-is-subscribed", peer)`, (d)
//!    the module's read-only view `trusted_peers[peer]`, (e) an empty Lua function call (the
//!    floor of any call). Peers: a trusted one, a stranger, and the trusted one in uppercase.
//!    Goals: (a) faster than (c); (a) and (d) within 2x of (b).
//!
//! Run: `cargo bench --bench prosody`. The lab builds the CLI and the Lua bridge for the
//! profile in use (release under `cargo bench`); set `PROSODY_BENCH_NATIVE=PATH` to load
//! another `libserver_trust_lua.so`.
//! Env: PROSODY_BENCH_RUNS (default 40 per poll interval), PROSODY_BENCH_N (default 1000000).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use server_trust_lab::lua::lua_str;
use server_trust_lab::stats::stats;
use server_trust_lab::{CAPULET, Lab, LabOptions, Server, TrustAdmin, artifacts};

const WAIT: Duration = Duration::from_secs(20);
const GOAL_P95_MS: f64 = 250.0;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok()).map_or(default, |v| v as usize)
}

/// The Lua bridge named by PROSODY_BENCH_NATIVE, if any (else the lab's, for this profile).
fn native_override() -> Option<PathBuf> {
    std::env::var_os("PROSODY_BENCH_NATIVE").filter(|s| !s.is_empty()).map(PathBuf::from)
}

fn pending_peers(srv: &Server) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(&srv.cli_text(&["--json", "pending"])).unwrap();
    v.as_array().unwrap().iter().filter_map(|e| e["peer"].as_str().map(str::to_owned)).collect()
}

/// Tiny xorshift PRNG (no extra dependency) for the pauses between runs.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        Rng(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Run {
    /// CLI spawn -> montague's record of `subscribed` (the measured latency)
    total: f64,
    /// CLI spawn -> CLI exit
    cli: f64,
    /// CLI exit -> capulet routes `subscribed` (waiting for the module's poll timer + engine)
    poll: f64,
    /// capulet routes it -> montague receives it (s2s; the stream already exists)
    s2s: f64,
}

struct Series {
    label: String,
    poll_interval: f64,
    runs: Vec<Run>,
}

fn start_lab(poll: Option<f64>, hosts: &[String]) -> Lab {
    let native_module = native_override();
    if let Some(native) = &native_module {
        assert!(native.exists(), "PROSODY_BENCH_NATIVE: {} is missing", native.display());
    }
    Lab::with_server_trust(LabOptions {
        // Set after the lab's own 0.1, so this value wins.
        extra_global: poll.map(|p| format!("server_trust_poll_interval = {p}\n")).unwrap_or_default(),
        montague_extra_hosts: hosts.to_vec(),
        plugin_paths: vec![artifacts::workspace_dir().join("benches").join("lua")],
        native_module,
        ..LabOptions::default()
    })
}

/// `>` raw-Lua shell line posting one stanza per host in `hosts`, built by `stanza_expr` (a Lua
/// expression using `st` and `h`).
fn post_each(srv: &Server, from_expr: &str, hosts: &[String], stanza_expr: &str) {
    let list = hosts.iter().map(|h| lua_str(h)).collect::<Vec<_>>().join(",");
    let line = format!(
        ">local st = require'util.stanza' for _, h in ipairs({{{list}}}) do \
         prosody.core_post_stanza(prosody.hosts[{from_expr}], {stanza_expr}) end return 'posted'"
    );
    let out = srv.shell_ok(&line);
    assert!(out.contains("posted"), "{out}");
}

/// Approve each of `peers` on capulet in turn and time it.
fn approve_series(lab: &Lab, peers: &[String], rng: &mut Rng) -> Vec<Run> {
    let (m, c) = (&lab.montague, &lab.capulet);
    let mut runs = Vec::new();
    for peer in peers {
        thread::sleep(Duration::from_millis(rng.below(300)));
        let t0 = now();
        c.cli(&["approve", peer]);
        let t_cli = now();
        let got = m.wait_for(&format!("subscribed from capulet to {peer}"), WAIT, |s| {
            s.via_s2s()
                && s.host == *peer
                && s.name == "presence"
                && s.is_type("subscribed")
                && s.from.as_deref() == Some(CAPULET)
        });
        let out = c.wait_for(&format!("capulet routes subscribed to {peer}"), WAIT, |s| {
            s.dir == "out"
                && s.name == "presence"
                && s.is_type("subscribed")
                && s.to.as_deref() == Some(peer.as_str())
        });
        runs.push(Run { total: got.t - t0, cli: t_cli - t0, poll: out.t - t_cli, s2s: got.t - out.t });
    }
    runs
}

struct TrustBench {
    peer: String,
    line: String,
    empty: f64,
    a: f64,
    b: f64,
    c: f64,
    d: f64,
    e: f64,
    ra: String,
    rc: String,
}

fn trust_bench(srv: &Server, n: usize, peer: &str) -> TrustBench {
    let out = srv.shell_ok(&format!("server_trust_bench:run({n}, {})", lua_str(peer)));
    let ok =
        out.lines().find(|l| l.contains("OK: bench")).unwrap_or_else(|| panic!("no result line:\n{out}"));
    let field = |k: &str| -> String {
        ok.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {ok}"))
            .to_owned()
    };
    let num = |k: &str| field(k).parse::<f64>().unwrap();
    TrustBench {
        peer: peer.to_owned(),
        line: out.lines().filter(|l| !l.contains("Configuration warning")).collect::<Vec<_>>().join("\n"),
        empty: num("empty"),
        a: num("a"),
        b: num("b"),
        c: num("c"),
        d: num("d"),
        e: num("e"),
        ra: field("ra"),
        rc: field("rc"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special: only run
    // when invoked as a benchmark (or explicitly with PROSODY_BENCH=1).
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("PROSODY_BENCH").is_none() {
        println!("prosody bench: skipped (run with `cargo bench --bench prosody`)");
        return;
    }
    let runs = env_usize("PROSODY_BENCH_RUNS", 40).max(1);
    let n = env_usize("PROSODY_BENCH_N", 1_000_000).max(1);
    let native = native_override().unwrap_or_else(|| artifacts::lua_module().to_path_buf());
    println!("prosody bench: {runs} runs per series, N = {n}, Lua bridge {}", native.display());

    let all: Vec<String> = (0..runs).map(|i| format!("r{i}.lit")).collect();
    let mut rng = Rng::new();
    let mut series = Vec::new();
    let mut trust = Vec::new();

    for (poll, label) in [(None, "0.1 (module default)"), (Some(0.25), "0.25")] {
        let interval = poll.unwrap_or(0.1);
        eprintln!("[bench] starting lab, poll interval {label}");
        let lab = start_lab(poll, &all);
        let (m, c) = (&lab.montague, &lab.capulet);

        // One pending request per extra host.
        post_each(
            m,
            "h",
            &all,
            "st.presence({ from = h, to = 'capulet.lit', type = 'subscribe', id = 'pb-'..h })",
        );
        let want: BTreeSet<String> = all.iter().cloned().collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let have = pending_peers(c);
            if want.is_subset(&have) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pending never listed {:?}",
                want.difference(&have).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(50));
        }
        // No warm-up needed: capulet authenticated each requester's stream with dialback,
        // which opened capulet's outgoing stream to that domain, so the answer never waits
        // for an s2s connection (same as for a real request).
        eprintln!("[bench] approving {} peers", all.len());
        series.push(Series {
            label: format!("poll {label}"),
            poll_interval: interval,
            runs: approve_series(&lab, &all, &mut rng),
        });

        if trust.is_empty() {
            eprintln!("[bench] trust check, N = {n}");
            let out = c.shell_ok(&format!("module:load(\"server_trust_bench\", \"{CAPULET}\")"));
            assert!(out.contains("Loaded for") || out.contains("loaded onto 1 host"), "{out}");
            trust.push(trust_bench(c, n, &all[0]));
            trust.push(trust_bench(c, n, "stranger.example"));
            // A spelling of a trusted peer that is not its normal form (the spelling cache).
            trust.push(trust_bench(c, n, &all[0].to_uppercase()));
        }
        drop(lab);
    }

    println!();
    println!("== Approval latency: CLI `approve` on capulet -> `subscribed` recorded by montague (ms) ==");
    println!(
        "{:<34} {:>4} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>9} {:>8}  goal p95<={GOAL_P95_MS:.0}",
        "series", "n", "p50", "p95", "max", "mean", "cli p50", "poll p50", "s2s p50"
    );
    for s in &series {
        let t = stats(s.runs.iter().map(|r| r.total));
        let cl = stats(s.runs.iter().map(|r| r.cli));
        let po = stats(s.runs.iter().map(|r| r.poll));
        let ss = stats(s.runs.iter().map(|r| r.s2s));
        println!(
            "{:<34} {:>4} {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>9.1} {:>8.1}  {}",
            s.label,
            s.runs.len(),
            t.p50,
            t.p95,
            t.max,
            t.mean,
            cl.p50,
            po.p50,
            ss.p50,
            if t.p95 <= GOAL_P95_MS { "MET" } else { "MISSED" }
        );
    }
    println!(
        "  cli = spawn -> exit of `server-trust approve`; poll = CLI exit -> capulet routes `subscribed`"
    );
    println!("  (the module's poll timer); s2s = capulet routes it -> montague records it.");
    for s in &series {
        let po = stats(s.runs.iter().map(|r| r.poll));
        let ss = stats(s.runs.iter().map(|r| r.s2s));
        println!(
            "  {:<32} poll: p95 {:>6.1} max {:>6.1} (interval {:.0} ms)   s2s: p95 {:>6.1} max {:>6.1}",
            s.label,
            po.p95,
            po.max,
            s.poll_interval * 1000.0,
            ss.p95,
            ss.max
        );
    }

    println!();
    println!(
        "== Trust check inside Prosody (capulet, N = {n}, os.clock CPU ns/call, empty loop not subtracted) =="
    );
    println!(
        "{:<20} {:>8} {:>14} {:>12} {:>16} {:>17} {:>12}  {:>8} {:>8}  goals: a<c, a/b and d/b <= 2",
        "peer",
        "empty",
        "(a) is_trusted",
        "(b) t[peer]",
        "(c) fire_event",
        "(d) trusted_peers",
        "(e) f(peer)",
        "a/b",
        "d/b"
    );
    for t in &trust {
        println!(
            "{:<20} {:>8.1} {:>14.1} {:>12.1} {:>16.1} {:>17.1} {:>12.1}  {:>7.2}x {:>7.2}x  a<c {} (a->{}, c->{})",
            t.peer,
            t.empty,
            t.a,
            t.b,
            t.c,
            t.d,
            t.e,
            t.a / t.b,
            t.d / t.b,
            if t.a < t.c { "MET" } else { "MISSED" },
            t.ra,
            t.rc
        );
    }
    for t in &trust {
        println!("\n{}", t.line);
    }
}
