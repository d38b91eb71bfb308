//! Trust for a time (issue 15 item 3): `approve PEER --for 90d`, `renew`, a reminder before
//! the end, and the end itself, which withdraws trust exactly as a revoke does.
//!
//! The end is `expires_at` in the peer's roster entry (RFC 3339), so it survives restarts and
//! travels through the journal like any field; `reminded_at` records the one reminder per
//! expiry. Only a trusted peer carries them: losing trust in any way clears them ([`tidy`]).
//! The running server checks them at its polls, when the earliest one is due ([`Due`]): a
//! poll with nothing due stays one atomic load and one clock read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::policy::Txn;
use super::snapshot::Map;
use super::types::{Actor, LogLevel};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::store::{AuditRecord, RosterEntry, format_rfc3339};

/// Where the engine reads the time for expiries: the system's clock, or one a test moves.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system's clock (the default).
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that reads `now` (for tests: a clock they move instead of sleeping).
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A length of time as admins write it: `90d`, `12h`, `30m`, `90s`, `2w`, or several
/// (`1d12h`). `name` is the option or field it came from, for the error.
pub fn parse_duration(name: &'static str, s: &str) -> Result<Duration> {
    let bad = || Error::InvalidOption {
        name,
        reason: format!("{s:?} is not a length of time such as 90d, 12h, 30m, 90s or 2w"),
    };
    let (mut total, mut digits) = (0u64, String::new());
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || s.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Longest trust for a time: ten years (a longer one is a typo; no end is `renew --forever`).
pub const MAX_TRUST_FOR: Duration = Duration::from_secs(3650 * 86_400);

/// How long trust is given for, from a C or Lua caller's seconds or an admin's text: 1 s to
/// ten years.
pub fn trust_for(d: Duration) -> Result<Duration> {
    if d.is_zero() || d > MAX_TRUST_FOR {
        return Err(Error::InvalidOption {
            name: "for",
            reason: format!("{} is not between 1 second and 3650 days", humantime::format_duration(d)),
        });
    }
    Ok(d)
}

/// When a trust for a time ends, or ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Until {
    /// `d` from now.
    For(Duration),
    /// At this time (RFC 3339); one already past ends it at the server's next poll.
    At(String),
    /// Never: trust with no end.
    Forever,
}

impl Until {
    /// An RFC 3339 time (UTC), as `renew --until` takes it.
    pub fn at(s: &str) -> Result<Until> {
        humantime::parse_rfc3339_weak(s.trim()).map_err(|_| Error::InvalidOption {
            name: "until",
            reason: format!("{s:?} is not an RFC 3339 time in UTC such as 2027-03-08T12:00:00Z"),
        })?;
        Ok(Until::At(format_rfc3339(humantime::parse_rfc3339_weak(s.trim()).expect("checked"))))
    }

    /// What admins type in a shell, a form or a request body: `forever` (or `never`), a
    /// length of time (`90d`), or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<Until> {
        match s.trim() {
            "forever" | "never" => Ok(Until::Forever),
            t => match parse_duration("for", t) {
                Ok(d) => Ok(Until::For(trust_for(d)?)),
                Err(_) => Until::at(t).map_err(|_| Error::InvalidOption {
                    name: "until",
                    reason: format!(
                        "{t:?} is neither a length of time (90d), a time (2027-03-08T12:00:00Z) nor forever"
                    ),
                }),
            },
        }
    }

    /// The `expires_at` this sets, at `now`.
    fn expires_at(&self, now: SystemTime) -> Option<String> {
        match self {
            Until::For(d) => Some(format_rfc3339(now + *d)),
            Until::At(t) => Some(t.clone()),
            Until::Forever => None,
        }
    }
}

/// The `expiry_reminder_days` option: whole days, 0 (no reminder) to 365.
pub fn reminder_days(n: f64) -> Result<Duration> {
    let days = super::types::Config::whole_number("expiry_reminder_days", n, 0, 365)?;
    Ok(Duration::from_secs(days as u64 * 86_400))
}

fn parse(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t).ok()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1))
}

/// When the next reminder or end is due, as seconds since the epoch (0: none). Kept low
/// enough: every change that sets an end lowers it, and the check that it triggers sets it
/// to the next one exactly.
#[derive(Default)]
pub(super) struct Due(AtomicU64);

impl Due {
    /// Something is due at `now` (one atomic load, and a clock read only when an end is set).
    pub(super) fn at(&self, clock: &Clock) -> bool {
        let due = self.0.load(Ordering::Acquire);
        due != 0 && secs(clock.now()) >= due
    }

    /// Check at the next poll (the roster was read whole: at start, or after an edit).
    pub(super) fn now(&self) {
        self.0.store(1, Ordering::Release);
    }

    /// Entries were changed: an end among them may come before the one known.
    pub(super) fn note<'a>(&self, entries: impl Iterator<Item = &'a RosterEntry>, reminder: Duration) {
        for e in entries {
            if let Some(t) = next_event(e, reminder).map(secs) {
                let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |due| {
                    (due == 0 || t < due).then_some(t)
                });
            }
        }
    }

    fn set(&self, next: Option<SystemTime>) {
        self.0.store(next.map_or(0, secs), Ordering::Release);
    }
}

/// The next time `e` needs a look: its reminder, unless sent, else its end.
fn next_event(e: &RosterEntry, reminder: Duration) -> Option<SystemTime> {
    let end = parse(e.expires_at.as_deref()?)?;
    if e.reminded_at.is_some() || reminder.is_zero() {
        return Some(end);
    }
    Some(end.checked_sub(reminder).unwrap_or(UNIX_EPOCH))
}

