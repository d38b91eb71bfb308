//! The roster as readers see it: an immutable snapshot swapped in after each change, so a
//! trust check takes no lock and never touches the disk.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::domain::Domain;
use crate::store::RosterEntry;

/// Peers by domain.
pub(super) type Roster = HashMap<Domain, RosterEntry, foldhash::fast::RandomState>;

static NEXT_VIEW_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The roster snapshot this thread last read: (view id, generation, snapshot).
    static SNAPSHOT: RefCell<Option<(u64, u64, Arc<Roster>)>> = const { RefCell::new(None) };
}

/// The published roster of one engine.
pub(super) struct View {
    roster: ArcSwap<Roster>,
    /// Bumped after each publish; with `id`, tells a thread its cached snapshot is current.
    generation: AtomicU64,
    id: u64,
}

impl View {
    pub(super) fn new() -> View {
        View {
            roster: ArcSwap::from_pointee(Roster::default()),
            generation: AtomicU64::new(0),
            id: NEXT_VIEW_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The current snapshot (a cheap reference-counted handle).
    pub(super) fn load(&self) -> Arc<Roster> {
        self.roster.load_full()
    }

    /// How many times the roster was published; moves whenever what readers see may change.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` on the current snapshot. The hot path of every trust check: the thread
    /// keeps the snapshot it last saw and only goes to the `ArcSwap` (~17 ns) when the
    /// generation moved or another engine was used in between (~2 ns otherwise).
    pub(super) fn with<T>(&self, f: impl FnOnce(&Roster) -> T) -> T {
        let generation = self.generation();
        let mut f = Some(f);
        let done = SNAPSHOT.try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if !matches!(&*slot, Some((id, g, _)) if *id == self.id && *g == generation) {
                *slot = Some((self.id, generation, self.roster.load_full()));
            }
            let (_, _, roster) = slot.as_ref()?;
            f.take().map(|f| f(roster))
        });
        match (done, f) {
            (Ok(Some(v)), _) => v,
            (_, Some(f)) => f(&self.roster.load()), // thread exiting or re-entered: no cache
            (_, None) => unreachable!("f ran but gave no value"),
        }
    }

    /// Makes `roster` what readers see. Snapshot first, then the generation, so a reader
    /// that sees the new generation also gets the new snapshot.
    pub(super) fn publish(&self, roster: Roster) {
        self.roster.store(Arc::new(roster));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
