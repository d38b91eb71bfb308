//! One served host: its engine on the shared store, its two API lanes (the outbox lane for
//! subscription stanzas, the presence lane for the rest: see `outbound`), and the
//! trusted-peer snapshot that long-polls wait on. Everything here but [`Host::act_outcome`]
//! is synchronous; the HTTP layer calls the parts that touch the disk from tokio's blocking
//! pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use server_trust::engine::outbox;
use server_trust::{Action, Domain, Engine, LogLevel, PresenceKind, Result};
use tokio::sync::watch;

use crate::config::HostConfig;
use crate::outbound::{Job, Outbound, OutboxLane, Stop, Wake};

/// How long presence and messages are retried while the XMPP server's API is unreachable.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// How long an admin act's reply waits for its subscription stanzas to be accepted before
/// saying they wait in the outbox.
pub const ACK_WAIT: Duration = Duration::from_secs(1);
/// At start-up ejabberd may still be booting: retry longer.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// A peer we trust (state From or Both), as the hook API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedPeer {
    /// The peer domain.
    pub peer: Domain,
    /// Its groups (scopes).
    pub groups: Vec<String>,
}

/// The trusted set and its generation, replaced together.
#[derive(Clone, Debug)]
pub struct Trusted {
    /// Moves whenever `peers` changes. Starts at the process start time in milliseconds, so
    /// a restarted sidecar never repeats a generation a client saw before.
    pub generation: u64,
    /// Sorted by domain.
    pub peers: Arc<Vec<TrustedPeer>>,
}

/// A served host.
pub struct Host {
    /// The domain.
    pub name: Domain,
    /// Its engine.
    pub engine: Arc<Engine>,
    admins: Vec<String>,
    /// The presence lane.
    out: Outbound,
    /// Wakes the outbox lane.
    outbox: Arc<Wake>,
    /// The engine's generation when the trusted set was last computed.
    seen: Mutex<Option<u64>>,
    /// The last poll's error, so a lasting one is logged once.
    poll_error: Mutex<Option<String>>,
    trusted: watch::Sender<Trusted>,
}

impl Host {
    /// Opens the engine for `cfg` on `store` and starts its API worker.
    pub fn open(store: &Path, cfg: &HostConfig, stop: Stop) -> Result<(Host, JoinHandle<()>)> {
        let engine = Arc::new(Engine::open(store, cfg.name.as_str(), cfg.engine.clone())?);
        // What the outbox holds (left by an earlier run, say one killed) is due at once. The
        // lane's thread ends when `stop` is set; it needs no draining: its stanzas are on disk.
        let (outbox, _lane) =
            OutboxLane::start(engine.clone(), cfg.api_url.clone(), &cfg.api_token, stop.clone());
        let (out, worker) =
            Outbound::start(cfg.name.clone(), cfg.api_url.clone(), cfg.api_token.clone(), stop);
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let host = Host {
            name: cfg.name.clone(),
            admins: cfg.admins.clone(),
            out,
            outbox,
            seen: Mutex::new(None),
            poll_error: Mutex::new(None),
            trusted: watch::Sender::new(Trusted { generation: start, peers: Arc::default() }),
            engine,
        };
        host.refresh_trusted();
        if host.engine.wakeup_fd().is_none() {
            log::warn!(
                "{}: cannot watch the store; CLI decisions are picked up by the timer only",
                host.name
            );
        }
        Ok((host, worker))
    }

    /// Runs an engine call that may change the roster, carries out its actions and updates
    /// the trusted set.
    pub fn run(&self, f: impl FnOnce(&Engine) -> Result<Vec<Action>>) -> Result<Vec<Action>> {
        let result = f(&self.engine);
        if let Ok(actions) = &result {
            self.perform(actions, PATIENCE);
        }
        self.refresh_trusted();
        result
    }

    /// Picks up CLI and file decisions. A failure (say a roster.toml an editor broke) is
    /// logged when it starts or changes and when it ends, not at every poll.
    pub fn poll(&self) {
        let outcome = self.run(Engine::poll).err().map(|e| e.to_string());
        let mut last = self.poll_error.lock().unwrap_or_else(|p| p.into_inner());
        if *last != outcome {
            match &outcome {
                Some(e) => log::error!("{}: cannot pick up store changes: {e}", self.name),
                None => log::info!("{}: store changes are picked up again", self.name),
            }
            *last = outcome;
        }
    }

    /// Our presence to approved peers, probes to peers that approved us; and the XMPP
    /// server being (back) up, what waits in the outbox is tried at once.
    pub fn startup(&self, patience: Duration) -> usize {
        self.engine.outbox_retry_now();
        self.outbox.wake();
        let actions = self.engine.startup_actions();
        self.perform(&actions, patience);
        actions.len()
    }

