//! Peers' availability (issue: "liveness both ways"): what the running server heard, in
//! memory, and in the store's `presence.toml` ([`crate::store::Seen`]) for `server-trust
//! list`, the HTTP API and the next start. Only peers that approved us send us presence.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::types::PeerPresence;
use crate::domain::Domain;
use crate::error::Result;
use crate::store::{Seen, Store, format_rfc3339};

/// The file is written at most this often (changes in between go with the next poll).
const WRITE_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Liveness {
    peers: Mutex<HashMap<Domain, PeerPresence>>,
    /// A change not written to the store yet.
    dirty: AtomicBool,
    written: Mutex<Option<Instant>>,
}

impl Liveness {
    /// What the store says (an unreadable or missing file: nothing known yet).
    pub(super) fn load(store: &Store) -> Liveness {
        let parse = |s: &str| humantime::parse_rfc3339(s).unwrap_or(SystemTime::UNIX_EPOCH);
        let peers = store
            .read_seen()
            .unwrap_or_default()
            .into_iter()
            .map(|(d, s)| {
                let t = parse(&s.since);
                (d, PeerPresence { available: s.available, last_seen: t, since: t })
            })
            .collect();
        Liveness { peers: Mutex::new(peers), dirty: AtomicBool::new(false), written: Mutex::new(None) }
    }

    pub(super) fn get(&self, peer: &Domain) -> Option<PeerPresence> {
        self.peers.lock().get(peer).copied()
    }

    /// `peer` sent available or unavailable presence: noted, and written when its
    /// availability changed.
    pub(super) fn heard(&self, store: &Store, peer: Domain, available: bool) -> Result<()> {
        let now = SystemTime::now();
        let changed = {
            let mut peers = self.peers.lock();
            let p = peers.entry(peer).or_insert(PeerPresence {
                available: !available,
                last_seen: now,
                since: now,
            });
            let changed = p.available != available;
            if changed {
                p.since = now;
            }
            p.available = available;
            p.last_seen = now;
            changed
        };
        if changed {
            self.dirty.store(true, Ordering::Release);
        }
        self.flush(store, false)
    }

    /// Writes what changed, at most once per [`WRITE_EVERY`] unless `now`.
    pub(super) fn flush(&self, store: &Store, now: bool) -> Result<()> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut written = self.written.lock();
        if !now && written.is_some_and(|t| t.elapsed() < WRITE_EVERY) {
            return Ok(());
        }
        self.dirty.store(false, Ordering::Release);
        *written = Some(Instant::now());
        let file: BTreeMap<Domain, Seen> = self
            .peers
            .lock()
            .iter()
            .map(|(d, p)| (d.clone(), Seen { available: p.available, since: format_rfc3339(p.since) }))
            .collect();
        store.write_seen(&file).inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }

    /// Our server stops: we see nobody from now on, so every peer was last seen now.
    pub(super) fn stopping(&self, store: &Store) -> Result<()> {
        let now = SystemTime::now();
        for p in self.peers.lock().values_mut().filter(|p| p.available) {
            *p = PeerPresence { available: false, last_seen: now, since: now };
            self.dirty.store(true, Ordering::Release);
        }
        self.flush(store, true)
    }
}
