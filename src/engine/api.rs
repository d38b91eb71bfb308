//! [`Engine`]: the public face of one served host's roster engine.
//!
//! Reads come from the published snapshot; every change runs as one [`Txn`] under the ops
//! lock and the store lock, with the roster fresh from disk, and publishes its result.
//!
//! (Just over 400 lines: the public calls plus the locking, deferral and reload that every
//! change goes through, which only make sense next to each other.)

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::compact::{Compactor, Files, Job};
use super::liveness::Liveness;
use super::outside::Audited;
use super::policy::Txn;
use super::snapshot::{Map, Roster, View};
use super::types::{Action, Actor, Config, Federation, LogLevel, PeerPresence, PresenceKind, Stats};
use super::watch::{Changed, Watcher};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::store::{Change, Decision, Fingerprint, JournalPos, RosterEntry, Store};
use crate::subscription::{Subscription, SubscriptionType};

/// One served host's roster engine. Thread-safe; share it behind an `Arc`.
pub struct Engine {
    pub(super) host: Domain,
    pub(super) store: Store,
    pub(super) config: Config,
    pub(super) view: View,
    pub(super) ops: Mutex<Ops>,
    presence: Liveness,
    pub(super) gathering: super::gather::Gathering,
    watcher: Watcher,
    compactor: Compactor,
    /// `ops.deferred` is not empty: lets an idle poll stay one atomic load.
    has_deferred: AtomicBool,
    /// Milliseconds after `born` when held-back prompts are due as a digest (0: none).
    digest_at: AtomicU64,
    /// Milliseconds after `born` when the next notice about dropped requests is due (0: none).
    drop_notice_at: AtomicU64,
    /// Milliseconds after `born` when pending requests are next checked for expiry.
    expiry_at: AtomicU64,
    born: Instant,
    /// When the outbox's stanzas are tried (see `outbox`).
    pub(super) schedule: super::outbox::Schedule,
}

/// State only touched with the ops lock held.
pub(super) struct Ops {
    /// roster.toml and its journal as last read or written.
    files: Files,
    /// The seal roster.toml's last line names (what the journal extends); `None`: no seal
    /// line, so the next change writes roster.toml whole.
    base: Option<u64>,
    /// How far the journal was read or written, when one applies.
    journal: Option<JournalPos>,
    pub(super) last_repeat: HashMap<Domain, Instant>,
    /// Corrupt files already reported, so a broken file is logged once per change.
    pub(super) reported: HashMap<PathBuf, String>,
    /// Requests dropped at the pending caps since the last log line about it, some of the
    /// peers dropped (named in that line) and why the last one was.
    pub(super) cap_drops: u64,
    pub(super) cap_logged: Option<Instant>,
    pub(super) cap_dropped: Vec<Domain>,
    pub(super) cap_why: String,
    /// Per-site token buckets for new requests (tokens left, when last filled), and when
    /// full buckets were last pruned.
    pub(super) site_tokens: HashMap<String, (f64, Instant)>,
    pub(super) site_tokens_pruned: Option<Instant>,
    pub(super) stats: Stats,
    /// The roster in memory was last read from a file no engine sealed (edited or copied).
    roster_external: bool,
    /// Subscription stanzas that arrived while another process held the store lock.
    pub(super) deferred: VecDeque<(Domain, SubscriptionType, Option<String>)>,
    busy_logged: Option<Instant>,
    /// New-request prompts: when this minute's burst began, how many, and who was held back.
    pub(super) burst_started: Option<Instant>,
    pub(super) burst_count: usize,
    pub(super) suppressed: Vec<Domain>,
    /// Pending requests per registrable domain, and the pending folder they were counted in.
    pub(super) pending_sites: Option<(Option<Fingerprint>, HashMap<String, usize>)>,
    /// Peers named by journal lines not yet folded in when the engine opened: their request
    /// files may have been lost in a crash (see `Txn::restore_lost_requests`).
    pub(super) unfolded_at_open: Vec<Domain>,
    /// The states the audit log gave peers, to tell changes made outside any engine.
    pub(super) audited: Audited,
    /// The next scan of the store compares the whole roster with the audit log (the
    /// server's first poll: a backup restored or a file edited while it was stopped).
    pub(super) audit_all: bool,
    /// The inode of the store's host folder as last seen: another one means the folder was
    /// put back from a backup while we run.
    pub(super) folder: Option<u64>,
}