/// An entry not trusted carries no end: trust lost in any way (revoke, the peer's
/// `unsubscribe`, an end) takes it along, so trust given again later has no end unless the
/// admin gives one.
pub(super) fn tidy(working: &mut Map<Option<RosterEntry>>) {
    for e in working.values_mut() {
        if let Some(entry) = e.as_mut()
            && !entry.state.from()
            && (entry.expires_at.is_some() || entry.reminded_at.is_some())
        {
            entry.expires_at = None;
            entry.reminded_at = None;
            if entry.is_empty() {
                *e = None;
            }
        }
    }
}

impl Txn<'_> {
    /// Sets when `peer`'s trust ends, as an approval for a time or a renewal does. The peer
    /// must be trusted. A trust for less than the reminder's lead time needs no reminder:
    /// the admin who gave it knows.
    pub(super) fn set_end(&mut self, peer: &Domain, until: &Until, event: &str) -> Result<()> {
        let e = self.current(peer);
        if !e.state.from() {
            return Err(Error::InvalidOption {
                name: "peer",
                reason: format!("{peer} is not trusted: only a buddy's trust can be given an end"),
            });
        }
        let now = self.engine.config.clock.now();
        let end = until.expires_at(now);
        let reminder = self.engine.config.expiry_reminder;
        let soon = matches!(until, Until::For(d) if *d <= reminder);
        let reminded = soon.then(|| format_rfc3339(now));
        let text = match &end {
            Some(t) => format!("{event}: trusted until {t}"),
            None => format!("{event}: trusted with no end"),
        };
        self.audit(peer, &text, Some(e.state), None);
        self.update(peer, |e| {
            e.expires_at = end;
            e.reminded_at = reminded;
        });
        Ok(())
    }

    /// After an approval recorded in a pending file: its `trust_for`, if any (checked when
    /// the file was read).
    pub(super) fn end_from_file(&mut self, peer: &Domain, trust_for: Option<&str>) {
        let Some(d) = trust_for.and_then(|t| parse_duration("trust_for", t).ok()) else { return };
        if self.current(peer).state.from()
            && let Err(e) = self.set_end(peer, &Until::For(d), "approve for a time")
        {
            self.log(LogLevel::Error, format!("limiting the trust in {peer}: {e}"));
        }
    }

    /// The admin sets when `peer`'s trust ends (`renew PEER --for 90d`).
    pub(super) fn on_renew(&mut self, peer: &Domain, until: &Until) -> Result<()> {
        self.set_end(peer, until, "renew")
    }

    /// Reminds the admins of ends that near and withdraws trust whose end came, as a revoke
    /// does (same stanzas, same trust event), audited by the engine. Runs at a poll when
    /// [`Due`] says something is due; looks at every entry with an end (O(roster), once per
    /// reminder or end) and sets the next time to look.
    pub(super) fn check_ends(&mut self) {
        let engine = self.engine;
        let now = engine.config.clock.now();
        let reminder = engine.config.expiry_reminder;
        let with_end: Vec<Domain> = engine
            .view
            .load()
            .iter()
            .filter(|(_, e)| e.expires_at.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        let mut next: Option<SystemTime> = None;
        for peer in with_end {
            let e = self.current(&peer);
            let (Some(t), Some(end)) = (e.expires_at.clone(), e.expires_at.as_deref().and_then(parse)) else {
                continue;
            };
            if !e.state.from() {
                continue; // not trusted (a hand edit): nothing to end; `tidy` clears it with the next change
            }
            if now >= end {
                self.end_trust(&peer, &t);
                continue;
            }
            if e.reminded_at.is_none() && !reminder.is_zero() && now + reminder >= end {
                self.remind(&peer, &t, end.duration_since(now).unwrap_or_default());
                self.update(&peer, |e| e.reminded_at = Some(format_rfc3339(now)));
            }
            let at = next_event(&self.current(&peer), reminder);
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        engine.expiry.set(next);
    }

    fn remind(&mut self, peer: &Domain, end: &str, left: Duration) {
        let left = humantime::format_duration(Duration::from_secs(left.as_secs() / 3600 * 3600));
        let renew = self.engine.store.command("renew", peer);
        let text = format!(
            "Trust in server buddy {} on {} ends at {end} (in {left}). Renew: {renew} --for 90d \
             (or let it end: trust is then withdrawn as by a revoke)",
            peer.display_name(),
            self.engine.host,
        );
        self.audit_as_engine(peer, &format!("expiry reminder: trust ends at {end}"));
        self.notify(peer, text);
    }

    fn end_trust(&mut self, peer: &Domain, end: &str) {
        self.audit_as_engine(peer, &format!("trust expired (trusted until {end}): withdrawn as by a revoke"));
        self.actor = Actor::Engine;
        if let Err(e) = self.on_revoke(peer) {
            self.log(LogLevel::Error, format!("ending the trust in {peer}: {e}"));
            return;
        }
        let text = format!(
            "Trust in server buddy {} on {} expired at {end}: withdrawn (unsubscribed and unsubscribe sent). \
             To trust it again: {}",
            peer.display_name(),
            self.engine.host,
            self.engine.store.command("request", peer),
        );
        self.notify(peer, text);
    }

    fn audit_as_engine(&mut self, peer: &Domain, event: &str) {
        let state = self.current(peer).state;
        let rec = AuditRecord::now(peer.as_str(), Actor::Engine, event, Some(state), None);
        if let Err(e) = self.engine.store.audit(&rec) {
            self.log(LogLevel::Error, format!("audit log: {e}"));
        }
    }
}
