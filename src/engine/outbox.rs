//! The outbox: subscription stanzas (`subscribe`, `subscribed`, `unsubscribe`,
//! `unsubscribed`) recorded with the change that caused them, until the XMPP server has
//! accepted them.
//!
//! **Where they are kept.** In the peer's roster entry (`outbox`), so they ride in the very
//! journal line that records the change: an approval's `subscribed` is durable exactly when
//! the approval is (one write, one fdatasync, as before), and a crash (kill -9, power loss)
//! can never keep one without the other. A peer keeps at most one stanza per direction, the
//! latest act's: `subscribed`/`unsubscribed` (the peer's subscription to us) and
//! `subscribe`/`unsubscribe` (ours to the peer), so a revoke's `unsubscribe` and
//! `unsubscribed` replace an approval's undelivered `subscribe` and `subscribed`. A stanza
//! that the roster no longer agrees with (the peer answered our `subscribe`, so it got it;
//! asked again after our `unsubscribed`) is dropped with the change that made it stale.
//!
//! **Who sends.** Drivers: the actions of a change still carry the stanzas; a driver that
//! hands one to its server calls [`Engine::delivered`] once the server accepted it (the
//! sidecar: ejabberd's `send_stanza` answered 2xx; Prosody: `module:send`, which accepts at
//! once), [`Engine::undelivered`] when it failed, and sends what [`Engine::outbox_due`] gives
//! back: what waits, with backoff from one second doubling to 8 s per stanza. A stanza
//! Prosody accepted may still bounce (`remote-server-not-found`): [`Engine::bounced`] puts
//! what was delivered to that peer in the last few minutes back in the outbox, on the same
//! terms (its wait doubles from 2 s to 5 minutes: the peer may be gone for good). Probe answers and plain presence never enter the outbox: they may be dropped, and
//! cannot displace what waits here.
//!
//! **Why a delivery is confirmed without a disk sync.** The line that empties the outbox is
//! appended without fdatasync: it costs a write, not a sync. If a crash loses it, the stanza
//! is sent once more after the restart, which RFC 6121 makes harmless: a repeated
//! `subscribed` to a peer that is subscribed, or `unsubscribed` to one that is not, changes
//! no state at the receiver (§3.1.5, §3.2.3: "no state change", the server does not even
//! deliver it), and a repeated `subscribe` or `unsubscribe` is answered or ignored the same
//! way. A lost *recording* would lose a decision; a lost *confirmation* only repeats one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::api::Engine;
use super::snapshot::{Map, Roster};
use super::types::{Action, Actor, LogLevel, PresenceKind};
use crate::domain::Domain;
use crate::error::Result;
use crate::store::{RosterEntry, Waiting, now_rfc3339};
use crate::subscription::Subscription;

/// The first retry of a stanza the XMPP server did not accept comes this long after; each
/// next one twice as long after the last, up to [`MAX_RETRY`] (short: the server is local,
/// and a stanza should go out soon after it is back).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of one stanza the XMPP server did not accept.
pub const MAX_RETRY: Duration = Duration::from_secs(8);
/// After a bounce (the peer's server unreachable) the wait doubles from `2 * FIRST_RETRY`
/// up to this: a peer that is gone for good costs a try (and a synced line) every 5 minutes.
pub const MAX_BOUNCE_RETRY: Duration = Duration::from_secs(300);
/// A stanza handed out by [`Engine::outbox_due`] is not handed out again for this long,
/// unless the driver says how it went first.
const LEASE: Duration = Duration::from_secs(60);
/// A bounce this long after a delivery puts the stanza back in the outbox.
pub const BOUNCE_WINDOW: Duration = Duration::from_secs(300);
/// Peers whose recent deliveries are remembered for bounces, at most.
const RECENT_MAX: usize = 10_000;

/// The delivery schedule: memory only (a restart makes everything due at once).
#[derive(Default)]
pub(super) struct Schedule {
    inner: Mutex<Inner>,
}

/// Everything that waits, per peer, sorted by peer.
pub type OutboxList = Arc<Vec<(Domain, Vec<Waiting>)>>;