/// The inode of `dir`, if it is there.
fn folder_inode(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).ok().map(|m| m.ino())
}

/// Longest stanza id kept in a pending file and echoed in our answer, in bytes (XMPP ids
/// are short tokens; RFC 6120 sets no limit).
pub(crate) const MAX_STANZA_ID: usize = 256;
/// How long the lock-waiting thread waits before leaving it to the driver's timer.
const LOCK_WAITER_GIVES_UP: std::time::Duration = std::time::Duration::from_secs(30);
/// Stanzas kept at most while the store lock is held elsewhere.
const MAX_DEFERRED: usize = 1000;
/// At most one log line per this long about a held lock.
const BUSY_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a roster.toml written by another program is left alone before we write over it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long ago the file fingerprinted `fp` was written, when that is under [`SETTLE`]: a
/// program (an editor, an in-place copy) may still be writing it.
pub(super) fn unsettled(fp: Option<Fingerprint>) -> Option<std::time::Duration> {
    fp.and_then(|f| f.modified()).and_then(|t| t.elapsed().ok()).filter(|age| *age < SETTLE)
}

impl Engine {
    /// Opens the engine for `host` over `<store_root>/<host>/`.
    ///
    /// A corrupt roster is an error: the engine refuses to run on a roster it cannot read,
    /// rather than start empty and overwrite it.
    pub fn open(store_root: &Path, host: &str, config: Config) -> Result<Engine> {
        let host = Domain::new(host)?;
        let store = Store::open(store_root, &host)?;
        // A store we could read but not write would lose every decision: say so now.
        store.check_writable()?;
        let watcher = Watcher::new(store.dir(), config.watch);
        let store_clone = store.clone();
        let engine = Engine {
            host,
            store,
            config,
            view: View::new(),
            ops: Mutex::new(Ops {
                files: Files { roster: None, journal: None },
                base: None,
                journal: None,
                last_repeat: HashMap::new(),
                reported: HashMap::new(),
                cap_drops: 0,
                cap_logged: None,
                cap_dropped: Vec::new(),
                cap_why: String::new(),
                site_tokens: HashMap::new(),
                site_tokens_pruned: None,
                stats: Stats::default(),
                roster_external: false,
                deferred: VecDeque::new(),
                busy_logged: None,
                burst_started: None,
                burst_count: 0,
                suppressed: Vec::new(),
                pending_sites: None,
                unfolded_at_open: Vec::new(),
                audited: Audited::default(),
                audit_all: true,
                folder: folder_inode(store_clone.dir()),
            }),
            has_deferred: AtomicBool::new(false),
            digest_at: AtomicU64::new(0),
            drop_notice_at: AtomicU64::new(0),
            expiry_at: AtomicU64::new(1), // at the first poll
            born: Instant::now(),
            schedule: Default::default(),
            presence: Liveness::load(&store_clone),
            gathering: Default::default(),
            watcher,
            compactor: Compactor::new(store_clone),
        };
        // Reading needs no lock (every write replaces roster.toml whole), so a lock held by
        // someone else never stalls a server's start.
        engine.refresh_roster(&mut engine.ops.lock())?;
        Ok(engine)
    }

    /// The served host.
    pub fn host(&self) -> &Domain {
        &self.host
    }

    /// The store this engine works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True when we approved `peer` (state From or Both) and, if `scope` is given, the peer
    /// carries that group. Never touches the disk. Invalid input is simply not trusted.
    #[inline]
    pub fn is_trusted(&self, peer: &str, scope: Option<&str>) -> bool {
        // A name found as it is is in normal form; only one that is not can still match
        // once normalised.
        self.lookup(peer, scope)
            || (Domain::may_change_when_normalised(peer)
                && Domain::new(peer).is_ok_and(|d| self.lookup(d.as_str(), scope)))
    }

