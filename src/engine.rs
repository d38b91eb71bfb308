//! The server roster engine: one per served host, driven equally by a Lua module, a C host
//! or an HTTP server.
//!
//! Drivers feed it inbound presence and admin acts; it updates the store and returns the
//! [`Action`]s to carry out. XEP-0267 policy lives here: an inbound `subscribe` is never
//! approved without an admin, and `subscribe` is only sent because an admin asked (directly,
//! or through `reciprocate` after approving). The RFC 6121 tables are in
//! [`crate::subscription`]; this module decides what each transition means for a server.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::store::{
    AuditRecord, Decision, Fingerprint, PendingRequest, QueuedAct, RosterEntry, Store, now_rfc3339,
};
use crate::subscription::{Direction, Disposition, Subscription, SubscriptionType, transition};

/// Engine settings; drivers map their own option names onto these.
#[derive(Clone, Debug)]
pub struct Config {
    /// After approving a peer, also ask it back (XEP-0267 SHOULD). Default on.
    pub reciprocate: bool,
    /// `request PEER` also pre-approves PEER's reciprocal `subscribe` (RFC 6121 §3.4). Default on.
    pub preapprove_on_request: bool,
    /// Pending requests kept at most; more are dropped with a log line. Default 1000.
    pub max_pending: usize,
    /// Repeated `subscribe` from a pending peer updates its file at most this often. Default 60 s.
    pub repeat_window: Duration,
    /// Watch the store with inotify so [`Engine::poll`] costs nothing when nothing changed.
    pub watch: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reciprocate: true,
            preapprove_on_request: true,
            max_pending: 1000,
            repeat_window: Duration::from_secs(60),
            watch: true,
        }
    }
}

/// Presence types a driver can hand to [`Engine::inbound`] or be asked to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// `subscribe`
    Subscribe,
    /// `subscribed`
    Subscribed,
    /// `unsubscribe`
    Unsubscribe,
    /// `unsubscribed`
    Unsubscribed,
    /// `probe`
    Probe,
    /// available presence (no `type` attribute)
    Available,
    /// `unavailable`
    Unavailable,
}

impl PresenceKind {
    /// The XML `type` attribute value (`available` has none on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Subscribed => "subscribed",
            Self::Unsubscribe => "unsubscribe",
            Self::Unsubscribed => "unsubscribed",
            Self::Probe => "probe",
            Self::Available => "available",
            Self::Unavailable => "unavailable",
        }
    }

    fn subscription(self) -> Option<SubscriptionType> {
        match self {
            Self::Subscribe => Some(SubscriptionType::Subscribe),
            Self::Subscribed => Some(SubscriptionType::Subscribed),
            Self::Unsubscribe => Some(SubscriptionType::Unsubscribe),
            Self::Unsubscribed => Some(SubscriptionType::Unsubscribed),
            _ => None,
        }
    }
}

impl From<SubscriptionType> for PresenceKind {
    fn from(t: SubscriptionType) -> Self {
        match t {
            SubscriptionType::Subscribe => Self::Subscribe,
            SubscriptionType::Subscribed => Self::Subscribed,
            SubscriptionType::Unsubscribe => Self::Unsubscribe,
            SubscriptionType::Unsubscribed => Self::Unsubscribed,
        }
    }
}

impl FromStr for PresenceKind {
    type Err = Error;
    /// Accepts the `type` attribute; an empty string means available.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "subscribe" => Self::Subscribe,
            "subscribed" => Self::Subscribed,
            "unsubscribe" => Self::Unsubscribe,
            "unsubscribed" => Self::Unsubscribed,
            "probe" => Self::Probe,
            "" | "available" => Self::Available,
            "unavailable" => Self::Unavailable,
            _ => return Err(Error::InvalidArgument(format!("not a presence type: {s:?}"))),
        })
    }
}

/// Severity of an [`Action::Log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Routine.
    Info,
    /// Needs an admin's eye.
    Warn,
    /// Something is broken (e.g. a corrupt store file).
    Error,
}

