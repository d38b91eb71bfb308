//! The engine's public vocabulary: settings, presence kinds, actions and actors.
//!
//! Every enum here derives serde with lowercase names; [`crate::vocab`] reads those names,
//! so the Lua bridge, the C ABI, the audit log and the HTTP JSON share one spelling.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::subscription::SubscriptionType;
use crate::vocab;

/// Engine settings; drivers map their own option names onto these.
#[derive(Clone, Debug)]
pub struct Config {
    /// After approving a peer, also ask it back (XEP-0267 SHOULD). Default on.
    pub reciprocate: bool,
    /// `request PEER` also pre-approves PEER's reciprocal `subscribe` (RFC 6121 §3.4). Default on.
    pub preapprove_on_request: bool,
    /// Pending requests kept at most; more are dropped with a log line. Default 1000.
    pub max_pending: usize,
    /// Pending requests kept at most from one registrable domain (`*.attacker.example`), so a
    /// wildcard domain cannot fill the queue. Default 10.
    pub max_pending_per_site: usize,
    /// New requests recorded per minute from one registrable domain (a token bucket that
    /// holds a minute's worth), so one site cannot fill `max_pending` quickly either, even
    /// with a large `max_pending_per_site` or as its requests are denied or expire. Default 20.
    pub site_requests_per_minute: usize,
    /// Pending requests nobody decided expire after this long (from `first_seen`): the file
    /// is removed, no stanza is sent, the change is audited. Default 30 days.
    pub pending_max_age: Duration,
    /// New-request prompts sent one by one per minute; more are summed up in one digest
    /// prompt. Default 5.
    pub notify_burst: usize,
    /// Repeated `subscribe` from a pending peer updates its file at most this often. Default 60 s.
    pub repeat_window: Duration,
    /// Watch the store with inotify so [`crate::Engine::poll`] costs nothing when nothing changed.
    pub watch: bool,
    /// How long a call may wait for the store lock held by another process. Zero (the
    /// default, for servers' event loops) never waits: inbound stanzas are deferred to the
    /// next poll, admin acts fail with `Error::Busy`. Admin tools wait longer.
    pub lock_wait: Duration,
    /// Who may exchange stanzas with the host over s2s. Default [`Federation::Open`].
    pub federation: Federation,
    /// The driver offers the XEP-0050 commands (*Pending server buddies*): prompts name them
    /// first, so an admin in a chat client decides there. Default off.
    pub adhoc: bool,
}

/// Who may exchange stanzas with the host over s2s (the `federation` option): the server
/// roster put to work as the host's federation list. Drivers ask
/// [`crate::Engine::federates_with`] for each stanza and refuse what it refuses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Federation {
    /// Every server, as XMPP does by default.
    #[default]
    Open,
    /// Only the peers we approved (trusted: `from`, `from+pending-out`, `both`), and of those
    /// only the ones in `group` when it is set (e.g. `federate`). Presence between the two
    /// host JIDs always passes: the XEP-0267 handshake, so a stranger can still ask to become
    /// a buddy, and probes, which the engine answers with presence only for approved peers.
    Buddies {
        /// The group a buddy must be in, if any.
        group: Option<String>,
    },
}

impl Federation {
    /// Whether a stanza between the two host JIDs (`name`, its `type`, the namespace of its
    /// first child) passes in buddies mode without trust: presence (the XEP-0267 handshake
    /// and probes), and the evidence queries ([`crate::evidence::QUERIES`]) with their
    /// replies, both ways, so each side can learn about the other before deciding.
    pub fn host_stanza(name: &str, ty: Option<&str>, ns: Option<&str>) -> bool {
        match (name, ty) {
            ("presence", _) => true,
            ("iq", Some("result" | "error")) => true,
            ("iq", Some("get")) => ns.is_some_and(|n| crate::evidence::QUERIES.contains(&n)),
            _ => false,
        }
    }

    /// The `federation` option (`"open"` or `"buddies"`) and the `federation_group` option.
    /// A group without `"buddies"` is refused rather than ignored: it says the admin meant
    /// to restrict federation.
    pub fn from_options(mode: Option<&str>, group: Option<&str>) -> Result<Federation> {
        let group = match group.map(str::trim) {
            None => None,
            Some(g) if !g.is_empty() && g.len() <= 64 && !g.contains(',') => Some(g.to_string()),
            Some(g) => {
                return Err(Error::InvalidOption {
                    name: "federation_group",
                    reason: format!("{g:?} is not a group name (1 to 64 characters, no comma)"),
                });
            }
        };
        match (mode, group) {
            (None | Some("open"), None) => Ok(Federation::Open),
            (Some("buddies"), group) => Ok(Federation::Buddies { group }),
            (None | Some("open"), Some(g)) => Err(Error::InvalidOption {
                name: "federation_group",
                reason: format!("group {g:?} is set but federation is open: set federation = \"buddies\""),
            }),
            (Some(other), _) => Err(Error::InvalidOption {
                name: "federation",
                reason: format!("{other:?} is neither \"open\" nor \"buddies\""),
            }),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reciprocate: true,
            preapprove_on_request: true,
            max_pending: 1000,
            max_pending_per_site: 10,
            site_requests_per_minute: 20,
            pending_max_age: Duration::from_secs(30 * 86_400),
            notify_burst: 5,
            repeat_window: Duration::from_secs(60),
            watch: true,
            lock_wait: Duration::ZERO,
            federation: Federation::Open,
            adhoc: false,
        }
    }
}