    /// Whether a stanza may cross s2s between the host and `peer` (a domain as the router
    /// hands it, any spelling), under the `federation` setting: with [`Federation::Open`]
    /// always; with [`Federation::Buddies`] what passes between the two host JIDs without
    /// trust (`host_presence`: the driver found the stanza is between them and
    /// [`Federation::host_stanza`] lets it through: the XEP-0267 handshake, probes, the
    /// evidence queries) always, anything else only with a trusted peer in the group, if one
    /// is set. Memory only; invalid input is refused.
    #[inline]
    pub fn federates_with(&self, peer: &str, host_presence: bool) -> bool {
        match &self.config.federation {
            Federation::Open => true,
            Federation::Buddies { .. } if host_presence => Domain::new(peer).is_ok(),
            Federation::Buddies { group } => self.is_trusted(peer, group.as_deref()),
        }
    }

    /// [`Engine::is_trusted`] without a scope for a name given as bytes (as the C ABI and Lua
    /// receive it), or `None` when they are not UTF-8. A name already in normal form, the
    /// usual case, costs one pass over its bytes that also shows it is UTF-8, and one lookup.
    #[inline]
    pub fn is_trusted_bytes(&self, peer: &[u8]) -> Option<bool> {
        if Domain::may_change_when_normalised_bytes(peer) {
            return std::str::from_utf8(peer).ok().map(|p| self.is_trusted(p, None));
        }
        debug_assert!(peer.is_ascii());
        // SAFETY: `may_change_when_normalised_bytes` is false only for ASCII, which is UTF-8.
        Some(self.lookup(unsafe { std::str::from_utf8_unchecked(peer) }, None))
    }

    /// Whether the roster entry under exactly `key` is trusted (in `scope`). The scope-less
    /// check has a closure of its own: small enough to inline whole (measured: a shared one
    /// returning more made every C ABI check about 8 ns slower).
    #[inline(always)]
    fn lookup(&self, key: &str, scope: Option<&str>) -> bool {
        match scope {
            None => self.view.with(|roster| roster.get(key).is_some_and(|e| e.state.from())),
            Some(s) => self.view.with(|roster| {
                roster.get(key).is_some_and(|e| e.state.from() && e.groups.iter().any(|g| g == s))
            }),
        }
    }

    /// A number that moves whenever the roster readers see may have changed (states,
    /// groups, notes): drivers that mirror the trusted set compare it to know when to copy.
    pub fn generation(&self) -> u64 {
        self.view.generation()
    }

    /// The current generation and the peers whose entries changed since `generation`, or
    /// `None` when that is not known (long ago, or roster.toml was replaced): then copy the
    /// whole roster. Lets a mirror of the trusted set do work in proportion to the changes.
    pub fn changed_since(&self, generation: u64) -> Option<(u64, Vec<Domain>)> {
        self.view.changed_since(generation)
    }

    /// Outcomes counted since the engine opened (waits for an operation in progress).
    pub fn stats(&self) -> Stats {
        self.ops.lock().stats
    }

    /// The subscription state of `peer` (None when unknown).
    pub fn state(&self, peer: &str) -> Result<Subscription> {
        let peer = Domain::new(peer)?;
        Ok(self.view.load().get(&peer).map_or(Subscription::None, |e| e.state))
    }

    /// A copy of `peer`'s roster entry.
    pub fn entry(&self, peer: &str) -> Result<Option<RosterEntry>> {
        let peer = Domain::new(peer)?;
        Ok(self.view.load().get(&peer).cloned())
    }