impl LogLevel {
    /// `info`, `warn` or `error`, as Prosody names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `<presence from=HOST to=PEER type=KIND id=ID/>`.
    Send {
        /// Recipient server.
        to: Domain,
        /// Presence type.
        kind: PresenceKind,
        /// Echo of the stanza id being answered.
        id: Option<String>,
    },
    /// Tell the host's admins (chat message, log line at warn).
    Notify {
        /// The peer concerned.
        peer: Domain,
        /// Human text, including the command that acts on it.
        text: String,
    },
    /// `is_trusted(peer)` changed; drivers fire their own events.
    TrustChanged {
        /// The peer concerned.
        peer: Domain,
        /// New value.
        trusted: bool,
    },
    /// A line for the server log.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        text: String,
    },
}

/// Who caused a change; recorded in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The remote server, by a stanza.
    Peer,
    /// The `server-trust` command.
    Cli,
    /// An admin editing a pending file.
    File,
    /// A program through the C ABI or HTTP.
    Api,
    /// Prosody's admin shell.
    Shell,
    /// An XEP-0050 ad-hoc command.
    Adhoc,
    /// The engine itself (pre-approval, reciprocation).
    Engine,
}

impl Actor {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Cli => "cli",
            Self::File => "file",
            Self::Api => "api",
            Self::Shell => "shell",
            Self::Adhoc => "adhoc",
            Self::Engine => "engine",
        }
    }
}

impl FromStr for Actor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Self::Peer, Self::Cli, Self::File, Self::Api, Self::Shell, Self::Adhoc, Self::Engine]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown actor {s:?}")))
    }
}

/// What the engine knows of a peer's own presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPresence {
    /// Last presence was available.
    pub available: bool,
    /// When it arrived.
    pub last_seen: SystemTime,
}

/// One served host's roster engine. Thread-safe; share it behind an `Arc`.
pub struct Engine {
    host: Domain,
    store: Store,
    config: Config,
    /// The roster as readers see it: an immutable snapshot swapped in after each change,
    /// so `is_trusted` takes no lock.
    view: ArcSwap<Roster>,
    /// Bumped after each publish; with `id`, tells a thread its cached snapshot is current.
    generation: AtomicU64,
    id: u64,
    ops: Mutex<Ops>,
    presence: Mutex<HashMap<Domain, PeerPresence>>,
    wake: Arc<Wake>,
    watcher: Mutex<Option<Watch>>,
}

/// The inotify watcher and the process that started it: its thread does not survive a
/// fork (Prosody daemonizes after loading modules), so the child must start its own.
struct Watch {
    pid: u32,
    _watcher: notify::RecommendedWatcher,
}

/// State only touched with the ops lock held.
struct Ops {
    roster_fp: Option<Fingerprint>,
    last_repeat: HashMap<Domain, Instant>,
    /// Corrupt files already reported, so a broken file is logged once per change.
    reported: HashMap<std::path::PathBuf, String>,
    /// Requests dropped at the pending cap since the last log line about it.
    cap_drops: u64,
    cap_logged: Option<Instant>,
}

/// At most one log line per this long about requests dropped at the pending cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The roster snapshot this thread last read: (engine id, generation, snapshot).
    static SNAPSHOT: RefCell<Option<(u64, u64, Arc<Roster>)>> = const { RefCell::new(None) };
}

/// Peers by domain.
type Roster = HashMap<Domain, RosterEntry, foldhash::fast::RandomState>;

/// One operation in progress: holds the locks' state and collects actions.
struct Step<'a> {
    engine: &'a Engine,
    ops: &'a mut Ops,
    actor: Actor,
    actions: Vec<Action>,
    /// The roster with this step's changes, once it has any.
    working: Option<Roster>,
}