#[derive(Default)]
struct Inner {
    slots: HashMap<(Domain, PresenceKind), Slot>,
    /// What was delivered lately, per peer, with when and how often it had bounced, for
    /// [`Engine::bounced`].
    recent: HashMap<Domain, Vec<(Waiting, Instant, u32)>>,
    /// The outbox as of a roster generation, kept up to date from the peers each change
    /// touched (O(changes), not O(roster), when the roster moved).
    cache: Option<(u64, BTreeMap<Domain, Vec<Waiting>>, OutboxList)>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// Tries the XMPP server did not accept.
    tries: u32,
    /// Times it was delivered and bounced.
    bounces: u32,
    next: Instant,
}

/// Stanzas that change subscription state: these are recorded, the rest may be dropped.
pub fn is_durable(kind: PresenceKind) -> bool {
    kind.subscription().is_some()
}

/// `subscribed`/`unsubscribed` answer the peer's subscription to us; `subscribe` and
/// `unsubscribe` concern ours to the peer.
fn about_theirs(kind: PresenceKind) -> bool {
    matches!(kind, PresenceKind::Subscribed | PresenceKind::Unsubscribed)
}

/// Whether a waiting stanza still says what the roster says.
fn agrees(kind: PresenceKind, state: Subscription) -> bool {
    match kind {
        PresenceKind::Subscribed => state.from(),
        PresenceKind::Unsubscribed => !state.from() && !state.pending_in(),
        PresenceKind::Subscribe => state.to() || state.pending_out(),
        PresenceKind::Unsubscribe => !state.to() && !state.pending_out(),
        _ => false,
    }
}

/// The wait before try `tries + 1` of a stanza that failed `tries` times.
pub fn backoff(tries: u32) -> Duration {
    let n = tries.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << n).min(MAX_RETRY)
}

/// The wait before sending again a stanza that bounced `bounces` times.
pub fn bounce_backoff(bounces: u32) -> Duration {
    let n = bounces.min(16);
    FIRST_RETRY.saturating_mul(1 << n).min(MAX_BOUNCE_RETRY)
}

/// Adds `w` to `e`'s outbox, replacing the stanza of the same direction.
fn put(e: &mut RosterEntry, w: Waiting) {
    let list = e.outbox.get_or_insert_with(Vec::new);
    list.retain(|o| about_theirs(o.kind) != about_theirs(w.kind));
    list.push(w);
}

/// Drops what the entry's state no longer agrees with.
fn tidy(e: &mut RosterEntry) {
    if let Some(list) = &mut e.outbox {
        list.retain(|w| agrees(w.kind, e.state));
        if list.is_empty() {
            e.outbox = None;
        }
    }
}

/// The hook of `Txn::finish`: records the subscription stanzas of this operation in the
/// entries it changed (the change that caused them), and tidies those entries' outboxes.
/// Stanzas to peers the operation did not change (an already-approved peer asking again is
/// answered `subscribed`) are not recorded: nothing was decided, and the peer asks again.
pub(super) fn record(working: &mut Map<Option<RosterEntry>>, actions: &[Action]) {
    let since = now_rfc3339();
    for a in actions {
        if let Action::Send { to, kind, id } = a
            && is_durable(*kind)
            && let Some(slot) = working.get_mut(to)
        {
            let e = slot.get_or_insert_with(RosterEntry::new);
            put(e, Waiting { kind: *kind, id: id.clone(), since: since.clone() });
        }
    }
    for slot in working.values_mut() {
        if let Some(e) = slot {
            tidy(e);
            if e.is_empty() {
                *slot = None;
            }
        }
    }
}

fn scan(roster: &Roster) -> BTreeMap<Domain, Vec<Waiting>> {
    roster.iter().filter_map(|(p, e)| e.outbox.as_ref().map(|o| (p.clone(), o.clone()))).collect()
}