    /// The whole roster, sorted by domain.
    pub fn roster(&self) -> Vec<(Domain, RosterEntry)> {
        let mut v: Vec<_> = self.view.load().iter().map(|(d, e)| (d.clone(), e.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Last known presence of `peer` (also from before a restart: the store keeps it).
    pub fn presence(&self, peer: &str) -> Option<PeerPresence> {
        self.presence.get(&Domain::new(peer).ok()?)
    }

    /// Applies a presence stanza that `from` sent to our host JID. A stanza id longer than
    /// 256 bytes is not kept nor echoed (a peer's 100 KB id would otherwise
    /// make a 100 KB pending file); the answer then goes without it.
    pub fn inbound(&self, from: &str, kind: PresenceKind, id: Option<&str>) -> Result<Vec<Action>> {
        let peer = Domain::peer(from)?;
        let id = id.filter(|i| i.len() <= MAX_STANZA_ID);
        if peer == self.host {
            return Err(Error::OwnHost(peer));
        }
        match (kind, kind.subscription()) {
            (PresenceKind::Available | PresenceKind::Unavailable, _) => {
                if self.state(peer.as_str())?.to() {
                    // A statistic: a failed write is said, and retried with the next change.
                    if let Err(e) = self.presence.heard(&self.store, peer, kind == PresenceKind::Available) {
                        return Ok(vec![Action::Log {
                            level: LogLevel::Warn,
                            text: format!("presence.toml: {e}"),
                        }]);
                    }
                }
                Ok(Vec::new())
            }
            (_, Some(ty)) => match self.transact(Actor::Peer, |txn| txn.on_inbound(&peer, ty, id)) {
                Err(Error::Busy { holder, .. }) => {
                    Ok(self.defer(peer, ty, id, &format!("the store is locked by {holder}"), true))
                }
                // roster.toml is being written by someone else: the driver's next poll retries.
                Err(Error::Changed { path, detail }) => {
                    Ok(self.defer(peer, ty, id, &format!("{} is {detail}", path.display()), false))
                }
                r => r,
            },
            (_, None) => Ok(vec![self.answer_probe(peer, id)]),
        }
    }

    /// RFC 6121 §4.3.2: presence only to peers we approved; others learn they are not
    /// subscribed, and never see our presence.
    fn answer_probe(&self, peer: Domain, id: Option<&str>) -> Action {
        let kind = if self.state(peer.as_str()).is_ok_and(|s| s.from()) {
            PresenceKind::Available
        } else {
            PresenceKind::Unsubscribed
        };
        Action::Send { to: peer, kind, id: id.map(str::to_string) }
    }

    /// Facts about the s2s stream `peer`'s subscription stanza arrives by, from the driver,
    /// before it hands the stanza to [`Engine::inbound`]: how the stream was authenticated
    /// (`certificate`, `dane` or `dialback`) and the certificate the peer presented (DER or
    /// PEM), if any. A new request's evidence starts with them. Memory only.
    pub fn session(&self, peer: &str, auth: &str, cert: Option<&[u8]>) -> Result<()> {
        let peer = Domain::peer(peer)?;
        self.gathering.session(peer, crate::evidence::Session::new(auth, cert)?);
        Ok(())
    }

    /// The reply to an [`Action::Query`] for `peer` and `ns`: the whole iq stanza as XML
    /// (result or error), or `None` when none came in time. Recorded in the peer's pending
    /// file while it waits for a decision; with the last answer, a notice sums the evidence
    /// up for the admins. A reply to a query the engine did not ask changes nothing.
    pub fn answer(&self, peer: &str, ns: &str, reply: Option<&str>) -> Result<Vec<Action>> {
        let peer = Domain::peer(peer)?;
        let Some(last) = self.gathering.answered(&peer, ns) else { return Ok(Vec::new()) };
        self.transact(Actor::Peer, |txn| txn.on_answer(&peer, ns, reply, last))
    }

    /// Admin asks `peer` for a subscription (and pre-approves its reciprocal request).
    pub fn request(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::peer(peer)?;
        self.transact(actor, |txn| txn.on_request(&peer))
    }

    /// Admin approves `peer`'s pending request.
    pub fn approve(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::peer(peer)?;
        self.transact(actor, |txn| txn.on_decision(&peer, Decision::Approve))
    }

    /// Admin denies `peer`'s pending request.
    pub fn deny(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::peer(peer)?;
        self.transact(actor, |txn| txn.on_decision(&peer, Decision::Deny))
    }

    /// Admin withdraws all trust with `peer`, both ways.
    pub fn revoke(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?; // withdrawing trust is always allowed
        self.transact(actor, |txn| txn.on_revoke(&peer))
    }

    /// Replaces `peer`'s groups (scopes). The peer must be in the roster.
    pub fn set_groups(&self, peer: &str, groups: Vec<String>, actor: Actor) -> Result<()> {
        let peer = Domain::peer(peer)?;
        self.transact(actor, |txn| txn.on_set_groups(&peer, groups))?;
        Ok(())
    }

    /// A file descriptor that becomes readable when the store changed (Linux eventfd), for
    /// drivers with an event loop: call [`Engine::poll`] when it is readable, which also
    /// resets it. `None` when not watching. Owned by the engine: do not close it.
    pub fn wakeup_fd(&self) -> Option<i32> {
        self.watcher.fd()
    }

    /// Presence to send when the driver starts: our presence to the peers we approved, a
    /// probe to the peers that approved us.
    pub fn startup_actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for (peer, e) in self.roster() {
            if e.state.from() {
                out.push(Action::Send { to: peer.clone(), kind: PresenceKind::Available, id: None });
            }
            if e.state.to() {
                out.push(Action::Send { to: peer, kind: PresenceKind::Probe, id: None });
            }
        }
        out
    }

    /// Presence to send when the driver stops cleanly: `unavailable` to the peers we approved
    /// (they get our presence), so what they show as our "last seen" is true. Every peer is
    /// noted as last seen now.
    pub fn shutdown_actions(&self) -> Vec<Action> {
        let mut out: Vec<Action> = self
            .roster()
            .into_iter()
            .filter(|(_, e)| e.state.from())
            .map(|(peer, _)| Action::Send { to: peer, kind: PresenceKind::Unavailable, id: None })
            .collect();
        if let Err(e) = self.presence.stopping(&self.store) {
            out.push(Action::Log { level: LogLevel::Warn, text: format!("presence.toml: {e}") });
        }
        out
    }

    /// Picks up what other processes decided: edited pending files, acts queued by the CLI,
    /// hand edits of the roster. Returns the actions those imply. With the watcher running
    /// and nothing changed this is one atomic load: no disk work.
    pub fn poll(&self) -> Result<Vec<Action>> {
        // Availability changes held back by the once-a-second limit (an atomic load when none).
        let _ = self.presence.flush(&self.store, false);
        let digest_due = self.digest_due();
        // Our own writes wake the watcher too: only someone else's change needs a look, and
        // only a change outside roster.toml and its journal (read in any operation) needs the
        // scan of pending/ and outbound/.
        let (look, scan) = match self.watcher.take_changed() {
            Changed::Nothing => (false, false),
            Changed::Paths(paths) => {
                let news: Vec<_> = paths.iter().filter(|p| !self.store.is_own_echo(p)).collect();
                (!news.is_empty(), news.iter().any(|p| !self.store.is_roster_file(p)))
            }
            Changed::Unknown => (true, true),
        };
        // Expiry runs with the scan of pending/, which it forces at most once a minute.
        let scan = scan || due(&self.expiry_at, self.born);
        let drop_notice_due = due(&self.drop_notice_at, self.born);
        if !look && !scan && !digest_due && !drop_notice_due && !self.has_deferred.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let r = self.transact(Actor::File, |txn| {
            txn.replay_deferred()?;
            txn.flush_drop_notice();
            if scan {
                txn.apply_store_changes()
            } else {
                txn.flush_digest();
                Ok(())
            }
        });
        match r {
            Err(Error::Busy { holder, .. }) => {
                self.watcher.mark_dirty();
                self.wake_when_unlocked();
                Ok(self.busy_notice(
                    &mut self.ops.lock(),
                    &format!("the store is locked by {holder}"),
                    "the store's changes",
                ))
            }
            Err(Error::Changed { path, detail }) => {
                self.watcher.mark_dirty();
                let why = format!("{} is {detail}", path.display());
                Ok(self.busy_notice(&mut self.ops.lock(), &why, "the store's changes"))
            }
            r => {
                self.has_deferred.store(!self.ops.lock().deferred.is_empty(), Ordering::Release);
                r
            }
        }
    }

    /// Makes the next poll look at the whole store.
    pub(super) fn watcher_mark_dirty(&self) {
        self.watcher.mark_dirty();
    }

    /// A digest of held-back prompts is waiting for its minute to end (one atomic load).
    fn digest_due(&self) -> bool {
        due(&self.digest_at, self.born)
    }

    /// When the next notice about dropped requests is due (`None`: nothing to tell).
    pub(super) fn set_drop_notice_at(&self, at: Option<Instant>) {
        self.drop_notice_at.store(self.ms_after_born(at), Ordering::Release);
    }

    /// When pending requests are next checked for expiry.
    pub(super) fn set_expiry_at(&self, at: Instant) {
        self.expiry_at.store(self.ms_after_born(Some(at)), Ordering::Release);
    }

    fn ms_after_born(&self, at: Option<Instant>) -> u64 {
        at.map_or(0, |t| t.saturating_duration_since(self.born).as_millis() as u64 + 1)
    }

    /// When held-back prompts are due as a digest (`None`: none held back).
    pub(super) fn set_digest_at(&self, at: Option<Instant>) {
        self.digest_at.store(self.ms_after_born(at), Ordering::Release);
    }

    /// Keeps a subscription stanza that arrived while another process held the store lock,
    /// for the next poll (which runs as soon as the lock holder's changes wake it, or on the
    /// driver's timer). Bounded: past the cap the stanza is dropped (never approved) and said.
    fn defer(
        &self,
        peer: Domain,
        ty: SubscriptionType,
        id: Option<&str>,
        holder: &str,
        locked: bool,
    ) -> Vec<Action> {
        let mut ops = self.ops.lock();
        if ops.deferred.len() >= MAX_DEFERRED {
            let text = format!(
                "dropped {} from {peer}: {MAX_DEFERRED} stanzas already wait for the store lock",
                ty.as_str()
            );
            return vec![Action::Log { level: LogLevel::Warn, text }];
        }
        let what = format!("{} from {peer}", ty.as_str());
        ops.deferred.push_back((peer, ty, id.map(str::to_string)));
        self.has_deferred.store(true, Ordering::Release);
        self.watcher.mark_dirty();
        if locked {
            self.wake_when_unlocked();
        }
        self.busy_notice(&mut ops, holder, &what)
    }

    /// Wakes the driver (its wakeup fd) as soon as the other process releases the store
    /// lock, from a thread that may wait for it; the driver's own thread never does.
    fn wake_when_unlocked(&self) {
        let store = self.store.clone();
        self.watcher.wake_after(move || drop(store.lock_within(LOCK_WAITER_GIVES_UP)));
    }

    /// One log line per 10 s while the lock is held by someone else.
    fn busy_notice(&self, ops: &mut Ops, why: &str, what: &str) -> Vec<Action> {
        if ops.busy_logged.is_some_and(|t| t.elapsed() < BUSY_LOG_EVERY) {
            return Vec::new();
        }
        ops.busy_logged = Some(Instant::now());
        let text = format!("{why}: {what} deferred to the next poll");
        vec![Action::Log { level: LogLevel::Warn, text }]
    }

    /// Runs `f` with the ops lock and the store lock held and the roster fresh from disk;
    /// saves what `f` changed (also when `f` fails half-way: what was applied was a complete
    /// transition and must not be lost): one journal line per changed peer, O(1) in the
    /// roster's size. roster.toml itself is rewritten by the compactor, off this thread.
    fn transact(&self, actor: Actor, f: impl FnOnce(&mut Txn) -> Result<()>) -> Result<Vec<Action>> {
        self.transact_as(actor, true, f)
    }

    /// [`Engine::transact`], whose journal line is synced only if `sync` (a delivery's
    /// confirmation need not be: see `outbox`).
    pub(super) fn transact_as(
        &self,
        actor: Actor,
        sync: bool,
        f: impl FnOnce(&mut Txn) -> Result<()>,
    ) -> Result<Vec<Action>> {
        let mut ops = self.ops.lock();
        let _gate = self.compactor.gate();
        let _lock = self.store.lock_within(self.config.lock_wait)?;
        let mut actions = self.refresh_roster(&mut ops)?;
        let mut txn = Txn::new(self, &mut ops, actor);
        let result = f(&mut txn);
        let (changes, txn_actions) = txn.finish();
        if !changes.is_empty() {
            self.save(&mut ops, changes, sync)?;
        }
        result?;
        actions.extend(txn_actions);
        Ok(actions)
    }

    /// Makes `changes` durable and what readers see.
    fn save(&self, ops: &mut Ops, changes: Map<Option<RosterEntry>>, sync: bool) -> Result<()> {
        self.check_unchanged(ops)?;
        let old = self.view.load();
        let lines: Vec<Change> = changes
            .iter()
            .map(|(peer, new)| Change::between(peer, old.get(peer), new.as_ref()))
            .filter(|c| c.remove || !c.set.is_empty())
            .collect();
        let changed: Vec<Domain> = changes.keys().cloned().collect();
        let new = old.with_changes(changes);
        // Lines go on the journal in use: the one read with roster.toml (which, for a file
        // edited before the last compaction, extends the roster after it).
        match ops.journal.map(|p| p.base).or(ops.base) {
            Some(base) => ops.journal = Some(self.store.append_changes(base, &lines, ops.journal, sync)?),
            None => {
                // No seal to journal against (a new store, or a roster.toml written from
                // scratch by hand): write it whole, once.
                self.check_settled(ops)?;
                // No journal line to write lost request files again from (see
                // `restore_lost_requests`): make them durable before their states are.
                self.store.sync_pending()?;
                let pos = self.store.save_roster(new.iter())?;
                ops.base = Some(pos.base);
                ops.journal = Some(pos);
                ops.roster_external = false;
            }
        }
        ops.files = self.files();
        let new = Arc::new(new);
        self.view.publish_arc(new.clone(), Some(changed));
        if let Some(pos) = ops.journal {
            let job = Job {
                snapshot: new,
                files: ops.files,
                pos,
                external: ops.roster_external,
                last_change: Instant::now(),
            };
            self.compactor.submit(job);
        }
        Ok(())
    }

    fn files(&self) -> Files {
        Files { roster: self.store.roster_fingerprint(), journal: self.store.journal_fingerprint() }
    }

    /// Refuses to write over files that another program wrote without the lock since we read
    /// them. The admin's file is never replaced by our older view.
    fn check_unchanged(&self, ops: &Ops) -> Result<()> {
        if self.files() != ops.files {
            let path = self.store.dir().join("roster.toml");
            return Err(Error::Changed { path, detail: "changed while in use".into() });
        }
        Ok(())
    }

    /// Refuses to replace a roster.toml another program wrote only just now: an in-place `cp`
    /// restore writes the file in pieces, and a half-written file can parse.
    fn check_settled(&self, ops: &Ops) -> Result<()> {
        if ops.roster_external
            && let Some(age) = unsettled(ops.files.roster)
        {
            let path = self.store.dir().join("roster.toml");
            let detail =
                format!("written by another program {} ms ago (a copy in progress?)", age.as_millis());
            return Err(Error::Changed { path, detail });
        }
        Ok(())
    }

    /// Catches up with what other processes wrote: new journal lines (read from where we
    /// stopped), a compaction of ours (adopted without reading), or a roster.toml replaced or
    /// edited (read whole). Returns the trust changes that implies; those of an edit of
    /// roster.toml are audited as hand edits (journal lines were audited by their writer).
    fn refresh_roster(&self, ops: &mut Ops) -> Result<Vec<Action>> {
        let files = self.files();
        // Our compaction thread rewrote roster.toml from what we had (and carried over the
        // lines we appended since): take its files as read, and its map as our new base.
        if let Some(done) = self.compactor.take_done()
            && ops.files.roster == done.roster_before
            && ops.journal.is_some_and(|p| {
                (p.ino, p.base, p.offset) == (done.pos_before.ino, done.pos_before.base, done.old_end)
            })
        {
            ops.files = done.after;
            ops.journal = Some(done.pos);
            ops.base = Some(done.pos.base);
            ops.roster_external = false;
            if let Some(rebased) = self.view.load().rebased(&done.snapshot, done.merged) {
                self.view.publish_same(rebased);
            }
        }
        if files == ops.files {
            return Ok(Vec::new());
        }
        let roster = self.view.load();
        if files.roster.is_some()
            && files.roster == ops.files.roster
            && let Some(pos) = ops.journal
            && let Some((changes, pos)) = self.store.journal_since(pos)?
        {
            let mut changed = Map::default();
            for c in &changes {
                let before = changed.get(&c.peer).cloned().unwrap_or_else(|| roster.get(&c.peer).cloned());
                let after = self.store.apply_change(c, before.as_ref())?;
                changed.insert(c.peer.clone(), after);
            }
            let mut actions = trust_changes(&roster, changed.iter().map(|(p, e)| (p, e.as_ref())));
            ops.journal = Some(pos);
            ops.files = files;
            let peers: Vec<Domain> = changed.keys().cloned().collect();
            self.view.publish(roster.with_changes(changed), Some(peers.clone()));
            // Lines an engine wrote were audited by it; one written by hand was not.
            actions.extend(self.audit_outside_changes(ops, Some(peers), false, None)?);
            return Ok(actions);
        }
        // Written moments ago by another program and not whole (cut mid-line, so it does not
        // parse; or cut at a line end, so it has no last line): an editor or an in-place copy
        // still at it. Half a file can parse; keep the roster in use until it is whole or
        // settles, rather than publish (and audit) trust lost and found again. A file that
        // stays broken is reported as corrupt once it has settled.
        let being_written = |detail: &str| {
            self.watcher.mark_dirty();
            let path = self.store.dir().join("roster.toml");
            Err(Error::Changed { path, detail: format!("being written ({detail})") })
        };
        let young = ops.files.roster.is_some() && unsettled(files.roster).is_some();
        let read = match self.store.read_roster() {
            Err(Error::Corrupt { path, .. }) if young && path.ends_with("roster.toml") => {
                return being_written("it does not parse yet");
            }
            read => read?,
        };
        if young && read.base.is_none() && !read.sealed {
            return being_written("its last line is missing");
        }
        if ops.files.roster.is_none() && ops.journal.is_none() {
            ops.unfolded_at_open = read.journal_peers;
        }
        let new: Map<RosterEntry> = read.file.peers.into_iter().collect();
        let mut actions = Vec::new();
        let running = ops.files.roster.is_some();
        if running {
            let gone = roster.iter().filter(|(p, _)| !new.contains_key(*p)).map(|(p, _)| (p, None));
            let all = new.iter().map(|(p, e)| (p, Some(e))).chain(gone);
            actions = trust_changes(&roster, all);
        }
        // Not written whole by an engine: a hand edit, or a copy still in progress.
        ops.roster_external = !read.sealed;
        ops.base = read.base;
        ops.journal = read.journal;
        ops.files = files;
        self.view.publish(Roster::from_map(new), None);
        // A state changed by the edit or restore is audited like any other change (at
        // open, the server's first poll compares them all: `Txn::apply_store_changes`).
        let folder = folder_inode(self.store.dir());
        let put_back = std::mem::replace(&mut ops.folder, folder) != folder;
        if running {
            actions.extend(self.audit_outside_changes(ops, None, false, put_back.then_some(&*roster))?);
        }
        Ok(actions)
    }
}

impl Drop for Engine {
    /// Counts in the store the drops not yet counted (held for the next 10 s notice), so a
    /// server stopping right after a flood does not lose them from `pending`'s count. Only if
    /// the store lock is free at once: a closing engine never waits.
    fn drop(&mut self) {
        let ops = self.ops.get_mut();
        if ops.cap_drops > 0
            && let Ok(_lock) = self.store.lock_within(std::time::Duration::ZERO)
        {
            let _ = self.store.add_drops(ops.cap_drops, &ops.cap_dropped);
        }
    }
}

/// A timer kept as milliseconds after `born` (0: not set) has come (one atomic load).
fn due(at: &AtomicU64, born: Instant) -> bool {
    let at = at.load(Ordering::Acquire);
    at != 0 && born.elapsed().as_millis() as u64 >= at
}

/// The trust changes from `roster` to the entries given (`None`: gone).
fn trust_changes<'a>(
    roster: &Roster,
    entries: impl Iterator<Item = (&'a Domain, Option<&'a RosterEntry>)>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (peer, e) in entries {
        let was = roster.get(peer).is_some_and(|o| o.state.from());
        let now = e.is_some_and(|e| e.state.from());
        if was != now {
            actions.push(Action::TrustChanged { peer: peer.clone(), trusted: now });
        }
    }
    actions
}
