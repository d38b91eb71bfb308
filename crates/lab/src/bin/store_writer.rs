//! `st-lab-store-writer STORE_ROOT [HOST]`: records subscribe requests from `p0.lit`,
//! `p1.lit`, ... into HOST's store (default capulet.lit) through the engine, as fast as it can,
//! for 20 s at most, printing each peer once the engine acknowledged it. The crash-safety test
//! and bench SIGKILL it mid-write and check that every acknowledged request is in the store.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use server_trust::{Config, Engine, PresenceKind};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let root = args.next().expect("usage: st-lab-store-writer STORE_ROOT [HOST]");
    let host = args.next().map_or_else(|| "capulet.lit".to_owned(), |h| h.to_string_lossy().into_owned());
    let config = Config { watch: false, max_pending: 100_000, ..Config::default() };
    let e = Engine::open(Path::new(&root), &host, config).expect("open the store");
    let t0 = Instant::now();
    // Numbered from the first free name, so repeated runs on one store add new peers.
    let mut i = e.store().pending_peers().len();
    let mut out = std::io::stdout().lock();
    while t0.elapsed() < Duration::from_secs(20) {
        let peer = format!("p{i}.lit");
        e.inbound(&peer, PresenceKind::Subscribe, None).expect("record a request");
        let _ = writeln!(out, "{peer}").and_then(|()| out.flush());
        i += 1;
    }
}