impl Config {
    /// The `repeat_window` option from seconds, refusing what is not a finite, non-negative
    /// number of at most a day (drivers get option values from admins' config files).
    pub fn repeat_window_secs(secs: f64) -> Result<Duration> {
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(Error::InvalidOption {
                name: "repeat_window",
                reason: format!("{secs} is not a number of seconds between 0 and 86400"),
            });
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// The `max_pending` option, refusing negative, fractional or absurd values.
    pub fn max_pending_from(n: f64) -> Result<usize> {
        Self::whole_number("max_pending", n, 1, 1_000_000)
    }

    /// The `pending_expiry_days` option: whole days, 1 to 3650.
    pub fn pending_expiry_days(n: f64) -> Result<Duration> {
        Ok(Duration::from_secs(Self::whole_number("pending_expiry_days", n, 1, 3650)? as u64 * 86_400))
    }

    /// The `site_requests_per_minute` option: 1 to 1000000.
    pub fn site_requests_per_minute_from(n: f64) -> Result<usize> {
        Self::whole_number("site_requests_per_minute", n, 1, 1_000_000)
    }

    /// A count option `name` from a config file's number: a whole number in `min..=max`.
    pub fn whole_number(name: &'static str, n: f64, min: usize, max: usize) -> Result<usize> {
        if n.fract() != 0.0 || !(min as f64..=max as f64).contains(&n) {
            return Err(Error::InvalidOption {
                name,
                reason: format!("{n} is not a whole number between {min} and {max}"),
            });
        }
        Ok(n as usize)
    }
}

/// Presence types a driver can hand to [`crate::Engine::inbound`] or be asked to send.
///
/// The discriminants are the C ABI's `ST_PRESENCE_TYPE_*` values (checked at compile time
/// in `ffi`); the first four match [`SubscriptionType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum PresenceKind {
    /// `subscribe`
    Subscribe = 0,
    /// `subscribed`
    Subscribed = 1,
    /// `unsubscribe`
    Unsubscribe = 2,
    /// `unsubscribed`
    Unsubscribed = 3,
    /// `probe`
    Probe = 4,
    /// available presence (no `type` attribute on the wire)
    Available = 5,
    /// `unavailable`
    Unavailable = 6,
}

impl PresenceKind {
    /// Every kind, in discriminant order.
    pub const ALL: [PresenceKind; 7] = [
        Self::Subscribe,
        Self::Subscribed,
        Self::Unsubscribe,
        Self::Unsubscribed,
        Self::Probe,
        Self::Available,
        Self::Unavailable,
    ];

    /// The wire name (`available` has no `type` attribute in XML).
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }

    /// The kind with C discriminant `n`.
    pub fn from_index(n: u32) -> Option<PresenceKind> {
        Self::ALL.get(n as usize).copied()
    }

    pub(crate) fn subscription(self) -> Option<SubscriptionType> {
        SubscriptionType::from_index(self as u32)
    }
}

impl From<SubscriptionType> for PresenceKind {
    fn from(t: SubscriptionType) -> Self {
        Self::ALL[t as usize]
    }
}

impl FromStr for PresenceKind {
    type Err = Error;
    /// Accepts the `type` attribute; an empty string (no attribute) means available.
    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() { Ok(Self::Available) } else { vocab::parse("presence type", s) }
    }
}

/// Severity of an [`Action::Log`] line; the names are Prosody's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum LogLevel {
    /// Routine.
    Info = 0,
    /// Needs an admin's eye.
    Warn = 1,
    /// Something is broken (e.g. a corrupt store file).
    Error = 2,
}

impl LogLevel {
    /// `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }
}

