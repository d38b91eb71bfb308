//! Folding the journal into roster.toml, off the server's thread.
//!
//! A change costs one journal line; rewriting roster.toml costs O(roster) and is left to this
//! thread: once the journal holds [`COMPACT_AFTER`] lines, or when changes have stopped for
//! [`IDLE`] (so roster.toml is what an admin reads, moments after the last change). It works
//! from the snapshot the engine published with the journal as it was, and writes only if the
//! files are still exactly those (fingerprints), under the store lock; the server meanwhile
//! defers its stanzas rather than wait. The engine adopts the result (new fingerprints and a
//! rebuilt base map) at its next operation without reading anything back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::snapshot::{Map, Roster};
use crate::store::{Fingerprint, JournalPos, RosterEntry, Store};

/// Journal lines that make a compaction due at once.
const COMPACT_AFTER: u64 = 1000;
/// Quiet time after which a journal with any line is folded in.
const IDLE: Duration = Duration::from_secs(1);
/// How long one attempt waits for the store lock.
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// The files as the engine last read or wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Files {
    pub roster: Option<Fingerprint>,
    pub journal: Option<Fingerprint>,
}

/// What to fold in: the engine's snapshot and the files it matches.
pub(super) struct Job {
    pub snapshot: Arc<Roster>,
    pub files: Files,
    /// The journal as the snapshot includes it.
    pub pos: JournalPos,
    /// roster.toml was last written by another program (an edit, a restore).
    pub external: bool,
    pub last_change: Instant,
}

/// A finished compaction, for the engine to adopt.
pub(super) struct Compacted {
    /// The job it folded in.
    pub snapshot: Arc<Roster>,
    pub roster_before: Option<Fingerprint>,
    pub pos_before: JournalPos,
    /// Where the old journal ended: lines past `pos_before` up to here were carried over.
    pub old_end: u64,
    pub after: Files,
    pub pos: JournalPos,
    /// The snapshot's entries as one map: the engine's next base.
    pub merged: Arc<Map<RosterEntry>>,
}

struct Shared {
    /// Held while the compaction puts its files in place (a millisecond or two), and by
    /// every engine operation: so the engine's own compaction never makes it see a busy store.
    gate: Arc<Mutex<()>>,
    job: Mutex<Option<Job>>,
    wake: Condvar,
    done: Mutex<Option<Compacted>>,
    stop: AtomicBool,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            gate: Arc::new(Mutex::new(())),
            job: Mutex::new(None),
            wake: Condvar::new(),
            done: Mutex::new(None),
            stop: AtomicBool::new(false),
        })
    }
}

/// The engine's compaction thread (started on the first job).
pub(super) struct Compactor {
    store: Store,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The process the thread belongs to: after a fork, the child starts its own (the
    /// parent's thread, and whatever it held, did not come along).
    pid: u32,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub(super) fn new(store: Store) -> Compactor {
        let inner = Inner { pid: std::process::id(), shared: Shared::new(), thread: None };
        Compactor { store, inner: Mutex::new(inner) }
    }

    fn inner(&self) -> parking_lot::MutexGuard<'_, Inner> {
        let mut i = self.inner.lock();
        if i.pid != std::process::id() {
            std::mem::forget(i.thread.take());
            i.shared = Shared::new();
            i.pid = std::process::id();
        }
        i
    }

    /// Hands over the latest state to fold in (replacing any older job).
    pub(super) fn submit(&self, job: Job) {
        let mut i = self.inner();
        *i.shared.job.lock() = Some(job);
        i.shared.wake.notify_one();
        if i.thread.is_none() {
            let (store, shared) = (self.store.clone(), i.shared.clone());
            i.thread = std::thread::Builder::new()
                .name("server-trust-compact".into())
                .spawn(move || run(&store, &shared))
                .ok();
        }
    }

    /// Keeps the compaction from putting its files in place until dropped.
    pub(super) fn gate(&self) -> parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()> {
        let gate = self.inner().shared.gate.clone();
        gate.lock_arc()
    }

    /// The compaction finished since the last call, if any.
    pub(super) fn take_done(&self) -> Option<Compacted> {
        self.inner().shared.done.lock().take()
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let mut i = self.inner.lock();
        if i.pid != std::process::id() {
            std::mem::forget(i.thread.take());
            return;
        }
        {
            // Under the job lock: the thread is either waiting (and woken) or about to check
            // `stop`; a notification between its check and its wait would be lost, and the
            // join below would wait for ever.
            let _job = i.shared.job.lock();
            i.shared.stop.store(true, Ordering::Release);
            i.shared.wake.notify_one();
        }
        if let Some(t) = i.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &Store, shared: &Shared) {
    let mut job = shared.job.lock();
    while !shared.stop.load(Ordering::Acquire) {
        let due = job.as_ref().map(|j| {
            if j.pos.lines >= COMPACT_AFTER {
                Duration::ZERO
            } else {
                IDLE.saturating_sub(j.last_change.elapsed())
            }
        });
        match due {
            None => shared.wake.wait(&mut job),
            Some(d) if !d.is_zero() => {
                shared.wake.wait_for(&mut job, d);
            }
            Some(_) => {
                let j = job.take().expect("a due job");
                drop(job);
                let retry = match compact(store, &j, &shared.gate) {
                    Ok(Some(done)) => {
                        *shared.done.lock() = Some(done);
                        false
                    }
                    Ok(None) => false, // the files moved on: the engine submits a newer job
                    Err(_) => true,    // busy or unwritable: try again a little later
                };
                job = shared.job.lock();
                if retry && job.is_none() {
                    *job =
                        Some(Job { last_change: Instant::now(), pos: JournalPos { lines: 0, ..j.pos }, ..j });
                }
            }
        }
    }
}

/// Folds `job` in if the files are still those it was made from (lines appended since are
/// carried over). The O(roster) part runs before taking the store lock, which is then held
/// only to put the files in place.
fn compact(store: &Store, job: &Job, gate: &Arc<Mutex<()>>) -> crate::error::Result<Option<Compacted>> {
    // Whether the files are still those of the job: checked before the O(roster) work (so a
    // job that cannot be written costs nothing), and again under the lock.
    let current = || -> crate::error::Result<bool> {
        let roster = store.roster_fingerprint();
        if roster != job.files.roster {
            return Ok(false);
        }
        // Never replace a roster.toml someone else wrote moments ago (a copy may be under way).
        if job.external && super::api::unsettled(roster).is_some() {
            return Err(crate::error::Error::Changed {
                path: store.dir().join("roster.toml"),
                detail: "written by another program moments ago".into(),
            });
        }
        Ok(true)
    };
    if !current()? {
        return Ok(None);
    }
    // Journal lines about to be folded away are the only durable record of the request
    // files written without a sync (`Store::write_new_pending`): sync those first.
    store.sync_pending()?;
    let merged = job.snapshot.merged();
    let (prepared, seal) = store.prepare_roster(merged.iter())?;
    let _gate = gate.lock();
    let _lock = store.lock_within(LOCK_WAIT)?;
    if !current()? {
        return Ok(None);
    }
    let Some((pos, old_end)) = store.fold_journal(prepared, seal, job.pos)? else { return Ok(None) };
    let after = Files { roster: store.roster_fingerprint(), journal: store.journal_fingerprint() };
    Ok(Some(Compacted {
        snapshot: job.snapshot.clone(),
        roster_before: job.files.roster,
        pos_before: job.pos,
        old_end,
        after,
        pos,
        merged: Arc::new(merged),
    }))
}
