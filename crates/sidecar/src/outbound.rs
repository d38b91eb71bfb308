//! Calls to the XMPP server's HTTP API (ejabberd's mod_http_api): presence through
//! `send_stanza`, admin chat messages through `send_message`. Two lanes per host:
//!
//! * **The outbox lane** ([`OutboxLane`]) carries the subscription stanzas the engine
//!   recorded with the change that caused them (`engine::outbox`): it sends what the engine
//!   says is due, confirms each one ejabberd accepted (`Engine::delivered`), and reports each
//!   failure (`Engine::undelivered`), which the engine retries with backoff, across restarts
//!   of the sidecar (the outbox is in the store) and of ejabberd (its `hello` makes
//!   everything due at once). Nothing here can drop one.
//! * **The presence lane** ([`Outbound`]): probe answers, plain presence and admin chat
//!   messages. One worker thread per host takes jobs from a bounded queue in order, with
//!   one keep-alive ureq agent; a job that fails because the server is unreachable or
//!   answers 5xx is retried with backoff until its deadline, a 4xx is not retried. When the
//!   queue is full (a peer's probe flood) new jobs are dropped, counted, and logged once per
//!   10 s: they may be lost, and they cannot displace the outbox lane's stanzas.
//!
//! A failure never changes the roster, so trust is never gained by one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use server_trust::{Action, Domain, Engine, LogLevel, PresenceKind};

use crate::config::Token;

/// Jobs waiting per host in the presence lane; beyond this new ones are dropped.
pub const QUEUE: usize = 10_000;
/// At most one log line per this long about jobs dropped at a full presence lane.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// The outbox lane looks at the engine's outbox at least this often (it is also woken).
const LANE_TICK: Duration = Duration::from_secs(1);
/// Retry delays grow from this to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Something to ask the XMPP server to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// `<presence from=HOST to=PEER type=KIND id=ID/>`.
    Presence {
        /// The peer server.
        to: Domain,
        /// Presence type (`Available` has no type attribute).
        kind: PresenceKind,
        /// Stanza id to echo; a fresh one when None.
        id: Option<String>,
    },
    /// A chat message to one admin.
    Message {
        /// The admin's JID.
        to: String,
        /// Text.
        body: String,
    },
}

impl Job {
    /// `(API command, JSON arguments)`.
    fn request(&self, host: &Domain) -> (&'static str, String) {
        match self {
            Job::Presence { to, kind, id } => {
                let id = id.clone().unwrap_or_else(fresh_id);
                let ty = match kind {
                    PresenceKind::Available => String::new(),
                    k => format!(" type='{}'", k.as_str()),
                };
                let stanza = format!("<presence{ty} id='{}'/>", xml_escape(&id));
                let args = serde_json::json!({"from": host, "to": to, "stanza": stanza});
                ("send_stanza", args.to_string())
            }
            Job::Message { to, body } => {
                let args =
                    serde_json::json!({"type": "chat", "from": host, "to": to, "subject": "", "body": body});
                ("send_message", args.to_string())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Job::Presence { to, kind, .. } => format!("presence {} to {to}", kind.as_str()),
            Job::Message { to, .. } => format!("chat message to {to}"),
        }
    }
}

/// Ids for presence we originate (answers echo the peer's id).
fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    format!("st-{start:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Escapes text for an XML attribute value in single or double quotes.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

struct Item {
    job: Job,
    deadline: Instant,
}

/// The sending side of one host's worker. Dropping every `Outbound` ends the worker once
/// its queue is empty.
pub struct Outbound {
    host: Domain,
    tx: SyncSender<Item>,
    /// Jobs dropped at a full queue since the last log line, and when that was.
    drops: Mutex<(u64, Option<Instant>)>,
}

/// Set on shutdown: queued jobs get one last try each, no more waiting between retries.
pub type Stop = Arc<AtomicBool>;

impl Outbound {
    /// Starts the worker for `host`.
    pub fn start(host: Domain, api_url: String, token: Token, stop: Stop) -> (Outbound, JoinHandle<()>) {
        let (tx, rx) = sync_channel(QUEUE);
        let worker = Worker::new(&host, api_url, &token);
        let name = format!("api {host}");
        let handle = std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(move || worker.run(rx, stop))
            .expect("spawn the API thread");
        (Outbound { host, tx, drops: Mutex::new((0, None)) }, handle)
    }

    /// Queues `job`, to be retried until `patience` has passed.
    pub fn send(&self, job: Job, patience: Duration) {
        let item = Item { job, deadline: Instant::now() + patience };
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(i) | TrySendError::Disconnected(i)) => {
                let mut d = self.drops.lock().unwrap_or_else(|p| p.into_inner());
                d.0 += 1;
                if d.1.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
                    log::warn!(
                        "{}: {} dropped ({} since the last notice): {QUEUE} presence API calls already \
                         queued (subscription stanzas wait in the outbox, not here)",
                        self.host,
                        i.job.describe(),
                        d.0
                    );
                    *d = (0, Some(Instant::now()));
                }
            }
        }
    }
}

