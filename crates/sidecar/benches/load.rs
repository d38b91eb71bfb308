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
//! ```

#[path = "../src/testkit.rs"]
mod testkit;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use testkit::{FakeApi, HOOK_TOKEN};

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
    println!("server-trust-sidecar load benchmark: {clients} keep-alive clients, {peers} peers, pid {pid}");
    let idle = rss_kib(pid);
    println!("RSS idle                                     {:>7.1} MiB", idle as f64 / 1024.0);

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
    stop(child);
}
