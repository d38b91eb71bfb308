//! Loopback address slots: every lab gets its own pair of addresses, so labs run in parallel
//! (threads of one test binary, or several processes) on the servers' standard ports, and no
//! address outside 127.0.0.0/8 is ever used.

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const OCTET_MIN: u32 = 10;
const OCTET_MAX: u32 = 250;
/// k = 1..=126 gives the pairs .2/.3 ... .252/.253 of one third octet.
const PAIRS_PER_OCTET: u32 = 126;

/// A reserved pair of loopback addresses, `127.0.O.2k` and `127.0.O.2k+1` (O in 10..=250).
/// Reserved while this value lives: an flock on `$TMPDIR/server-trust-lab-slots/slot-O-k.lock`,
/// which the kernel also drops when the process dies, so a crashed test leaks nothing.
#[derive(Debug)]
pub struct Slot {
    /// First address (the Prosody lab gives it to montague.lit).
    pub a: String,
    /// Second address (capulet.lit in the Prosody lab).
    pub b: String,
    _lock: File,
}

impl Slot {
    /// Reserves a free pair on which every port in `ports` can be bound on both addresses
    /// (something outside the lab may still hold one). Panics when all 30 366 pairs are taken.
    pub fn reserve(ports: &[u16]) -> Slot {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let lock_dir = std::env::temp_dir().join("server-trust-lab-slots");
        fs::create_dir_all(&lock_dir).expect("create slot lock dir");
        let n = (OCTET_MAX - OCTET_MIN + 1) * PAIRS_PER_OCTET;
        // Different processes start at different (pid-derived) places in the ring.
        let base = std::process::id().wrapping_mul(2_654_435_761) % n;
        for _ in 0..4000 {
            let idx = (base + COUNTER.fetch_add(1, Ordering::Relaxed)) % n;
            let octet = OCTET_MIN + idx / PAIRS_PER_OCTET;
            let k = 1 + idx % PAIRS_PER_OCTET;
            let (a, b) = (format!("127.0.{octet}.{}", 2 * k), format!("127.0.{octet}.{}", 2 * k + 1));
            let lock_path = lock_dir.join(format!("slot-{octet}-{k}.lock"));
            let Ok(lock) = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)
            else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue;
            }
            if ports.iter().all(|&p| port_free(&a, p) && port_free(&b, p)) {
                return Slot { a, b, _lock: lock };
            }
        }
        panic!("could not find a free pair of loopback addresses for a lab");
    }
}

fn port_free(ip: &str, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_slots_are_distinct_loopback_pairs() {
        let slots: Vec<Slot> = (0..3).map(|_| Slot::reserve(&[])).collect();
        let mut ips: Vec<&str> = slots.iter().flat_map(|s| [s.a.as_str(), s.b.as_str()]).collect();
        assert!(ips.iter().all(|ip| ip.starts_with("127.0.")), "{ips:?}");
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 6, "a slot was handed out twice");
    }
}
