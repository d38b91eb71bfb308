//! The roster as readers see it: an immutable snapshot swapped in after each change, so a
//! trust check takes no lock and never touches the disk.
//!
//! A snapshot is a shared base map plus a small map of the entries changed since, so a change
//! costs O(changes since the base), not a copy of a 100k-peer map. The base is rebuilt off the
//! server's thread when the journal is folded into roster.toml (see `compact`), or here once
//! the changes pile up past [`MERGE_AT`].

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::domain::Domain;
use crate::store::RosterEntry;

/// Peers by domain.
pub(super) type Map<V> = HashMap<Domain, V, foldhash::fast::RandomState>;

/// Changed entries past which a new snapshot folds them into a new base on the spot (only
/// when compaction could not run for that long: it normally rebuilds the base first).
const MERGE_AT: usize = 16 * 1024;

/// One published state of the roster.
#[derive(Clone, Default)]
pub(super) struct Roster {
    base: Arc<Map<RosterEntry>>,
    /// Entries changed since `base`: `None` for a removed one.
    delta: Map<Option<RosterEntry>>,
}

impl Roster {
    /// A snapshot of `peers`.
    pub(super) fn from_map(peers: Map<RosterEntry>) -> Roster {
        Roster { base: Arc::new(peers), delta: Map::default() }
    }

    /// `peer`'s entry.
    #[inline(always)]
    pub(super) fn get<Q>(&self, peer: &Q) -> Option<&RosterEntry>
    where
        Domain: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.delta.is_empty()
            && let Some(changed) = self.delta.get(peer)
        {
            return changed.as_ref();
        }
        self.base.get(peer)
    }

    pub(super) fn contains_key(&self, peer: &Domain) -> bool {
        self.get(peer).is_some()
    }

    /// Every entry, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Domain, &RosterEntry)> {
        let unchanged =
            self.base.iter().filter(|(d, _)| self.delta.is_empty() || !self.delta.contains_key(*d));
        unchanged.chain(self.delta.iter().filter_map(|(d, e)| e.as_ref().map(|e| (d, e))))
    }

    /// This snapshot with `changes` applied (`None`: entry removed). O(changes since the
    /// base) until they pile up past [`MERGE_AT`].
    pub(super) fn with_changes(
        &self,
        changes: impl IntoIterator<Item = (Domain, Option<RosterEntry>)>,
    ) -> Roster {
        let mut next = self.clone();
        next.delta.extend(changes);
        if next.delta.len() > MERGE_AT { Roster::from_map(next.merged()) } else { next }
    }

    /// This snapshot over `merged`, the entries of `earlier` (a snapshot this one grew from)
    /// as one map: keeps only the changes made since `earlier`. `None` if this one does not
    /// grow from it (its base was rebuilt meanwhile).
    pub(super) fn rebased(&self, earlier: &Roster, merged: Arc<Map<RosterEntry>>) -> Option<Roster> {
        if !Arc::ptr_eq(&self.base, &earlier.base) {
            return None;
        }
        let delta = self.delta.iter().filter(|(d, e)| earlier.delta.get(*d) != Some(e));
        Some(Roster { base: merged, delta: delta.map(|(d, e)| (d.clone(), e.clone())).collect() })
    }

    /// The whole roster as one map (O(roster)).
    pub(super) fn merged(&self) -> Map<RosterEntry> {
        let mut map = (*self.base).clone();
        for (d, e) in &self.delta {
            match e {
                Some(e) => map.insert(d.clone(), e.clone()),
                None => map.remove(d),
            };
        }
        map
    }
}

static NEXT_VIEW_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The roster snapshot this thread last read: (view id, version, snapshot).
    static SNAPSHOT: RefCell<Option<(u64, u64, Arc<Roster>)>> = const { RefCell::new(None) };
}

/// The published roster of one engine.
pub(super) struct View {
    roster: ArcSwap<Roster>,
    /// Bumped after each publish; with `id`, tells a thread its cached snapshot is current.
    generation: AtomicU64,
    /// Bumped after every publish, including a rebuilt base that changes nothing for readers:
    /// what tells a thread's cached snapshot from the current one.
    version: AtomicU64,
    id: u64,
}

impl View {
    pub(super) fn new() -> View {
        View {
            roster: ArcSwap::from_pointee(Roster::default()),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
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
    /// version moved or another engine was used in between (~2 ns otherwise).
    #[inline(always)]
    pub(super) fn with<T>(&self, f: impl FnOnce(&Roster) -> T) -> T {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let done = SNAPSHOT.try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if !matches!(&*slot, Some((id, v, _)) if *id == self.id && *v == version) {
                *slot = Some((self.id, version, self.roster.load_full()));
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
        self.publish_arc(Arc::new(roster));
    }

    /// [`View::publish`] for a snapshot already shared (with the compactor).
    pub(super) fn publish_arc(&self, roster: Arc<Roster>) {
        self.roster.store(roster);
        self.version.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Swaps in a snapshot with the same entries, differently laid out (a rebuilt base):
    /// mirrors of the roster have nothing to copy, so the generation stays.
    pub(super) fn publish_same(&self, roster: Roster) {
        self.roster.store(Arc::new(roster));
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}
