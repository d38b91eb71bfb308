//! Flood bench (XEP-0267 issue): N distinct domains (1,000 by default) send
//! `<presence type='subscribe'/>` from their domain JID to capulet.lit over REAL s2s on
//! loopback, against a real Prosody 0.12 with mod_server_trust and its production defaults
//! (max_pending 1000, max_pending_per_site 10, notify_burst 5). See benches/README.md.
//!
//! * Attacker: the lab's montague server with N extra VirtualHosts (`xI.attacker.lit`,
//!   `xI.wJ.lit`, `sI.lit`, crates/lab/src/flood.rs): each opens its own s2s stream to
//!   capulet (STARTTLS, dialback back to that domain). Wave 1 opens the streams; waves 2.. send
//!   the same requests again over them (FLOOD_WAVES, default 3). Wave 1 goes out in batches of
//!   FLOOD_BATCH domains (default 100; 0: all at once), each as soon as capulet got the last.
//! * During the whole run a c2s user of capulet (plain TCP + SASL PLAIN on loopback) sends a
//!   XEP-0199 ping to capulet.lit every 10 ms, one at a time, and times the answer: p50/p95/
//!   p99/max for the baseline before the flood, the flood, and after it (goal p99 <= 50 ms).
//! * capulet's VmRSS (/proc/PID/status) is sampled every 200 ms: before, after each wave, at
//!   the end (flat: later waves and the wait after the flood add at most a small bound).
//! * Checked (assert): pending files = what the caps allow (computed from the domains with
//!   the engine's own site rule), at most max_pending_per_site per registrable domain, no
//!   `subscribed` sent by capulet nor received by any attacker domain, nobody trusted, and the
//!   admin prompts batched: notify_burst single prompts, then one digest for the rest (it comes
//!   when the minute of the burst is over, so the bench waits for it).
//!
//! Run: `cargo bench --bench flood` (full, ~3-4 min after the build). `cargo test --benches`
//! skips it unless FLOOD_BENCH=1, which then runs a short version (50 domains, 1 minute for the
//! digest). Env: FLOOD_DOMAINS (N), FLOOD_WAVES, FLOOD_BATCH, FLOOD_BASELINE_S (baseline
//! seconds, default 10, 3 short), FLOOD_DEBUG_LOG=1 (keep the lab's debug log, which slows both
//! servers a lot), FLOOD_CONTROL=1 (the same streams and stanza count, but `<message
//! type='headline'/>` to capulet.lit, which no module acts on: the s2s flood's own cost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use server_trust::Domain;
use server_trust_lab::c2s::C2s;
use server_trust_lab::flood::{
    FLOOD_PASSWORD, FLOOD_START_TIMEOUT, FLOOD_USER, RecordTail, create_flood_user, flood_domains,
    flood_lab_options, headline_from, lua_heap_kib, subscribe_from, vm_rss_kib,
};
use server_trust_lab::process::tail as tail_of;
use server_trust_lab::stanza::read_records;
use server_trust_lab::{CAPULET, Lab, Server, TrustAdmin};

const GOAL_P99_MS: f64 = 50.0;
const PING_EVERY: Duration = Duration::from_millis(10);
const PING_TIMEOUT: Duration = Duration::from_secs(30);
/// The module's (engine's) production defaults, which the bench does not change.
const MAX_PENDING: usize = 1000;
const MAX_PENDING_PER_SITE: usize = 10;
const NOTIFY_BURST: usize = 5;
/// "Flat": RSS at the end may exceed RSS after wave 1 by at most this much.
const RSS_FLAT_BOUND_KIB: u64 = 8 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(default)
}

/// One ping: when it was sent (since the bench's epoch) and its round trip.
#[derive(Clone, Copy)]
struct Ping {
    at: f64,
    rtt: f64,
}

/// Nearest-rank percentiles in ms.
struct Pct {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn pct(mut v: Vec<f64>) -> Option<Pct> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let r = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1] * 1000.0;
    Some(Pct { n, p50: r(0.50), p95: r(0.95), p99: r(0.99), max: v[n - 1] * 1000.0 })
}