struct Worker {
    host: Domain,
    api_url: String,
    auth: String,
    agent: ureq::Agent,
}

enum Failure {
    /// Worth another try (unreachable, timeout, 5xx).
    Transient(String),
    /// Will not get better (4xx).
    Permanent(String),
}

impl Worker {
    fn new(host: &Domain, api_url: String, token: &Token) -> Worker {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2)))
            .timeout_global(Some(Duration::from_secs(10)))
            .max_idle_connections_per_host(2)
            .max_idle_age(Duration::from_secs(30))
            .user_agent(concat!("server-trust-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Worker { host: host.clone(), api_url, auth: format!("Bearer {}", token.expose()), agent }
    }

    fn run(self, rx: Receiver<Item>, stop: Stop) {
        for item in rx {
            self.carry_out(item, &stop);
        }
    }

    fn carry_out(&self, item: Item, stop: &AtomicBool) {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match self.call(&item.job) {
                Ok(()) => {
                    if tries > 1 {
                        log::info!("{}: {} sent after {tries} tries", self.host, item.job.describe());
                    }
                    return;
                }
                Err(Failure::Permanent(why)) => why,
                Err(Failure::Transient(why)) => {
                    let now = Instant::now();
                    if now < item.deadline && !stop.load(Ordering::Acquire) {
                        log::debug!("{}: {} failed ({why}), retrying", self.host, item.job.describe());
                        sleep_unless(stop, backoff.min(item.deadline - now));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    why
                }
            };
            log::error!("{}: {} lost after {tries} tries: {why}", self.host, item.job.describe());
            return;
        }
    }

    fn call(&self, job: &Job) -> Result<(), Failure> {
        let (command, body) = job.request(&self.host);
        let url = format!("{}/{command}", self.api_url);
        let mut resp = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth)
            .content_type("application/json")
            .send(&body)
            .map_err(|e| Failure::Transient(format!("{command}: {e}")))?;
        let status = resp.status().as_u16();
        // Read the (small) answer so the connection can be reused.
        let text = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        let text = text.trim();
        let short: String = text.chars().take(200).collect();
        match status {
            200..=299 => Ok(()),
            400..=499 => Err(Failure::Permanent(format!("{command}: HTTP {status} {short}"))),
            _ => Err(Failure::Transient(format!("{command}: HTTP {status} {short}"))),
        }
    }
}

/// Wakes the outbox lane: something new waits, or the XMPP server is back.
#[derive(Default)]
pub struct Wake {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    /// Makes the lane look at the outbox now.
    pub fn wake(&self) {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits until woken or `d` passed.
    fn wait(&self, d: Duration) {
        let flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut flag, _) =
            self.cond.wait_timeout_while(flag, d, |woken| !*woken).unwrap_or_else(|p| p.into_inner());
        *flag = false;
    }
}

/// The outbox lane of one host: see the module's doc.
pub struct OutboxLane {
    engine: Arc<Engine>,
    worker: Worker,
    wake: Arc<Wake>,
    /// Since when the API has been failing, and how many stanzas have waited for it.
    down: Option<(Instant, String)>,
}