    /// Carries out the engine's actions: subscription stanzas the engine recorded go on the
    /// outbox lane (which reads them from the engine), the rest on the presence lane.
    /// Our available presence to a peer whose `subscribed` waits is left to the outbox lane,
    /// which sends it right after the `subscribed` (it would mean nothing to the peer before).
    pub fn perform(&self, actions: &[Action], patience: Duration) {
        let waits_subscribed = |peer: &Domain| {
            actions.iter().any(|a| {
                matches!(a, Action::Send { to, kind: PresenceKind::Subscribed, id }
                    if to == peer && self.engine.is_waiting(to, PresenceKind::Subscribed, id.as_deref()))
            })
        };
        for a in actions {
            match a {
                Action::Send { to, kind, id } if self.engine.is_waiting(to, *kind, id.as_deref()) => {
                    self.outbox.wake()
                }
                Action::Send { to, kind: PresenceKind::Available, .. } if waits_subscribed(to) => {}
                Action::Send { to, kind, id } => {
                    self.out.send(Job::Presence { to: to.clone(), kind: *kind, id: id.clone() }, patience)
                }
                Action::Notify { text, .. } => {
                    // Always in the log too: it holds the exact approve command.
                    log::warn!("{}: {text}", self.name);
                    for admin in &self.admins {
                        self.out.send(Job::Message { to: admin.clone(), body: text.clone() }, patience);
                    }
                }
                Action::TrustChanged { peer, trusted } => {
                    let what = if *trusted { "now trusted" } else { "no longer trusted" };
                    log::info!("{}: {peer} is {what}", self.name);
                }
                // Replies come back to ejabberd, not here: the module sends the queries.
                Action::Query { .. } => {}
                Action::Log { level, text } => {
                    let level = match level {
                        LogLevel::Info => log::Level::Info,
                        LogLevel::Warn => log::Level::Warn,
                        _ => log::Level::Error,
                    };
                    log::log!(level, "{}: {text}", self.name);
                }
            }
        }
    }

    /// Recomputes the trusted set when the engine's roster moved since the last time (its
    /// generation is read first, so a change racing with the copy is seen again next time),
    /// and moves our generation, waking long-polls, if the set differs.
    pub fn refresh_trusted(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.engine.generation();
        if *seen == Some(now) {
            return;
        }
        *seen = Some(now);
        let peers: Vec<TrustedPeer> = self
            .engine
            .roster()
            .into_iter()
            .filter(|(_, e)| e.state.from())
            .map(|(peer, e)| TrustedPeer { peer, groups: e.groups })
            .collect();
        self.trusted.send_if_modified(|t| {
            if *t.peers == peers {
                return false;
            }
            t.generation += 1;
            t.peers = Arc::new(peers);
            true
        });
    }

    /// What an admin act's reply says about its stanzas: waits up to [`ACK_WAIT`] for the
    /// outbox lane to have the XMPP server accept the subscription stanzas, then says
    /// truthfully which were accepted and which wait.
    pub async fn act_outcome(&self, peer: &Domain, actions: &[Action]) -> String {
        let sends: Vec<(PresenceKind, Option<&str>)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, kind, id } if to == peer => Some((*kind, id.as_deref())),
                _ => None,
            })
            .collect();
        let durable: Vec<_> = sends.iter().filter(|(k, _)| outbox::is_durable(*k)).collect();
        let presence = sends.len() - durable.len();
        let end = tokio::time::Instant::now() + ACK_WAIT;
        let waiting = loop {
            let waiting = durable.iter().filter(|(k, id)| self.engine.is_waiting(peer, *k, *id)).count();
            if waiting == 0 || tokio::time::Instant::now() >= end {
                break waiting;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let accepted = durable.len() - waiting;
        let mut parts = Vec::new();
        if accepted > 0 {
            parts.push(format!("{accepted} subscription stanza(s) accepted by the XMPP server"));
        }
        if presence > 0 {
            parts.push(format!("{presence} presence stanza(s) queued"));
        }
        if waiting > 0 {
            let mut s = format!(
                "recorded; {waiting} subscription stanza(s) wait for the XMPP server's API, retrying \
                 (GET /v1/hosts/{}/outbox)",
                self.name
            );
            if !parts.is_empty() {
                s = format!("{s}; {}", parts.join("; "));
            }
            return s;
        }
        if parts.is_empty() { "done: nothing to send".into() } else { format!("done: {}", parts.join("; ")) }
    }

    /// For long-polls: changes whenever the trusted set does.
    pub fn subscribe_trusted(&self) -> watch::Receiver<Trusted> {
        self.trusted.subscribe()
    }
}