impl Engine {
    /// Opens the engine for `host` over `<store_root>/<host>/`.
    ///
    /// A corrupt roster is an error: the engine refuses to run on a roster it cannot read,
    /// rather than start empty and overwrite it.
    pub fn open(store_root: &Path, host: &str, config: Config) -> Result<Engine> {
        let host = Domain::new(host)?;
        let store = Store::open(store_root, &host)?;
        let wake = Arc::new(Wake::new(config.watch));
        let watcher = if config.watch { watch(store.dir(), wake.clone()) } else { None };
        let engine = Engine {
            host,
            store,
            config,
            view: ArcSwap::from_pointee(Roster::default()),
            generation: AtomicU64::new(0),
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            ops: Mutex::new(Ops {
                roster_fp: None,
                last_repeat: HashMap::new(),
                reported: HashMap::new(),
                cap_drops: 0,
                cap_logged: None,
            }),
            presence: Mutex::new(HashMap::new()),
            wake,
            watcher: Mutex::new(watcher),
        };
        {
            let mut ops = engine.ops.lock();
            let _lock = engine.store.lock()?;
            engine.refresh_roster(&mut ops)?;
        }
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
    pub fn is_trusted(&self, peer: &str, scope: Option<&str>) -> bool {
        self.with_view(|roster| {
            let entry = match roster.get(peer) {
                Some(e) => e,
                // Only input that is not in normal form can still match once normalised.
                None if !Domain::may_change_when_normalised(peer) => return false,
                None => match Domain::new(peer).ok().and_then(|d| roster.get(&d)) {
                    Some(e) => e,
                    None => return false,
                },
            };
            entry.state.from() && scope.is_none_or(|s| entry.groups.iter().any(|g| g == s))
        })
    }

    /// Runs `f` on the current roster snapshot. The hot path of every trust check: the
    /// thread keeps the snapshot it last saw and only goes to the `ArcSwap` (~17 ns) when
    /// the generation moved or another engine was used in between (~2 ns otherwise).
    fn with_view<T>(&self, f: impl FnOnce(&Roster) -> T) -> T {
        let generation = self.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let done = SNAPSHOT.try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if !matches!(&*slot, Some((id, g, _)) if *id == self.id && *g == generation) {
                *slot = Some((self.id, generation, self.view.load_full()));
            }
            let (_, _, roster) = slot.as_ref()?;
            f.take().map(|f| f(roster))
        });
        match (done, f) {
            (Ok(Some(v)), _) => v,
            (_, Some(f)) => f(&self.view.load()), // thread exiting or re-entered: no cache
            (_, None) => unreachable!("f ran but gave no value"),
        }
    }

    /// Makes `roster` what readers see. Snapshot first, then the generation, so a reader
    /// that sees the new generation also gets the new snapshot.
    fn publish(&self, roster: Roster) {
        self.view.store(Arc::new(roster));
        self.generation.fetch_add(1, Ordering::AcqRel);
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

    /// Last known presence of `peer`.
    pub fn presence(&self, peer: &str) -> Option<PeerPresence> {
        let peer = Domain::new(peer).ok()?;
        self.presence.lock().get(&peer).copied()
    }

    /// Applies a presence stanza that `from` sent to our host JID.
    pub fn inbound(&self, from: &str, kind: PresenceKind, id: Option<&str>) -> Result<Vec<Action>> {
        let peer = Domain::new(from)?;
        if peer == self.host {
            return Err(Error::InvalidArgument(format!("presence from our own host {peer}")));
        }
        match kind {
            PresenceKind::Available | PresenceKind::Unavailable => {
                if self.state(peer.as_str())?.to() {
                    let p = PeerPresence {
                        available: kind == PresenceKind::Available,
                        last_seen: SystemTime::now(),
                    };
                    self.presence.lock().insert(peer, p);
                }
                Ok(Vec::new())
            }
            PresenceKind::Probe => Ok(vec![self.answer_probe(peer, id)]),
            _ => {
                let ty = kind.subscription().expect("subscription kinds handled above");
                self.with_step(Actor::Peer, |step| step.inbound(&peer, ty, id))
            }
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

    /// Admin asks `peer` for a subscription (and pre-approves its reciprocal request).
    pub fn request(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?;
        self.with_step(actor, |step| step.request(&peer))
    }

    /// Admin approves `peer`'s pending request.
    pub fn approve(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?;
        self.with_step(actor, |step| step.decide(&peer, Decision::Approve))
    }

    /// Admin denies `peer`'s pending request.
    pub fn deny(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?;
        self.with_step(actor, |step| step.decide(&peer, Decision::Deny))
    }

    /// Admin withdraws all trust with `peer`, both ways.
    pub fn revoke(&self, peer: &str, actor: Actor) -> Result<Vec<Action>> {
        let peer = Domain::new(peer)?;
        self.with_step(actor, |step| step.revoke(&peer))
    }

    /// Replaces `peer`'s groups (scopes).
    pub fn set_groups(&self, peer: &str, groups: Vec<String>, actor: Actor) -> Result<()> {
        let peer = Domain::new(peer)?;
        self.with_step(actor, |step| {
            step.audit(&peer, &format!("groups set to {groups:?}"), None, None);
            step.update(&peer, |e| e.groups = groups);
            Ok(())
        })?;
        Ok(())
    }

    /// A file descriptor that becomes readable when the store changed (Linux eventfd), for
    /// drivers with an event loop: call [`Engine::poll`] when it is readable, which also
    /// resets it. `None` when not watching. Owned by the engine: do not close it.
    pub fn wakeup_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.wake.fd.as_ref().map(|fd| fd.as_raw_fd())
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

    /// Picks up what other processes decided: edited pending files, acts queued by the CLI,
    /// hand edits of the roster. Returns the actions those imply. With the watcher running
    /// and nothing changed this is one atomic load: no disk work.
    pub fn poll(&self) -> Result<Vec<Action>> {
        let watching = {
            let mut w = self.watcher.lock();
            if w.as_ref().is_some_and(|w| w.pid != std::process::id()) {
                // Forked: the watcher's thread stayed in the parent. Dropping it here would
                // wait for that thread forever, so leak it and start a new one.
                std::mem::forget(w.take());
                *w = watch(self.store.dir(), self.wake.clone());
                self.wake.dirty.store(true, Ordering::Release);
            }
            w.is_some()
        };
        self.wake.drain();
        if watching && !self.wake.dirty.swap(false, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        self.with_step(Actor::File, |step| step.poll())
    }

    /// Runs `f` with the ops lock and the store lock held and the roster fresh from disk;
    /// saves the roster if `f` changed it (also when `f` fails half-way: what was applied
    /// was a complete transition and must not be lost).
    fn with_step(&self, actor: Actor, f: impl FnOnce(&mut Step) -> Result<()>) -> Result<Vec<Action>> {
        let mut ops = self.ops.lock();
        let _lock = self.store.lock()?;
        let mut actions = self.refresh_roster(&mut ops)?;
        let mut step = Step { engine: self, ops: &mut ops, actor, actions: Vec::new(), working: None };
        let result = f(&mut step);
        let (working, step_actions) = (step.working, step.actions);
        if let Some(roster) = working {
            self.save_roster(&mut ops, &roster)?;
            self.publish(roster);
        }
        result?;
        actions.extend(step_actions);
        Ok(actions)
    }

    /// Reloads roster.toml if another process (or an editor) replaced it. Returns the trust
    /// changes that implies.
    fn refresh_roster(&self, ops: &mut Ops) -> Result<Vec<Action>> {
        let fp = self.store.roster_fingerprint();
        if fp.is_some() && fp == ops.roster_fp {
            return Ok(Vec::new());
        }
        let file = self.store.load_roster()?;
        let new: Roster = file.peers.into_iter().collect();
        let roster = self.view.load();
        let mut actions = Vec::new();
        if ops.roster_fp.is_some() {
            for (peer, e) in &new {
                let was = roster.get(peer).is_some_and(|o| o.state.from());
                if was != e.state.from() {
                    actions.push(Action::TrustChanged { peer: peer.clone(), trusted: e.state.from() });
                }
            }
            for (peer, e) in roster.iter() {
                if e.state.from() && !new.contains_key(peer) {
                    actions.push(Action::TrustChanged { peer: peer.clone(), trusted: false });
                }
            }
        }
        self.publish(new);
        ops.roster_fp = fp;
        Ok(actions)
    }

    fn save_roster(&self, ops: &mut Ops, roster: &Roster) -> Result<()> {
        self.store.save_roster(roster)?;
        ops.roster_fp = self.store.roster_fingerprint();
        Ok(())
    }
}

/// How the watcher thread tells the driver that the store changed: a flag that `poll` checks,
/// and an eventfd a driver can put in its event loop to poll at once instead of waiting for
/// its timer (`Engine::wakeup_fd`).
struct Wake {
    dirty: AtomicBool,
    fd: Option<std::os::fd::OwnedFd>,
}

impl Wake {
    fn new(with_fd: bool) -> Wake {
        use std::os::fd::FromRawFd;
        let fd = with_fd
            .then(|| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })
            .filter(|&fd| fd >= 0)
            .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        Wake { dirty: AtomicBool::new(true), fd }
    }

    fn signal(&self) {
        use std::os::fd::AsRawFd;
        self.dirty.store(true, Ordering::Release);
        if let Some(fd) = &self.fd {
            let one: u64 = 1;
            // Non-blocking; a full counter already means "readable", so errors are moot.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Resets the eventfd so a level-triggered loop does not spin.
    fn drain(&self) {
        use std::os::fd::AsRawFd;
        if let Some(fd) = &self.fd {
            let mut n: u64 = 0;
            unsafe { libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        }
    }
}

fn watch(dir: &Path, wake: Arc<Wake>) -> Option<Watch> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (our own scans, the CLI's `list`, backups), audit appends and temp files are
        // not decisions; any other change may be.
        let relevant = match &res {
            Ok(ev) if ev.kind.is_access() => false,
            Ok(ev) => ev.paths.iter().any(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.') && name != "audit.log"
            }),
            Err(_) => true,
        };
        if relevant {
            wake.signal();
        }
    })
    .ok()?;
    w.watch(dir, notify::RecursiveMode::Recursive).ok()?;
    Some(Watch { pid: std::process::id(), _watcher: w })
}

impl Step<'_> {
    /// Runs `f` on the roster as this step sees it: its own changes, else the published
    /// snapshot.
    fn with_roster<T>(&self, f: impl FnOnce(&Roster) -> T) -> T {
        match &self.working {
            Some(w) => f(w),
            None => f(&self.engine.view.load()),
        }
    }

    fn entry(&self, peer: &Domain) -> RosterEntry {
        self.with_roster(|r| r.get(peer).cloned()).unwrap_or_default()
    }

    /// Changes one entry in the step's private copy (made on the first change; readers keep
    /// the old snapshot until the step publishes its result).
    fn update(&mut self, peer: &Domain, f: impl FnOnce(&mut RosterEntry)) {
        let roster = self.working.get_or_insert_with(|| (**self.engine.view.load()).clone());
        let e = roster.entry(peer.clone()).or_default();
        f(e);
        if e.is_empty() {
            roster.remove(peer);
        }
    }

    fn audit(&mut self, peer: &Domain, event: &str, from: Option<Subscription>, to: Option<Subscription>) {
        let rec = AuditRecord {
            time: now_rfc3339(),
            peer: peer.to_string(),
            actor: self.actor.as_str().to_string(),
            event: event.to_string(),
            from,
            to,
        };
        if let Err(e) = self.engine.store.audit(&rec) {
            self.log(LogLevel::Error, format!("audit log: {e}"));
        }
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.actions.push(Action::Log { level, text });
    }

    fn send(&mut self, to: &Domain, kind: PresenceKind, id: Option<&str>) {
        self.actions.push(Action::Send { to: to.clone(), kind, id: id.map(str::to_string) });
    }

    fn notify(&mut self, peer: &Domain, text: String) {
        self.actions.push(Action::Notify { peer: peer.clone(), text });
    }

    /// Applies one RFC 6121 transition to `peer` and records it. Returns the disposition.
    fn apply(&mut self, peer: &Domain, dir: Direction, ty: SubscriptionType, event: &str) -> Disposition {
        let before = self.entry(peer).state;
        let (after, disposition) = transition(before, dir, ty);
        if after != before {
            let actor = self.actor.as_str();
            self.update(peer, |e| {
                e.state = after;
                e.updated_at = Some(now_rfc3339());
                if after.from() && !before.from() {
                    e.approved_at = e.updated_at.clone();
                    e.approved_by = Some(actor.to_string());
                }
            });
            if before.from() != after.from() {
                self.actions.push(Action::TrustChanged { peer: peer.clone(), trusted: after.from() });
            }
        }
        if disposition != Disposition::Drop || after != before {
            self.audit(peer, event, Some(before), Some(after));
        }
        disposition
    }

    fn inbound(&mut self, peer: &Domain, ty: SubscriptionType, id: Option<&str>) -> Result<()> {
        let event = format!("inbound {}", ty.as_str());
        let before = self.entry(peer);
        match (ty, transition(before.state, Direction::Inbound, ty).1) {
            (SubscriptionType::Subscribe, Disposition::Deliver) if before.pre_approved => {
                // RFC 6121 §3.4: the admin pre-approved this peer by requesting it.
                self.apply(peer, Direction::Inbound, ty, &event);
                self.actor = Actor::Engine;
                self.apply(
                    peer,
                    Direction::Outbound,
                    SubscriptionType::Subscribed,
                    "approve (pre-approved by request)",
                );
                self.update(peer, |e| e.pre_approved = false);
                self.send(peer, PresenceKind::Subscribed, id);
                self.send(peer, PresenceKind::Available, None);
                self.notify(
                    peer,
                    format!(
                        "{peer} is now subscribed to {} (pre-approved by your request)",
                        self.engine.host
                    ),
                );
            }
            (SubscriptionType::Subscribe, Disposition::Deliver) => {
                let max = self.engine.config.max_pending;
                if self.engine.store.pending_count() >= max {
                    // Nothing is written for a dropped request, and a flood gets one log
                    // line per 10 s, not one per stanza.
                    self.ops.cap_drops += 1;
                    if self.ops.cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                        let n = std::mem::take(&mut self.ops.cap_drops);
                        self.ops.cap_logged = Some(Instant::now());
                        self.log(
                            LogLevel::Warn,
                            format!(
                                "dropped subscribe from {peer} ({n} dropped since the last notice): \
                                 {max} requests already pending (server_trust_max_pending)"
                            ),
                        );
                    }
                    return Ok(());
                }
                let now = now_rfc3339();
                let req = PendingRequest {
                    peer: peer.clone(),
                    decision: Decision::Pending,
                    decided_by: None,
                    first_seen: now.clone(),
                    last_seen: now,
                    times_seen: 1,
                    stanza_id: id.map(str::to_string),
                };
                // Never overwrite a file the admin is working on, even a broken one.
                if self.engine.store.read_pending(peer)?.is_none() {
                    self.engine.store.write_pending(&req)?;
                }
                self.apply(peer, Direction::Inbound, ty, &event);
                self.ops.last_repeat.insert(peer.clone(), Instant::now());
                let host = &self.engine.host;
                let root =
                    self.engine.store.dir().parent().unwrap_or(self.engine.store.dir()).display().to_string();
                self.notify(
                    peer,
                    format!(
                        "Server buddy request from {peer} to {host} (XEP-0267). Approve: \
                         server-trust --store {root} --host {host} approve {peer} \
                         (or deny; or edit {})",
                        self.engine.store.pending_path(peer).display()
                    ),
                );
            }
            (SubscriptionType::Subscribe, Disposition::AutoReply) => {
                self.audit(peer, "inbound subscribe (already approved: answered)", Some(before.state), None);
                self.send(peer, PresenceKind::Subscribed, id);
                self.send(peer, PresenceKind::Available, None);
            }
            (SubscriptionType::Subscribe, _) => self.repeat(peer)?,
            (_, Disposition::Deliver) => {
                self.apply(peer, Direction::Inbound, ty, &event);
                let after = self.entry(peer).state;
                if !after.pending_in() && before.state.pending_in() {
                    self.drop_pending_file(peer);
                }
                // A denied request takes its pre-approval with it: if the peer asks later,
                // the admin is prompted like for anyone else.
                if ty == SubscriptionType::Unsubscribed && before.state.pending_out() {
                    self.update(peer, |e| e.pre_approved = false);
                }
                let what = match ty {
                    SubscriptionType::Subscribed => "approved our request: we are subscribed",
                    SubscriptionType::Unsubscribe => "withdrew its subscription to us",
                    _ => "denied or cancelled our subscription",
                };
                self.notify(peer, format!("{peer} {what} (now {after})"));
            }
            (_, _) => {} // A stanza that changes nothing (RFC 6121 "no state change"): ignore.
        }
        Ok(())
    }

    /// A repeated `subscribe` while pending: no new prompt; the file is refreshed at most
    /// once per repeat window so a flood from one peer costs no disk writes.
    fn repeat(&mut self, peer: &Domain) -> Result<()> {
        let window = self.engine.config.repeat_window;
        if self.ops.last_repeat.get(peer).is_some_and(|t| t.elapsed() < window) {
            return Ok(());
        }
        self.ops.last_repeat.insert(peer.clone(), Instant::now());
        if let Some(mut req) = self.engine.store.read_pending(peer)? {
            req.times_seen += 1;
            req.last_seen = now_rfc3339();
            self.engine.store.write_pending(&req)?;
        }
        Ok(())
    }

    fn request(&mut self, peer: &Domain) -> Result<()> {
        if peer == &self.engine.host {
            return Err(Error::InvalidArgument(format!("{peer} is this host")));
        }
        let before = self.entry(peer);
        if before.state.to() {
            self.log(LogLevel::Info, format!("already subscribed to {peer} ({})", before.state));
            return Ok(());
        }
        self.apply(peer, Direction::Outbound, SubscriptionType::Subscribe, "request");
        let pre =
            self.engine.config.preapprove_on_request && !before.state.from() && !before.state.pending_in();
        let actor = self.actor.as_str().to_string();
        self.update(peer, |e| {
            e.requested_at = Some(now_rfc3339());
            e.requested_by = Some(actor);
            e.pre_approved |= pre;
        });
        self.send(peer, PresenceKind::Subscribe, None);
        Ok(())
    }

    fn decide(&mut self, peer: &Domain, decision: Decision) -> Result<()> {
        let before = self.entry(peer).state;
        if !before.pending_in() {
            return Err(Error::NoPendingRequest(peer.to_string()));
        }
        let id = match self.engine.store.read_pending(peer) {
            Ok(r) => r.and_then(|r| r.stanza_id),
            Err(_) => None, // a broken file must not block the admin's decision
        };
        match decision {
            Decision::Approve => {
                self.apply(peer, Direction::Outbound, SubscriptionType::Subscribed, "approve");
                self.send(peer, PresenceKind::Subscribed, id.as_deref());
                self.send(peer, PresenceKind::Available, None);
                let now = self.entry(peer).state;
                if self.engine.config.reciprocate && !now.to() && !now.pending_out() {
                    self.apply(peer, Direction::Outbound, SubscriptionType::Subscribe, "reciprocate");
                    self.send(peer, PresenceKind::Subscribe, None);
                }
            }
            Decision::Deny => {
                self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribed, "deny");
                self.send(peer, PresenceKind::Unsubscribed, id.as_deref());
            }
            Decision::Pending => return Ok(()),
        }
        self.drop_pending_file(peer);
        Ok(())
    }

    fn revoke(&mut self, peer: &Domain) -> Result<()> {
        let before = self.entry(peer);
        if before.state == Subscription::None && !before.pre_approved {
            return Err(Error::InvalidArgument(format!("{peer} is not in the roster")));
        }
        if before.state.to() || before.state.pending_out() {
            self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribe, "revoke: unsubscribe");
            self.send(peer, PresenceKind::Unsubscribe, None);
        }
        let now = self.entry(peer).state;
        if now.from() || now.pending_in() {
            self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribed, "revoke: unsubscribed");
            self.send(peer, PresenceKind::Unsubscribed, None);
        }
        self.update(peer, |e| e.pre_approved = false);
        self.drop_pending_file(peer);
        Ok(())
    }

    fn poll(&mut self) -> Result<()> {
        let (pending, bad) = self.engine.store.list_pending();
        let (queued, bad_q) = self.engine.store.list_queued();
        for err in bad.into_iter().chain(bad_q) {
            self.report(err);
        }
        for req in pending {
            // A crash between writing the file and saving the roster leaves a request the
            // roster does not know: recover it rather than lose it.
            let before = self.entry(&req.peer).state;
            if !before.pending_in() {
                self.actor = Actor::Engine;
                if transition(before, Direction::Inbound, SubscriptionType::Subscribe).1
                    != Disposition::Deliver
                {
                    self.drop_pending_file(&req.peer); // already approved: nothing to ask
                    continue;
                }
                self.apply(
                    &req.peer,
                    Direction::Inbound,
                    SubscriptionType::Subscribe,
                    "recovered pending request",
                );
            }
            if req.decision == Decision::Pending {
                continue;
            }
            self.actor = req.decided_by.as_deref().and_then(|a| a.parse().ok()).unwrap_or(Actor::File);
            // On success `decide` removed the file; a decision that cannot apply is consumed too.
            if let Err(e) = self.decide(&req.peer, req.decision) {
                self.not_applied(&req.peer, &e);
                self.drop_pending_file(&req.peer);
            }
        }
        // A pending state whose file the admin deleted: the request is dismissed unanswered.
        let store = &self.engine.store;
        let gone: Vec<Domain> = self.with_roster(|r| {
            r.iter()
                .filter(|(p, e)| e.state.pending_in() && !store.pending_path(p).exists())
                .map(|(p, _)| p.clone())
                .collect()
        });
        for peer in gone {
            self.actor = Actor::File;
            let before = self.entry(&peer).state;
            let after = Subscription::from_parts(before.to(), before.from(), before.pending_out(), false);
            self.update(&peer, |e| e.state = after);
            self.audit(&peer, "dismissed (pending file deleted)", Some(before), Some(after));
        }
        for q in queued {
            self.actor = q.queued_by.parse().unwrap_or(Actor::Cli);
            let r = match q.act {
                QueuedAct::Request => self.request(&q.peer),
                QueuedAct::Revoke => self.revoke(&q.peer),
            };
            // A queued act is consumed whether it applied or not.
            if let Err(e) = r {
                self.not_applied(&q.peer, &e);
            }
            if let Err(e) = self.engine.store.remove_queued(&q.peer) {
                self.report(e);
            }
        }
        Ok(())
    }

    fn not_applied(&mut self, peer: &Domain, e: &Error) {
        self.log(LogLevel::Warn, format!("{}'s decision on {peer} not applied: {e}", self.actor.as_str()));
    }

    /// Removes a request file after its transition was applied. Failing here must not undo
    /// the answer already decided (the actions would be lost), so it is only reported. At
    /// worst the leftover file is taken for a request the roster missed and prompts again;
    /// it is never approved by itself.
    fn drop_pending_file(&mut self, peer: &Domain) {
        self.ops.last_repeat.remove(peer);
        if let Err(e) = self.engine.store.remove_pending(peer) {
            self.report(e);
        }
    }

    fn report(&mut self, err: Error) {
        let text = err.to_string();
        let key = match &err {
            Error::Corrupt { path, .. } | Error::Io { path, .. } => path.clone(),
            _ => std::path::PathBuf::new(),
        };
        if self.ops.reported.get(&key) != Some(&text) {
            self.ops.reported.insert(key, text.clone());
            self.log(LogLevel::Error, format!("{text} (left untouched; fix or delete it)"));
        }
    }
}
