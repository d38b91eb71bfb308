//! Load benchmark of the sidecar: hook events per second over keep-alive connections, and
//! the process's resident memory idle and after the load.
//!
//! Runs the real `server-trust-sidecar` binary on 127.0.0.1 with a store in a temporary
//! folder and a stand-in for ejabberd's API that answers every call (so probe answers and
//! admin messages really go out). Bounded: a fixed number of events, then SIGTERM.
//!
//! ```text
//! cargo bench -p server-trust-sidecar --bench load            # defaults
//! SIDECAR_BENCH_EVENTS=50000 SIDECAR_BENCH_CLIENTS=8 cargo bench -p server-trust-sidecar --bench load
//! SIDECAR_BENCH_ONLY=guard cargo bench -p server-trust-sidecar --bench load   # issue 14's figure only
//! ```
//!
//! The *guard* phase (issue 14, defect 2) measures the XMPP server's traffic as ejabberd's
//! module makes it (each hook call on a fresh connection, a trusted-set long-poll always
//! parked) and the admin API's, first quiet, then while 1,000 clients without a token try to
//! hold connections (`src/strangers.rs`: keep-alive health checks, slow headers, silence,
//! reconnecting as they are closed). It prints hook and admin p50/p99 for both runs and the
//! ratio. `SIDECAR_BENCH_STRANGERS` (1000), `SIDECAR_BENCH_STRANGER_EVERY_MS` (5000: the
//! issue's health check every 5 s), `SIDECAR_BENCH_GUARD_SECS` (10 per run),
//! `SIDECAR_BENCH_GUARD_ROUNDS` (5 quiet and 5 with strangers, alternating).

#[path = "../src/strangers.rs"]
mod strangers;
#[path = "../src/testkit.rs"]
mod testkit;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use testkit::{ADMIN_TOKEN, FakeApi, HOOK_TOKEN};

const HOST: &str = "verona.lit";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `bodies` to the hook with `clients` threads (one keep-alive connection each);
/// returns (events/s, p50, p99 latency).
fn run(base: &str, bodies: Vec<String>, clients: usize) -> (f64, Duration, Duration) {
    let n = bodies.len();
    let url = format!("{base}/v1/hook/presence");
    let mut shards: Vec<Vec<String>> = vec![Vec::new(); clients];
    for (i, b) in bodies.into_iter().enumerate() {
        shards[i % clients].push(b);
    }
    let started = Instant::now();
    let threads: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = testkit::client(Duration::from_secs(30));
                let auth = format!("Bearer {HOOK_TOKEN}");
                let mut lat = Vec::with_capacity(shard.len());
                for body in shard {
                    let t = Instant::now();
                    let mut resp = agent
                        .post(&url)
                        .header("Authorization", &auth)
                        .content_type("application/json")
                        .send(&body)
                        .expect("hook call");
                    let _ = resp.body_mut().read_to_string();
                    assert_eq!(resp.status().as_u16(), 202, "{body}");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (n as f64 / secs, pct(0.50), pct(0.99))
}

fn presence(from: &str, kind: &str, id: usize) -> String {
    format!(r#"{{"host":"{HOST}","from":"{from}","type":"{kind}","id":"b{id}"}}"#)
}

fn report(name: &str, events: usize, (rate, p50, p99): (f64, Duration, Duration)) {
    println!("{name:<44} {events:>7} events {rate:>9.0} events/s   p50 {p50:>9.2?}   p99 {p99:>9.2?}");
}

/// One call on a fresh connection (`Connection: close`, as ejabberd's module makes them):
/// the time from connect to the end of the answer, and the status (0: the connection failed
/// or was reset).
fn fresh_call(addr: &str, request: &[u8]) -> (Duration, u16) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let Ok(mut c) = std::net::TcpStream::connect(addr) else { return (t.elapsed(), 0) };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    if c.write_all(request).is_err() {
        return (t.elapsed(), 0);
    }
    let mut out = Vec::new();
    if c.read_to_end(&mut out).is_err() {
        return (t.elapsed(), 0);
    }
    let status =
        std::str::from_utf8(out.get(9..12).unwrap_or(b"")).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (t.elapsed(), status)
}

/// Hook and admin latencies under ejabberd-like traffic for `secs`: 4 hook clients (presence
/// from 1,000 peers, each call on a fresh connection, ~2 ms apart), one trusted-set
/// long-poll kept parked, one admin client (pending, roster, peer: ~100 calls/s, for enough
/// samples). Returns (hook latencies, admin latencies, failed calls).
fn ejabberd_traffic(addr: &str, secs: u64) -> (Vec<Duration>, Vec<Duration>, Vec<String>) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Failures::default());
    let mut hooks = Vec::new();
    for c in 0..4 {
        let (addr, stop, failed) = (addr.to_string(), stop.clone(), failed.clone());
        hooks.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let body = presence(&format!("peer{}.lit", i % 1000), ["available", "unavailable"][i % 2], i);
                let req = format!(
                    "POST /v1/hook/presence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HOOK_TOKEN}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let (t, st) = fresh_call(&addr, req.as_bytes());
                if st == 202 {
                    lat.push(t)
                } else {
                    failed.note("hook", st);
                }
                i += 4;
                std::thread::sleep(Duration::from_millis(2));
            }
            lat
        }));
    }
    let poll = {
        let (addr, stop, failed) = (addr.to_string(), stop.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let req = format!(
                    "GET /v1/hook/trusted?host={HOST}&since=1&wait=2 HTTP/1.1\r\nHost: x\r\n\
                     Authorization: Bearer {HOOK_TOKEN}\r\nConnection: close\r\n\r\n"
                );
                let st = fresh_call(&addr, req.as_bytes()).1;
                if st != 200 {
                    failed.note("long-poll", st);
                }
            }
        })
    };
    let admin = {
        let (addr, stop, failed) = (addr.to_string(), stop.clone(), failed.clone());
        std::thread::spawn(move || {
            let paths = [
                format!("/v1/hosts/{HOST}/pending"),
                format!("/v1/hosts/{HOST}/roster"),
                format!("/v1/hosts/{HOST}/peers/peer1.lit"),
            ];
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n",
                    paths[i % 3]
                );
                let (t, st) = fresh_call(&addr, req.as_bytes());
                if st == 200 {
                    lat.push(t)
                } else {
                    failed.note("admin", st);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            lat
        })
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let hook: Vec<Duration> = hooks.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let admin = admin.join().unwrap();
    poll.join().unwrap();
    let failed = failed.0.lock().unwrap().iter().map(|((what, st), n)| format!("{what} {st}: {n}")).collect();
    (hook, admin, failed)
}