/// The pings sent in [from, to), raw and with the samples a 10 ms sender would have taken
/// while one ping was stuck (coordinated omission: a 500 ms stall is 50 late pings, not one).
fn window(pings: &[Ping], from: f64, to: f64) -> (Option<Pct>, Option<Pct>) {
    let sel: Vec<Ping> = pings.iter().copied().filter(|p| p.at >= from && p.at < to).collect();
    let raw = pct(sel.iter().map(|p| p.rtt).collect());
    let step = PING_EVERY.as_secs_f64();
    let mut corrected = Vec::new();
    for p in &sel {
        corrected.push(p.rtt);
        let mut missed = p.rtt - step;
        while missed > step {
            corrected.push(missed);
            missed -= step;
        }
    }
    (raw, pct(corrected))
}

/// Pending requests the caps allow for `domains`: at most MAX_PENDING_PER_SITE per registrable
/// domain (the engine's `Domain::site`, Public Suffix List), at most MAX_PENDING in all.
fn expected_pending(domains: &[String]) -> (usize, BTreeMap<String, usize>) {
    let mut sites = BTreeMap::new();
    for d in domains {
        *sites.entry(Domain::new(d).expect("valid domain").site()).or_insert(0usize) += 1;
    }
    let allowed = sites.values().map(|&c| c.min(MAX_PENDING_PER_SITE)).sum::<usize>().min(MAX_PENDING);
    (allowed, sites)
}