impl Engine {
    /// Everything that waits for the XMPP server, per peer, sorted by peer. Memory only
    /// (recomputed when the roster moved).
    pub fn outbox(&self) -> OutboxList {
        let mut inner = self.schedule.inner.lock();
        let generation = self.view.generation();
        if let Some((g, _, list)) = &inner.cache
            && *g == generation
        {
            return list.clone();
        }
        // The peers changed since the cached generation, read from a snapshot at least that
        // new; or, when those are not known, the whole roster.
        let updated = inner.cache.take().and_then(|(g, mut map, _)| {
            let (now, peers) = self.view.changed_since(g)?;
            let roster = self.view.load();
            for p in peers {
                match roster.get(&p).and_then(|e| e.outbox.clone()) {
                    Some(o) => map.insert(p, o),
                    None => map.remove(&p),
                };
            }
            Some((now, map))
        });
        let (g, map) = updated.unwrap_or_else(|| (generation, scan(&self.view.load())));
        let list: OutboxList = Arc::new(map.iter().map(|(p, w)| (p.clone(), w.clone())).collect());
        inner.cache = Some((g, map, list.clone()));
        list
    }

    /// What waits for `peer`, oldest first.
    pub fn waiting(&self, peer: &Domain) -> Vec<Waiting> {
        self.view.load().get(peer).and_then(|e| e.outbox.clone()).unwrap_or_default()
    }

    /// Whether this stanza is one the outbox keeps (so a driver sends it on the durable
    /// lane and confirms it), not a probe answer or a repeat that may be dropped.
    pub fn is_waiting(&self, peer: &Domain, kind: PresenceKind, id: Option<&str>) -> bool {
        is_durable(kind)
            && self.view.with(|r| {
                r.get(peer)
                    .and_then(|e| e.outbox.as_ref())
                    .is_some_and(|o| o.iter().any(|w| w.kind == kind && w.id.as_deref() == id))
            })
    }