/// Failed calls by (client, status); status 0: the connection failed or was reset.
#[derive(Default)]
struct Failures(std::sync::Mutex<std::collections::BTreeMap<(&'static str, u16), usize>>);

impl Failures {
    fn note(&self, what: &'static str, status: u16) {
        *self.0.lock().unwrap().entry((what, status)).or_default() += 1;
    }
}

/// The process's user + system time in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn pcts(mut lat: Vec<Duration>) -> (usize, Duration, Duration) {
    lat.sort();
    if lat.is_empty() {
        return (0, Duration::ZERO, Duration::ZERO);
    }
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (lat.len(), pct(0.50), pct(0.99))
}

/// Issue 14's figure: hook and admin p99 during ejabberd's traffic, quiet and with 1,000
/// strangers holding what connections they can. Quiet and stranger runs alternate
/// (`SIDECAR_BENCH_GUARD_ROUNDS` of each), so the load of a shared machine falls on both.
fn guard_phase(listen: &str, pid: u32) {
    let n = env_or("SIDECAR_BENCH_STRANGERS", 1000);
    let every = Duration::from_millis(env_or("SIDECAR_BENCH_STRANGER_EVERY_MS", 5000) as u64);
    let secs = env_or("SIDECAR_BENCH_GUARD_SECS", 10) as u64;
    let rounds = env_or("SIDECAR_BENCH_GUARD_ROUNDS", 5);
    let (mut hq, mut aq, mut hs, mut as_) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut fq, mut fs) = (Vec::new(), Vec::new());
    let (mut cpu_q, mut cpu_s) = (0, 0);
    let mut per_round = Vec::new();
    let mut stats = Vec::new();
    let p99 = |v: &[Duration]| pcts(v.to_vec()).2;
    for _ in 0..rounds {
        let c0 = cpu_ticks(pid);
        let (h, a, f) = ejabberd_traffic(listen, secs);
        cpu_q += cpu_ticks(pid) - c0;
        let quiet = (p99(&h), p99(&a));
        hq.extend(h);
        aq.extend(a);
        fq.extend(f);
        let strangers = strangers::Strangers::start(listen.parse().unwrap(), n, every);
        std::thread::sleep(Duration::from_secs(2));
        let c0 = cpu_ticks(pid);
        let (h, a, f) = ejabberd_traffic(listen, secs);
        cpu_s += cpu_ticks(pid) - c0;
        let open = strangers.open();
        stats.push((strangers.stop(), open));
        per_round.push((quiet, (p99(&h), p99(&a))));
        hs.extend(h);
        as_.extend(a);
        fs.extend(f);
        // Their connections are gone; let the sidecar's pool empty before the next quiet run.
        std::thread::sleep(Duration::from_secs(1));
    }
    let line = |what: &str, (k, p50, p99): (usize, Duration, Duration)| {
        println!("{what:<44} {k:>7} calls   p50 {p50:>9.2?}   p99 {p99:>9.2?}");
        p99
    };
    println!(
        "ejabberd-like traffic, {rounds} x {secs} s quiet and {rounds} x {secs} s with strangers, alternating:"
    );
    let hq99 = line("  hook, quiet", pcts(hq));
    let aq99 = line("  admin, quiet", pcts(aq));
    let hs99 = line(&format!("  hook, {n} strangers"), pcts(hs));
    let as99 = line(&format!("  admin, {n} strangers"), pcts(as_));
    println!(
        "  p99 ratio under strangers / quiet: hook {:.2}x, admin {:.2}x (goal <= 2x); failed calls: quiet {fq:?}, strangers {fs:?}",
        hs99.as_secs_f64() / hq99.as_secs_f64(),
        as99.as_secs_f64() / aq99.as_secs_f64()
    );
    for (i, ((hq, aq), (hs, as_))) in per_round.iter().enumerate() {
        println!("  round {}: p99 hook {hq:.2?} -> {hs:.2?}, admin {aq:.2?} -> {as_:.2?}", i + 1);
    }
    let pct = |ticks: u64| ticks as f64 / (secs * rounds as u64) as f64; // 100 ticks per second
    println!("  sidecar CPU: quiet {:.0} %, with strangers {:.0} %", pct(cpu_q), pct(cpu_s));
    for (s, open) in stats {
        println!(
            "  strangers: {} connects ({} failed), {} closed by the sidecar, {} health answers, {open} open at the end (most {})",
            s.connects, s.connect_errors, s.closed, s.answers, s.max_open
        );
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            println!("SIGTERM: exit {st} after {:.2?}", t.elapsed());
            return;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            println!("SIGTERM: no exit after 20 s, killed");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe harness=false benches
    }
    let limit = strangers::raise_fd_limit();
    let only_guard = std::env::var("SIDECAR_BENCH_ONLY").is_ok_and(|v| v == "guard");
    let events = env_or("SIDECAR_BENCH_EVENTS", 20_000);
    let peers = env_or("SIDECAR_BENCH_PEERS", 1_000);
    let clients = env_or("SIDECAR_BENCH_CLIENTS", 4);
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::start(false);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let config = testkit::write_setup(dir.path(), &listen, &api.url(), &[HOST], "");
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{config_text}max_pending = {}\n", peers.max(1))).unwrap();
    let log = std::fs::File::create(dir.path().join("sidecar.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_server-trust-sidecar"))
        .arg("--config")
        .arg(&config)
        .env("SERVER_TRUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the sidecar");
    let pid = child.id();
    let base = format!("http://{listen}");
    let up = Instant::now();
    while testkit::client(Duration::from_secs(30)).get(format!("{base}/v1/health")).call().is_err() {
        assert!(up.elapsed() < Duration::from_secs(10), "sidecar did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "server-trust-sidecar load benchmark: {clients} keep-alive clients, {peers} peers, pid {pid}, open files {limit}"
    );
    let idle = rss_kib(pid);
    println!("RSS idle                                     {:>7.1} MiB", idle as f64 / 1024.0);
    if only_guard {
        guard_phase(&listen, pid);
        stop(child);
        return;
    }

    // Presence from many peers: available / unavailable / probe (answered through the API).
    let kinds = ["available", "unavailable", "probe"];
    let bodies: Vec<String> =
        (0..events).map(|i| presence(&format!("peer{}.lit", i % peers), kinds[i % 3], i)).collect();
    report("presence + probes (memory path)", events, run(&base, bodies, clients));

    // First subscribe from each peer: a pending file, the roster, the audit log (fsync each),
    // and two admin messages.
    let bodies: Vec<String> = (0..peers).map(|i| presence(&format!("peer{i}.lit"), "subscribe", i)).collect();
    report("first subscribe per peer (store writes)", peers, run(&base, bodies, clients));

    // Peers repeating their request inside the repeat window: no disk, no prompt.
    let bodies: Vec<String> =
        (0..events).map(|i| presence(&format!("peer{}.lit", i % peers), "subscribe", i)).collect();
    report("repeated subscribe (repeat window)", events, run(&base, bodies, clients));

    // The same requests straight into an engine configured as the sidecar's (no HTTP, one
    // thread): what the engine and the store cost per request.
    let direct = tempfile::tempdir().unwrap();
    let cfg = server_trust::Config { max_pending: peers.max(1), ..server_trust::Config::default() };
    let engine = server_trust::Engine::open(direct.path(), HOST, cfg).unwrap();
    let t = Instant::now();
    for i in 0..peers {
        engine.inbound(&format!("peer{i}.lit"), server_trust::PresenceKind::Subscribe, None).unwrap();
    }
    let rate = peers as f64 / t.elapsed().as_secs_f64();
    println!("{:<44} {peers:>7} events {rate:>9.0} events/s", "  the engine alone: first subscribes");
    let t = Instant::now();
    for i in 0..events {
        engine
            .inbound(&format!("peer{}.lit", i % peers), server_trust::PresenceKind::Subscribe, None)
            .unwrap();
    }
    let rate = events as f64 / t.elapsed().as_secs_f64();
    println!("{:<44} {events:>7} events {rate:>9.0} events/s", "  the engine alone: repeated subscribes");

    let total = 2 * events + peers;
    // Let the API queue drain before measuring.
    let mut last = u64::MAX;
    while api.count.load(Ordering::Relaxed) != last {
        last = api.count.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = rss_kib(pid);
    println!(
        "RSS after {total} events                   {:>7.1} MiB  ({} API calls answered)",
        after as f64 / 1024.0,
        api.count.load(Ordering::Relaxed)
    );
    guard_phase(&listen, pid);
    stop(child);
}
