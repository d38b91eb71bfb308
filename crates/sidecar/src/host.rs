//! One served host: its engine on the shared store, its API worker, and the trusted-peer
//! snapshot that long-polls wait on. Everything here is synchronous; the HTTP layer calls the
//! parts that touch the disk from tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use server_trust::{Action, Domain, Engine, LogLevel, Result};
use tokio::sync::watch;

use crate::config::HostConfig;
use crate::outbound::{Job, Outbound, Stop};

/// How long presence and messages are retried while the XMPP server's API is unreachable.
pub const PATIENCE: Duration = Duration::from_secs(30);
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
    pub engine: Engine,
    admins: Vec<String>,
    out: Outbound,
    /// The engine's generation when the trusted set was last computed.
    seen: Mutex<Option<u64>>,
    /// The last poll's error, so a lasting one is logged once.
    poll_error: Mutex<Option<String>>,
    trusted: watch::Sender<Trusted>,
}

impl Host {
    /// Opens the engine for `cfg` on `store` and starts its API worker.
    pub fn open(store: &Path, cfg: &HostConfig, stop: Stop) -> Result<(Host, JoinHandle<()>)> {
        let engine = Engine::open(store, cfg.name.as_str(), cfg.engine.clone())?;
        let (out, worker) =
            Outbound::start(cfg.name.clone(), cfg.api_url.clone(), cfg.api_token.clone(), stop);
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let host = Host {
            name: cfg.name.clone(),
            admins: cfg.admins.clone(),
            out,
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

    /// Our presence to approved peers, probes to peers that approved us.
    pub fn startup(&self, patience: Duration) -> usize {
        let actions = self.engine.startup_actions();
        self.perform(&actions, patience);
        actions.len()
    }

    /// Carries out the engine's actions.
    pub fn perform(&self, actions: &[Action], patience: Duration) {
        for a in actions {
            match a {
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

    /// For long-polls: changes whenever the trusted set does.
    pub fn subscribe_trusted(&self) -> watch::Receiver<Trusted> {
        self.trusted.subscribe()
    }
}