impl OutboxLane {
    /// Starts the lane's thread; it ends when `stop` is set.
    pub fn start(
        engine: Arc<Engine>,
        api_url: String,
        token: &Token,
        stop: Stop,
    ) -> (Arc<Wake>, JoinHandle<()>) {
        let wake = Arc::new(Wake::default());
        let worker = Worker::new(engine.host(), api_url, token);
        let lane = OutboxLane { engine, worker, wake: wake.clone(), down: None };
        let name = format!("outbox {}", lane.worker.host);
        let handle = std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(move || lane.run(&stop))
            .expect("spawn the outbox thread");
        (wake, handle)
    }

    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            self.round(stop);
            let wait = self.engine.outbox_next_due().unwrap_or(LANE_TICK).min(LANE_TICK);
            self.wake.wait(wait.max(Duration::from_millis(5)));
        }
    }

    /// Sends what is due, in order; after a failure that says the API is down, the rest of
    /// the round is put back for later rather than tried against a server that is away.
    fn round(&mut self, stop: &AtomicBool) {
        let host = self.worker.host.clone();
        let mut failed: Option<String> = None;
        for a in self.engine.outbox_due() {
            let Action::Send { to, kind, id } = a else { continue };
            if failed.is_some() || stop.load(Ordering::Acquire) {
                self.engine.undelivered(&to, kind);
                continue;
            }
            let job = Job::Presence { to: to.clone(), kind, id: id.clone() };
            match self.worker.call(&job) {
                Ok(()) => {
                    if let Some((since, _)) = self.down.take() {
                        log::info!(
                            "{host}: the XMPP server's API accepts again after {:.1} s; delivering the outbox",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    log::debug!("{host}: {} accepted by the XMPP server", job.describe());
                    match self.engine.delivered(&to, kind, id.as_deref()) {
                        Ok(actions) => log_actions(&host, &actions),
                        Err(e) => log::warn!("{host}: {} delivered, not yet noted: {e}", job.describe()),
                    }
                    // Our presence follows our `subscribed` (RFC 6121 §3.1.5); one try: the
                    // peer probes us anyway.
                    if kind == PresenceKind::Subscribed && self.engine.is_trusted(to.as_str(), None) {
                        let job = Job::Presence { to: to.clone(), kind: PresenceKind::Available, id: None };
                        if let Err(Failure::Transient(why) | Failure::Permanent(why)) = self.worker.call(&job)
                        {
                            log::debug!("{host}: {} failed: {why}", job.describe());
                        }
                    }
                }
                Err(Failure::Transient(why) | Failure::Permanent(why)) => {
                    self.engine.undelivered(&to, kind);
                    let waiting: usize = self.engine.outbox().iter().map(|(_, w)| w.len()).sum();
                    if self.down.as_ref().is_none_or(|(_, w)| *w != why) {
                        log::warn!(
                            "{host}: {waiting} subscription stanza(s) wait for the XMPP server's API \
                             ({why}); retrying with backoff"
                        );
                        let since = self.down.as_ref().map_or_else(Instant::now, |d| d.0);
                        self.down = Some((since, why.clone()));
                    }
                    failed = Some(why);
                }
            }
        }
    }
}

fn log_actions(host: &Domain, actions: &[Action]) {
    for a in actions {
        match a {
            Action::Log { level, text } => {
                let level = if *level == LogLevel::Info { log::Level::Info } else { log::Level::Warn };
                log::log!(level, "{host}: {text}");
            }
            Action::TrustChanged { peer, trusted } => {
                log::info!("{host}: {peer} is {}", if *trusted { "now trusted" } else { "no longer trusted" })
            }
            _ => {}
        }
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::new(s).unwrap()
    }

    #[test]
    fn presence_stanzas_escape_the_id_and_leave_available_untyped() {
        let host = d("verona.lit");
        let job = Job::Presence {
            to: d("capulet.lit"),
            kind: PresenceKind::Subscribed,
            id: Some("a'<&>\"".into()),
        };
        let (cmd, body) = job.request(&host);
        assert_eq!(cmd, "send_stanza");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["from"], "verona.lit");
        assert_eq!(v["to"], "capulet.lit");
        assert_eq!(v["stanza"], "<presence type='subscribed' id='a&apos;&lt;&amp;&gt;&quot;'/>");
        let job = Job::Presence { to: d("capulet.lit"), kind: PresenceKind::Available, id: None };
        let v: serde_json::Value = serde_json::from_str(&job.request(&host).1).unwrap();
        let s = v["stanza"].as_str().unwrap();
        assert!(s.starts_with("<presence id='st-") && !s.contains("type="), "{s}");
    }

    #[test]
    fn messages_are_chat_with_empty_subject() {
        let job = Job::Message { to: "admin@verona.lit".into(), body: "hi <there>".into() };
        let (cmd, body) = job.request(&d("verona.lit"));
        assert_eq!(cmd, "send_message");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"chat","from":"verona.lit","to":"admin@verona.lit","subject":"","body":"hi <there>"})
        );
    }
}
