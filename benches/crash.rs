//! kill -9 of a store writer at random points, many times: every request the engine
//! acknowledged must be in the store afterwards, every file must parse, no temp file may be
//! left. `cargo bench --bench crash [-- ITERATIONS]` (default 1000). Figures, not a test.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server_trust::{Config, Engine, Subscription};
use server_trust_lab::artifacts;

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        watch: false,
        max_pending: 1_000_000,
        max_pending_per_site: 1_000_000,
        ..Config::default()
    };
    Engine::open(dir.path(), "capulet.lit", config()).unwrap();
    let writer = &artifacts::get().store_writer;
    let mut acked = BTreeSet::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let t0 = Instant::now();
    for _ in 0..iterations {
        let mut child = Command::new(writer).arg(dir.path()).stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<_>>());
        // A random point: 0.5 to 20 ms into the run (start-up included), xorshift for the dice.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(500 + seed % 19_500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
    }
    let killing = t0.elapsed();
    // The next open cleans what the killed writers left; poll recovers what a roster missed.
    let e = Engine::open(dir.path(), "capulet.lit", config()).unwrap();
    let (reqs, bad) = e.store().list_pending();
    e.poll().unwrap();
    let stored: BTreeSet<String> = reqs.iter().map(|r| r.peer.to_string()).collect();
    let lost: Vec<_> = acked.iter().filter(|p| !stored.contains(*p)).collect();
    let not_pending =
        acked.iter().filter(|p| e.state(p).map_or(true, |s| s != Subscription::NonePendingIn)).count();
    // The engine's compaction may be writing its temp file right now: let it finish first.
    let host_dir = e.store().dir().to_path_buf();
    drop(e);
    let mut leftovers = 0;
    for sub in ["", "pending", "outbound"] {
        let d = host_dir.join(sub);
        leftovers += std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().starts_with(".st-tmp-"))
            .map(|f| eprintln!("  left: {}", f.path().display()))
            .count();
    }
    println!(
        "kill -9 of a store writer at random points: {iterations} iterations in {:.1} s",
        killing.as_secs_f64()
    );
    println!("  acknowledged requests {}, in the store {}", acked.len(), stored.len());
    println!(
        "  lost acknowledged {} (goal 0), unparsable files {} (goal 0), not pending after recovery {} (goal 0), leftover temp files {} (goal 0)",
        lost.len(),
        bad.len(),
        not_pending,
        leftovers
    );
    if !lost.is_empty() || !bad.is_empty() || not_pending > 0 || leftovers > 0 {
        eprintln!("  FAILED: lost {lost:?}, bad {bad:?}");
        std::process::exit(1);
    }
}
