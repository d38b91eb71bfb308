//! `st-lab-store-writer STORE_ROOT [HOST]`: records subscribe requests from `p0.lit`,
//! `p1.lit`, ... into HOST's store (default capulet.lit) through the engine, as fast as it can,
//! for 20 s at most. The crash-safety test SIGKILLs it mid-write and checks the store.

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
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(20) {
        e.inbound(&format!("p{i}.lit"), PresenceKind::Subscribe, None).expect("record a request");
        i += 1;
    }
}