/// Something the driver must do. On the wire (JSON, Lua tables) an action is an object
/// tagged by `kind`: `{"kind":"send","peer":…,"type":"subscribed","id":…}`,
/// `{"kind":"notify","peer":…,"text":…}`, `{"kind":"trust","peer":…,"trusted":true}`,
/// `{"kind":"log","level":"warn","text":…}`, `{"kind":"query","peer":…,"ns":…}`. Drivers
/// ignore kinds they do not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    /// Send `<presence from=HOST to=PEER type=KIND id=ID/>`.
    Send {
        /// Recipient server.
        #[serde(rename = "peer")]
        to: Domain,
        /// Presence type.
        #[serde(rename = "type")]
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
    #[serde(rename = "trust")]
    TrustChanged {
        /// The peer concerned.
        peer: Domain,
        /// New value.
        trusted: bool,
    },
    /// Send `<iq type='get' from=HOST to=PEER><query xmlns=NS/></iq>` and hand the reply to
    /// [`crate::Engine::answer`], or `None` when none came within
    /// [`crate::evidence::ANSWER_TIMEOUT`]: evidence for the admin about a new requester.
    Query {
        /// The requester.
        peer: Domain,
        /// The query's namespace, one of [`crate::evidence::QUERIES`].
        ns: String,
    },
    /// A line for the server log.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        text: String,
    },
}

/// Who caused a change; recorded in the audit log and the roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// ejabberd's `ejabberdctl` (the module's `server_trust_*` commands, via the sidecar).
    Ejabberdctl,
    /// ejabberd's `mod_http_api` (the same commands over HTTP, via the sidecar).
    #[serde(rename = "http-api")]
    HttpApi,
    /// ejabberd's WebAdmin page (via the sidecar).
    Webadmin,
}

impl Actor {
    /// The actors a caller of the sidecar's admin API may name for its act (the
    /// `X-Server-Trust-Actor` header): ejabberd's ways to decide, never `cli`, `peer`, `file`
    /// or `engine`, which an admin-token holder must not be able to claim.
    pub fn admin_api_driver(name: &str) -> Option<Actor> {
        match name.parse() {
            Ok(a @ (Actor::Api | Actor::Ejabberdctl | Actor::HttpApi | Actor::Webadmin | Actor::Adhoc)) => {
                Some(a)
            }
            _ => None,
        }
    }
}

impl Actor {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }
}

impl FromStr for Actor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        vocab::parse("actor", s)
    }
}

/// Outcomes counted since the engine opened, for drivers' metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Inbound requests recorded for an admin (pending files written).
    pub requests: u64,
    /// Peers approved (by an admin, or by pre-approval).
    pub approvals: u64,
    /// Requests denied.
    pub denials: u64,
    /// Revocations carried out.
    pub revocations: u64,
    /// Inbound requests dropped at the pending caps (`max_pending`, `max_pending_per_site`,
    /// `site_requests_per_minute`).
    pub cap_drops: u64,
    /// Pending requests that expired unanswered (`pending_max_age`).
    pub expired: u64,
}

/// What the engine knows of a peer's own presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPresence {
    /// Last presence was available.
    pub available: bool,
    /// When the last presence arrived.
    pub last_seen: SystemTime,
    /// When its availability last changed (for an unavailable peer: when it was last seen
    /// available, or when our server stopped).
    pub since: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_one_vocabulary() {
        for k in PresenceKind::ALL {
            assert_eq!(k.as_str().parse::<PresenceKind>().unwrap(), k);
            assert_eq!(PresenceKind::from_index(k as u32), Some(k));
        }
        assert_eq!("".parse::<PresenceKind>().unwrap(), PresenceKind::Available);
        assert!(matches!("error".parse::<PresenceKind>(), Err(Error::UnknownName { .. })));
        assert_eq!("adhoc".parse::<Actor>().unwrap(), Actor::Adhoc);
        assert_eq!(Actor::Engine.as_str(), "engine");
        assert_eq!(LogLevel::Warn.as_str(), "warn");
        let a = Action::Send {
            to: Domain::new("capulet.lit").unwrap(),
            kind: PresenceKind::Subscribed,
            id: Some("x1".into()),
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"kind":"send","peer":"capulet.lit","type":"subscribed","id":"x1"}"#);
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        let t = Action::TrustChanged { peer: Domain::new("capulet.lit").unwrap(), trusted: true };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"kind":"trust","peer":"capulet.lit","trusted":true}"#
        );
    }

    #[test]
    fn options_refuse_values_that_would_fail_open() {
        assert!(Config::repeat_window_secs(f64::INFINITY).is_err());
        assert!(Config::repeat_window_secs(f64::NAN).is_err());
        assert!(Config::repeat_window_secs(-1.0).is_err());
        assert_eq!(Config::repeat_window_secs(1.5).unwrap(), Duration::from_millis(1500));
        assert!(Config::max_pending_from(-1.0).is_err());
        assert!(Config::max_pending_from(2.5).is_err());
        assert_eq!(Config::max_pending_from(10.0).unwrap(), 10);
    }
}