fn pending_files(srv: &Server) -> Vec<String> {
    let dir = srv.store.join(CAPULET).join("pending");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: the short version
    // runs only with FLOOD_BENCH=1.
    let as_bench = std::env::args().any(|a| a == "--bench");
    if !as_bench && std::env::var_os("FLOOD_BENCH").is_none_or(|v| v != "1") {
        println!(
            "flood bench: skipped (run with `cargo bench --bench flood`, or FLOOD_BENCH=1 for a short run)"
        );
        return;
    }
    let n = env_usize("FLOOD_DOMAINS", if as_bench { 1000 } else { 50 }).max(1);
    let waves = env_usize("FLOOD_WAVES", 3).max(1);
    let baseline_s = env_usize("FLOOD_BASELINE_S", if as_bench { 10 } else { 3 }).max(1) as f64;
    let batch = env_usize("FLOOD_BATCH", 100);
    // Control run: the same streams and as many stanzas, but headline messages to the host,
    // which no module acts on: what the s2s flood costs Prosody by itself.
    let control = std::env::var_os("FLOOD_CONTROL").is_some_and(|v| v == "1");
    let (kind, ktype) = if control { ("message", "headline") } else { ("presence", "subscribe") };
    let debug_log = std::env::var_os("FLOOD_DEBUG_LOG").is_some_and(|v| v == "1");
    // Interleaved (fixed-seed shuffle), so every batch of wave 1 mixes the sites.
    let mut domains = flood_domains(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..domains.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        domains.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let (allowed, sites) = expected_pending(&domains);
    println!(
        "flood bench: {n} domains over {} registrable domains, {waves} waves (wave 1 in batches of {}), \
         caps {MAX_PENDING} / {MAX_PENDING_PER_SITE} per site -> {allowed} pending allowed",
        sites.len(),
        if batch == 0 { n } else { batch.min(n) }
    );

    // A thousand VirtualHosts take 20-40 s to load (certificates, modules per host).
    Server::set_start_timeout(FLOOD_START_TIMEOUT);
    // Built first (the lab builds the CLI and the Lua bridge), so the start-up time below is
    // the servers'.
    server_trust_lab::artifacts::get();
    let t_start = Instant::now();
    eprintln!("[flood] starting the lab (montague with {n} extra VirtualHosts)");
    let lab = Lab::with_server_trust(flood_lab_options(&domains, debug_log));
    let startup_s = t_start.elapsed().as_secs_f64();
    let (m, c) = (&lab.montague, &lab.capulet);
    create_flood_user(c);
    let cpid = c.pid().expect("capulet runs");
    let mpid = m.pid().expect("montague runs");
    eprintln!("[flood] lab up in {startup_s:.1} s; capulet pid {cpid}, montague pid {mpid}");
    let heap_before = lua_heap_kib(c, true);

    let epoch = Instant::now();
    let since = move || epoch.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));

    // The c2s user: one ping at a time, every 10 ms.
    let addr = format!("{}:5222", c.ip);
    let mut client = C2s::login(&addr, CAPULET, FLOOD_USER, FLOOD_PASSWORD, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("c2s login: {e}\n{}", c.dump(&[])));
    eprintln!("[flood] c2s bound as {}", client.jid);
    let pinger = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut pings = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let at = since();
                match client.ping(PING_TIMEOUT) {
                    Ok(rtt) => pings.push(Ping { at, rtt: rtt.as_secs_f64() }),
                    Err(e) => panic!("c2s ping failed: {e}"),
                }
                next += PING_EVERY;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now; // late: the next ping goes at once
                }
            }
            client.close();
            pings
        })
    };
    // capulet's and montague's RSS every 200 ms.
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut v = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                v.push((since(), vm_rss_kib(cpid).unwrap_or(0), vm_rss_kib(mpid).unwrap_or(0)));
                thread::sleep(Duration::from_millis(200));
            }
            v
        })
    };
    let rss_now = || vm_rss_kib(cpid).unwrap_or(0);

    // Baseline: pings with no flood.
    thread::sleep(Duration::from_secs_f64(baseline_s));
    let rss_before = rss_now();
    let t_flood = since();

    // The flood: wave 1 opens N s2s streams, later waves repeat over them.
    let mut tail = RecordTail::from_end(&c.record);
    let mut wave_ends = Vec::new();
    let mut wave_rss = Vec::new();
    let mut received_per_wave = Vec::new();
    for w in 1..=waves {
        let prefix = format!("fw{w}");
        let want = format!("{prefix}-");
        let t0 = since();
        // Wave 1 opens the streams, `batch` domains at a time (each batch as soon as the
        // previous one got through: a closed-loop flood); later waves go all at once.
        let size = if w == 1 && batch > 0 { batch } else { n };
        let (mut posted, mut got) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(300);
        for chunk in domains.chunks(size) {
            posted += if control {
                headline_from(m, chunk, CAPULET, &prefix)
            } else {
                subscribe_from(m, chunk, CAPULET, &prefix)
            };
            while got < posted {
                got += tail
                    .read_new()
                    .iter()
                    .filter(|s| {
                        s.via_s2s()
                            && s.name == kind
                            && s.is_type(ktype)
                            && s.to.as_deref() == Some(CAPULET)
                            && s.id.as_deref().is_some_and(|id| id.starts_with(&want))
                    })
                    .count();
                assert!(
                    Instant::now() < deadline,
                    "wave {w}: capulet received {got} of {posted} subscribes in 300 s\n{}",
                    tail_of(&c.console_log, 30)
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(posted, n, "wave {w}: montague posted {posted} subscribes, not {n}");
        let t1 = since();
        eprintln!("[flood] wave {w}: {n} <{kind} type='{ktype}'/> received in {:.2} s", t1 - t0);
        wave_ends.push((t0, t1));
        wave_rss.push(rss_now());
        received_per_wave.push(got);
    }
    // The last request is recorded before the module's hook runs: wait for the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !control && pending_files(c).len() < allowed && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let t_flood_end = since();
    eprintln!("[flood] flood over after {:.2} s", t_flood_end - t_flood);

    // The digest comes when the minute of the burst is over (DIGEST_EVERY = 60 s).
    let is_admin_msg = |s: &server_trust_lab::Stanza| {
        s.name == "message"
            && s.dir == "in"
            && s.from.as_deref() == Some(CAPULET)
            && s.to.as_deref().is_some_and(|t| t.starts_with("admin@"))
    };
    let want_digest = !control && allowed > NOTIFY_BURST;
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut digest_seen = !want_digest;
    while !digest_seen {
        // Only the new records: the file grows by a line per ping.
        digest_seen = tail.read_new().iter().any(|s| {
            is_admin_msg(s) && s.body.as_deref().is_some_and(|b| b.contains("more server buddy requests"))
        });
        assert!(
            digest_seen || Instant::now() < deadline,
            "no digest 100 s after the flood\n{}",
            tail_of(&c.console_log, 40)
        );
        thread::sleep(Duration::from_millis(500));
    }
    // A few more seconds of pings after the flood (and the digest).
    thread::sleep(Duration::from_secs_f64(baseline_s.min(5.0)));
    let t_end = since();
    stop.store(true, Ordering::Relaxed);
    let pings = pinger.join().expect("pinger");
    let rss = sampler.join().expect("sampler");
    let rss_end = rss_now();
    let heap_after = lua_heap_kib(c, true);
    let rss_after_gc = rss_now();

    // ---- checks ----
    let crecs = read_records(&c.record);
    let mrecs = read_records(&m.record);
    let pending = pending_files(c);
    let mut per_site: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pending {
        *per_site.entry(Domain::new(p).unwrap().site()).or_insert(0) += 1;
    }
    let max_per_site = per_site.values().copied().max().unwrap_or(0);
    let subscribed_out =
        crecs.iter().filter(|s| s.dir == "out" && s.name == "presence" && s.is_type("subscribed")).count();
    let subscribed_in = mrecs.iter().filter(|s| s.name == "presence" && s.is_type("subscribed")).count();
    let roster: serde_json::Value = serde_json::from_str(&c.cli_text(&["--json", "list"])).unwrap();
    let trusted: Vec<String> = roster
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"].as_str().is_some_and(|s| s == "both" || s.starts_with("from")))
        .map(|e| e["peer"].to_string())
        .collect();
    let admin_msgs: Vec<&server_trust_lab::Stanza> = crecs.iter().filter(|s| is_admin_msg(s)).collect();
    let prompts = admin_msgs
        .iter()
        .filter(|s| s.body.as_deref().is_some_and(|b| b.starts_with("Server buddy request from")))
        .count();
    let digests: Vec<&str> = admin_msgs
        .iter()
        .filter_map(|s| s.body.as_deref())
        .filter(|b| b.contains("more server buddy requests"))
        .collect();
    let digest_count: usize = digests
        .iter()
        .filter_map(|b| b.split_whitespace().next().and_then(|w| w.parse::<usize>().ok()))
        .sum();
    let console = std::fs::read_to_string(&c.console_log).unwrap_or_default();
    let cap_lines = console.lines().filter(|l| l.contains("dropped subscribe from")).count();

    // ---- figures ----
    let (base, base_co) = window(&pings, 0.0, t_flood);
    let (flood, flood_co) = window(&pings, t_flood, t_flood_end);
    let (after, after_co) = window(&pings, t_flood_end, t_end);
    let peak_during =
        rss.iter().filter(|r| r.0 >= t_flood && r.0 <= t_flood_end).map(|r| r.1).max().unwrap_or(0);
    let peak_after = rss.iter().filter(|r| r.0 > t_flood_end).map(|r| r.1).max().unwrap_or(0);
    let m_peak = rss.iter().map(|r| r.2).max().unwrap_or(0);

    println!();
    println!(
        "== Flood: {n} domains x {waves} waves of <{kind} type='{ktype}'/> over real s2s -> capulet.lit \
         (Prosody 0.12, mod_server_trust){} ==",
        if control { ", CONTROL RUN: nothing for the module" } else { "" }
    );
    println!("lab start (montague with {n} VirtualHosts + capulet): {startup_s:.1} s");
    for (i, (t0, t1)) in wave_ends.iter().enumerate() {
        println!(
            "wave {}: {} {ktype} stanzas received by capulet in {:.2} s ({:.0}/s){}; capulet RSS after {:.1} MiB",
            i + 1,
            received_per_wave[i],
            t1 - t0,
            received_per_wave[i] as f64 / (t1 - t0),
            if i == 0 { " incl. s2s set-up (STARTTLS + dialback per domain)" } else { " over open streams" },
            mib(wave_rss[i])
        );
    }
    println!(
        "flood window (wave 1 posted -> last stanza received{}): {:.2} s",
        if control { "" } else { " and last pending file written" },
        t_flood_end - t_flood
    );
    println!();
    println!(
        "c2s XEP-0199 ping round trip on capulet (ms), one ping at a time every 10 ms; goal p99 <= {GOAL_P99_MS:.0}"
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>8} {:>9} | {:>12}",
        "window", "pings", "p50", "p95", "p99", "max", "p99 CO-corr."
    );
    for (label, w, co) in [
        ("baseline (no flood)", &base, &base_co),
        ("during the flood", &flood, &flood_co),
        ("after (incl. digest wait)", &after, &after_co),
    ] {
        match w {
            Some(p) => println!(
                "{:<26} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9.2} | {:>12.2}  {}",
                label,
                p.n,
                p.p50,
                p.p95,
                p.p99,
                p.max,
                co.as_ref().map_or(f64::NAN, |c| c.p99),
                if p.p99 <= GOAL_P99_MS { "MET" } else { "MISSED" }
            ),
            None => println!("{label:<26} (no pings)"),
        }
    }
    for (i, (t0, t1)) in wave_ends.iter().enumerate() {
        let (w, co) = window(&pings, *t0, *t1);
        if let Some(p) = w {
            println!(
                "{:<26} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9.2} | {:>12.2}",
                format!("  of which wave {}", i + 1),
                p.n,
                p.p50,
                p.p95,
                p.p99,
                p.max,
                co.as_ref().map_or(f64::NAN, |c| c.p99)
            );
        }
    }
    println!("  CO-corr.: the pings a 10 ms sender would have sent while one was stuck, counted too.");
    println!();
    println!(
        "capulet VmRSS (MiB): before {:.1} | peak during {:.1} | after each wave {} | peak after {:.1} | end {:.1} | end after a Lua GC {:.1}",
        mib(rss_before),
        mib(peak_during),
        wave_rss.iter().map(|r| format!("{:.1}", mib(*r))).collect::<Vec<_>>().join(" / "),
        mib(peak_after),
        mib(rss_end),
        mib(rss_after_gc),
    );
    let growth = rss_end.saturating_sub(wave_rss[0]);
    println!(
        "  flat after the flood: end - after wave 1 = {:+.1} MiB (bound {:.0} MiB): {}; total growth from before: {:+.1} MiB",
        mib(growth),
        mib(RSS_FLAT_BOUND_KIB),
        if growth <= RSS_FLAT_BOUND_KIB { "MET" } else { "MISSED" },
        mib(rss_end) - mib(rss_before)
    );
    println!(
        "  capulet Lua heap after a full GC: {:.1} MiB before -> {:.1} MiB after; montague (attacker) RSS peak {:.1} MiB",
        heap_before / 1024.0,
        heap_after / 1024.0,
        mib(m_peak)
    );
    println!();
    let ok = |b: bool| if b { "ok" } else { "FAILED" };
    println!("checks on capulet:");
    println!(
        "  pending files: {} (caps allow {allowed}; {} domains sent) {}",
        pending.len(),
        n,
        ok(pending.len() == allowed)
    );
    println!(
        "  max pending per registrable domain: {max_per_site} (cap {MAX_PENDING_PER_SITE}; {} sites pending) {}",
        per_site.len(),
        ok(max_per_site <= MAX_PENDING_PER_SITE)
    );
    println!(
        "  `subscribed` routed by capulet: {subscribed_out}; received by attacker domains: {subscribed_in}; trusted peers: {} {}",
        trusted.len(),
        ok(subscribed_out == 0 && subscribed_in == 0 && trusted.is_empty())
    );
    println!(
        "  admin messages: {} = {prompts} single prompts + {} digest(s) covering {digest_count} requests (burst {NOTIFY_BURST}) {}",
        admin_msgs.len(),
        digests.len(),
        ok(prompts == allowed.min(NOTIFY_BURST)
            && digests.len() == usize::from(want_digest)
            && prompts + digest_count == allowed)
    );
    for d in &digests {
        println!("    digest: {}", d.chars().take(200).collect::<String>());
    }
    println!("  cap-drop log lines (one per 10 s at most): {cap_lines}");

    if control {
        assert!(
            pending.is_empty() && subscribed_out == 0 && trusted.is_empty(),
            "control run reached the module"
        );
        println!("  (control run: the checks above do not apply; nothing reached the module)");
        drop(lab);
        return;
    }
    assert_eq!(pending.len(), allowed, "pending files: {pending:?}");
    assert!(max_per_site <= MAX_PENDING_PER_SITE, "{per_site:?}");
    assert_eq!(subscribed_out, 0, "capulet sent subscribed");
    assert_eq!(subscribed_in, 0, "an attacker domain received subscribed");
    assert!(trusted.is_empty(), "trusted: {trusted:?}");
    assert_eq!(prompts, allowed.min(NOTIFY_BURST), "single prompts");
    assert_eq!(digests.len(), usize::from(want_digest), "digests: {digests:?}");
    assert_eq!(prompts + digest_count, allowed, "every pending request announced exactly once");
    drop(lab);
}