    /// The waiting stanzas due for a try now, in order per peer; each is not given again
    /// for a minute unless [`Engine::delivered`] or [`Engine::undelivered`] is called.
    pub fn outbox_due(&self) -> Vec<Action> {
        let list = self.outbox();
        let now = Instant::now();
        let mut inner = self.schedule.inner.lock();
        if list.is_empty() {
            inner.slots.clear();
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut live = std::collections::HashSet::new();
        let roster = self.view.load();
        for (peer, items) in list.iter() {
            // Never a stanza the roster contradicts (a hand edit or a restored backup may
            // carry one): no `subscribed` to a peer we do not trust.
            let state = roster.get(peer).map_or(Subscription::None, |e| e.state);
            for w in items.iter().filter(|w| agrees(w.kind, state)) {
                live.insert((peer.clone(), w.kind));
                let slot = inner.slots.entry((peer.clone(), w.kind)).or_insert(Slot {
                    tries: 0,
                    bounces: 0,
                    next: now,
                });
                if slot.next <= now {
                    slot.next = now + LEASE;
                    out.push(Action::Send { to: peer.clone(), kind: w.kind, id: w.id.clone() });
                }
            }
        }
        inner.slots.retain(|k, _| live.contains(k));
        out
    }

    /// How long until something in the outbox is due (`None`: nothing waits).
    pub fn outbox_next_due(&self) -> Option<Duration> {
        let list = self.outbox();
        if list.is_empty() {
            return None;
        }
        let roster = self.view.load();
        let inner = self.schedule.inner.lock();
        let now = Instant::now();
        list.iter()
            .flat_map(|(p, items)| {
                let state = roster.get(p).map_or(Subscription::None, |e| e.state);
                items.iter().filter(move |w| agrees(w.kind, state)).map(move |w| (p, w.kind))
            })
            .map(|k| {
                inner.slots.get(&(k.0.clone(), k.1)).map_or(Duration::ZERO, |s| s.next - now.min(s.next))
            })
            .min()
    }

    /// The XMPP server is (back) up: everything waiting is due now.
    pub fn outbox_retry_now(&self) {
        let now = Instant::now();
        for s in self.schedule.inner.lock().slots.values_mut() {
            s.next = now;
        }
    }

    /// The XMPP server accepted this stanza: it leaves the outbox (an unsynced journal line,
    /// see the module's doc). A stanza the outbox does not hold (a probe answer) costs one
    /// lookup. Returns what catching up with the store implied, as every change does.
    pub fn delivered(&self, peer: &Domain, kind: PresenceKind, id: Option<&str>) -> Result<Vec<Action>> {
        if !self.is_waiting(peer, kind, id) {
            return Ok(Vec::new());
        }
        let slot = self.schedule.inner.lock().slots.remove(&(peer.clone(), kind));
        let (tries, bounces) = slot.map_or((0, 0), |s| (s.tries, s.bounces));
        let r = self.transact_as(Actor::Engine, false, |txn| {
            txn.update(peer, |e| {
                if let Some(list) = &mut e.outbox {
                    list.retain(|w| !(w.kind == kind && w.id.as_deref() == id));
                    if list.is_empty() {
                        e.outbox = None;
                    }
                }
            });
            Ok(())
        });
        let mut inner = self.schedule.inner.lock();
        match &r {
            Ok(_) => {
                if inner.recent.len() >= RECENT_MAX && !inner.recent.contains_key(peer) {
                    let cutoff = Instant::now().checked_sub(BOUNCE_WINDOW);
                    inner.recent.retain(|_, v| v.iter().any(|x| Some(x.1) > cutoff));
                }
                if inner.recent.len() < RECENT_MAX {
                    let w = Waiting { kind, id: id.map(str::to_string), since: now_rfc3339() };
                    let list = inner.recent.entry(peer.clone()).or_default();
                    list.retain(|x| about_theirs(x.0.kind) != about_theirs(kind));
                    list.push((w, Instant::now(), bounces));
                }
            }
            // Not confirmed (the store lock is held elsewhere): sent again later, harmless.
            Err(_) => {
                let next = Instant::now() + backoff(tries.max(1));
                inner.slots.insert((peer.clone(), kind), Slot { tries, bounces, next });
            }
        }
        r
    }

    /// The XMPP server did not accept this stanza: it is tried again after a backoff.
    pub fn undelivered(&self, peer: &Domain, kind: PresenceKind) {
        let mut inner = self.schedule.inner.lock();
        let now = Instant::now();
        let slot =
            inner.slots.entry((peer.clone(), kind)).or_insert(Slot { tries: 0, bounces: 0, next: now });
        slot.tries = slot.tries.saturating_add(1);
        slot.next = now + backoff(slot.tries);
    }

    /// An error presence from `peer` to our host (a bounce, e.g. `remote-server-not-found`):
    /// the subscription stanzas delivered to it in the last five minutes go back in the
    /// outbox (a synced change, audited), to be tried again with backoff. Anything else
    /// (no recent delivery) changes nothing.
    pub fn bounced(&self, peer: &str, condition: &str) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?;
        let now = Instant::now();
        let recent: Vec<(Waiting, u32)> = {
            let mut inner = self.schedule.inner.lock();
            inner
                .recent
                .remove(&peer)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, at, _)| now.duration_since(*at) < BOUNCE_WINDOW)
                .map(|(w, _, t)| (w, t))
                .collect()
        };
        let condition: String = condition.chars().filter(|c| !c.is_control()).take(100).collect();
        if recent.is_empty() {
            let text = format!("error presence from {peer} ({condition}): nothing of ours to send again");
            return Ok(vec![Action::Log { level: LogLevel::Info, text }]);
        }
        let mut requeued = Vec::new();
        let mut actions = self.transact_as(Actor::Engine, true, |txn| {
            let state = txn.current(&peer).state;
            for (sent, tries) in &recent {
                if agrees(sent.kind, state) {
                    let w = Waiting { kind: sent.kind, id: sent.id.clone(), since: now_rfc3339() };
                    txn.update(&peer, |e| put(e, w));
                    requeued.push((sent.kind, *tries));
                }
            }
            if !requeued.is_empty() {
                let kinds: Vec<&str> = requeued.iter().map(|(k, _)| k.as_str()).collect();
                let event =
                    format!("{} bounced ({condition}): kept in the outbox, retried", kinds.join(" + "));
                txn.audit(&peer, &event, None, None);
            }
            Ok(())
        })?;
        let mut inner = self.schedule.inner.lock();
        for (kind, bounces) in &requeued {
            let bounces = bounces.saturating_add(1);
            let next = now + bounce_backoff(bounces);
            inner.slots.insert((peer.clone(), *kind), Slot { tries: 0, bounces, next });
        }
        let text = format!(
            "error presence from {peer} ({condition}): {} stanza(s) kept in the outbox, retried in {} s",
            requeued.len(),
            requeued.first().map_or(0, |(_, b)| bounce_backoff(b + 1).as_secs())
        );
        actions.push(Action::Log { level: LogLevel::Warn, text });
        Ok(actions)
    }
}
