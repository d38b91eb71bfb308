//! Who may hold a connection, and who is slowed down.
//!
//! **Connections.** A connection starts *unauthenticated*, in a pool of its own
//! ([`Limits::unauthenticated`] at most, [`Limits::per_source`] from one source address). It
//! moves to the *authenticated* budget ([`Limits::authenticated`]) on its first request that
//! carries the hook or the admin token; only there may it be kept alive or hold a long-poll.
//! Until then it must send a request within [`Limits::first_request`], and whatever it is
//! answered (health, 401, 403, 404, ...) closes it. Unauthenticated connections can therefore
//! never take a place in the authenticated budget. They cannot keep new clients out either:
//! when their pool (or their source's share of it) is full, a newcomer takes the place of the
//! oldest unauthenticated connection that has had [`Limits::min_age`] to speak (else of the
//! oldest: a burst of newcomers must not lock out the next one). A displaced connection is
//! closed at its next turn unless the request read in that turn carries a valid token, so
//! only connections with nothing to show are closed. The XMPP server opens a fresh
//! connection for each call and sends its request at once, so it is never one of them.
//!
//! **Failed authentications** (a bearer token that is neither token) are counted per source
//! (IPv4 address, IPv6 /64) in a table of at most [`MAX_SOURCES`]. After
//! [`Limits::free_failures`] a source is slowed: its wrong tokens are answered
//! `429 Too Many Requests` with `Retry-After`, late, and the wait doubles with each further
//! failure up to [`MAX_PENALTY`]. A slowed source that is not loopback is refused without its
//! token being looked at. A loopback source is the XMPP server's own address, shared with
//! every local user: refusing it would let any local user turn the hook off with one wrong
//! token a minute, so a *valid* token from there is still served. What stops guessing is the
//! tokens' 128 bits or more (see `config.rs`); the per-source count makes guessing visible and
//! slow for whoever waits for the answers.
//!
//! **Log.** None of this writes a line per event: the first event after a quiet interval is
//! logged at once, then one summary with counts per [`Limits::report_every`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Sources whose failures are remembered at once; the least recent is forgotten first.
pub const MAX_SOURCES: usize = 4096;
/// Longest wait imposed on a slowed source.
pub const MAX_PENALTY: Duration = Duration::from_secs(60);
/// A source's failures are forgotten this long after its last one.
const FORGET: Duration = Duration::from_secs(15 * 60);
/// Sources named in a summary line.
const NAMED: usize = 4;

/// The budgets and delays (the defaults are the service's).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections that have not yet presented a valid token.
    pub unauthenticated: usize,
    /// Of those, from one source.
    pub per_source: usize,
    /// Connections that have presented a valid token.
    pub authenticated: usize,
    /// Time an unauthenticated connection has to send a request with a valid token.
    pub first_request: Duration,
    /// An unauthenticated connection younger than this is displaced only if none is older.
    pub min_age: Duration,
    /// Wrong tokens a source may present before it is slowed.
    pub free_failures: u32,
    /// How late a slowed source's wrong token is answered.
    pub slow_answer: Duration,
    /// At most one log line per this interval (counts in between are summed up).
    pub report_every: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            unauthenticated: 512,
            per_source: 128,
            authenticated: 256,
            first_request: Duration::from_secs(5),
            min_age: Duration::from_millis(100),
            free_failures: 5,
            slow_answer: Duration::from_secs(1),
            report_every: Duration::from_secs(60),
        }
    }
}

/// The key of a source: an IPv4 address, or an IPv6 /64 (one host usually has a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(s))
            }
        },
        IpAddr::V4(_) => ip,
    }
}

/// The connection guard of one listener.
pub struct Guard {
    limits: Limits,
    /// Named in log lines, so two listeners' lines can be told apart.
    listen: String,
    state: Mutex<State>,
}

struct Waiting {
    source: IpAddr,
    since: Instant,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    promoted: AtomicBool,
    evicted: AtomicBool,
    wake: Notify,
}

struct Failures {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

/// What happened since the last log line.
#[derive(Default)]
struct Tally {
    displaced: u64,
    refused: u64,
    timed_out: u64,
    full: u64,
    accept_errors: u64,
    failures: u64,
    slowed: u64,
    by_source: HashMap<IpAddr, u64>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        self.displaced + self.refused + self.timed_out + self.full + self.accept_errors + self.failures == 0
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Unauthenticated connections, oldest first.
    waiting: BTreeMap<u64, Waiting>,
    per_source: HashMap<IpAddr, usize>,
    authenticated: usize,
    failures: HashMap<IpAddr, Failures>,
    tally: Tally,
    last_report: Option<Instant>,
}

impl State {
    /// Removes the oldest unauthenticated connection that matches `pick` and has had
    /// `min_age` to speak, else the oldest that matches; false when none matches.
    fn displace(&mut self, pick: impl Fn(&Waiting) -> bool, now: Instant, min_age: Duration) -> bool {
        let mut matching = self.waiting.iter().filter(|(_, w)| pick(w));
        let Some((&oldest, _)) = matching.next() else { return false };
        let victim = std::iter::once((&oldest, &self.waiting[&oldest]))
            .chain(matching)
            .find(|(_, w)| now - w.since >= min_age)
            .map_or(oldest, |(id, _)| *id);
        let Some(w) = self.waiting.remove(&victim) else { return false };
        self.forget_waiting(w.source);
        w.shared.evicted.store(true, Ordering::Release);
        w.shared.wake.notify_one();
        self.tally.displaced += 1;
        true
    }

    fn forget_waiting(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    fn penalty(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.failures.get(&source)?.until?;
        (until > now).then(|| until - now)
    }
}

/// One accepted connection; releases its place when dropped.
pub struct Conn {
    guard: Arc<Guard>,
    id: u64,
    source: IpAddr,
    loopback: bool,
    shared: Arc<Shared>,
}

/// The answer to a wrong token.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// `403`: the source has failures to spare.
    Refused,
    /// `429` with this `Retry-After`, answered late.
    Slowed(Duration),
}

impl Guard {
    pub fn new(limits: Limits, listen: SocketAddr) -> Arc<Guard> {
        Arc::new(Guard { limits, listen: listen.to_string(), state: Mutex::default() })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `peer` into the unauthenticated pool, displacing the oldest
    /// one that had its chance if the pool (or the source's share) is full; None: refused.
    pub fn admit(self: &Arc<Guard>, peer: SocketAddr) -> Option<Arc<Conn>> {
        let now = Instant::now();
        let source = source_of(peer.ip());
        let min_age = self.limits.min_age;
        let mut st = self.lock();
        let from_source = st.per_source.get(&source).copied().unwrap_or(0);
        let room = (from_source < self.limits.per_source
            || st.displace(|w| w.source == source, now, min_age))
            && (st.waiting.len() < self.limits.unauthenticated || st.displace(|_| true, now, min_age));
        if !room {
            st.tally.refused += 1;
            drop(st);
            self.report(false);
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        let shared = Arc::new(Shared::default());
        st.waiting.insert(id, Waiting { source, since: now, shared: shared.clone() });
        *st.per_source.entry(source).or_default() += 1;
        let displaced = st.tally.displaced > 0;
        drop(st);
        if displaced {
            self.report(false);
        }
        Some(Arc::new(Conn { guard: self.clone(), id, source, loopback: peer.ip().is_loopback(), shared }))
    }

    /// An `accept` that failed (e.g. out of file descriptors).
    pub fn accept_failed(&self, e: &std::io::Error) {
        self.lock().tally.accept_errors += 1;
        log::debug!("accept: {e}");
        self.report(false);
    }

    /// Logs what happened since the last line: at once if the last line is older than the
    /// interval, else only when `due` (the periodic flush) and the interval has passed.
    pub fn report(&self, due: bool) {
        let now = Instant::now();
        let mut st = self.lock();
        if st.tally.is_empty() {
            return;
        }
        let quiet = st.last_report.is_none_or(|t| now - t >= self.limits.report_every);
        if !quiet {
            return;
        }
        let first = !due;
        let t = std::mem::take(&mut st.tally);
        st.last_report = Some(now);
        let (waiting, authenticated) = (st.waiting.len(), st.authenticated);
        drop(st);
        log::warn!("{}", self.summary(&t, first, waiting, authenticated));
    }

    fn summary(&self, t: &Tally, first: bool, waiting: usize, authenticated: usize) -> String {
        let mut parts = Vec::new();
        if t.failures > 0 {
            let mut by: Vec<(&IpAddr, &u64)> = t.by_source.iter().collect();
            by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let named: Vec<String> = by.iter().take(NAMED).map(|(ip, n)| format!("{ip} x{n}")).collect();
            let more = if by.len() > NAMED { format!(", {} more", by.len() - NAMED) } else { String::new() };
            let mut s = format!(
                "{} failed authentication(s) (a token that is neither the hook nor the admin token) from {} source(s) ({}{more})",
                t.failures,
                by.len(),
                named.join(", ")
            );
            if t.slowed > 0 {
                let _ = write!(s, ", {} answered 429", t.slowed);
            }
            parts.push(s);
        }
        if t.displaced > 0 {
            parts.push(format!(
                "{} unauthenticated connection(s) closed to make room for new ones",
                t.displaced
            ));
        }
        if t.timed_out > 0 {
            parts
                .push(format!("{} closed without a request in {:?}", t.timed_out, self.limits.first_request));
        }
        if t.refused > 0 {
            parts.push(format!(
                "{} new connection(s) refused (unauthenticated pool full of newcomers)",
                t.refused
            ));
        }
        if t.full > 0 {
            parts.push(format!(
                "{} authenticated request(s) answered 503 ({} authenticated connections open)",
                t.full, self.limits.authenticated
            ));
        }
        if t.accept_errors > 0 {
            parts.push(format!("{} accept error(s) (out of file descriptors?)", t.accept_errors));
        }
        let when = if first {
            format!("(further events are summed up every {:?})", self.limits.report_every)
        } else {
            format!("in the last {:?}", self.limits.report_every)
        };
        format!(
            "connection guard on {}: {} {when}; now {waiting} unauthenticated and {authenticated} authenticated connection(s)",
            self.listen,
            parts.join("; ")
        )
    }

    /// Logs what is left to tell, whatever the interval (at the service's stop).
    pub fn report_now(&self) {
        let mut st = self.lock();
        if st.tally.is_empty() {
            return;
        }
        let t = std::mem::take(&mut st.tally);
        st.last_report = Some(Instant::now());
        let (waiting, authenticated) = (st.waiting.len(), st.authenticated);
        drop(st);
        log::warn!("{}", self.summary(&t, false, waiting, authenticated));
    }

    /// `Some(retry_after)` when `source` is slowed now.
    pub fn penalty(&self, source: IpAddr) -> Option<Duration> {
        self.lock().penalty(source, Instant::now())
    }

    /// Counts a wrong token from `source`; says how to answer it.
    pub fn failed(&self, source: IpAddr) -> Failed {
        let now = Instant::now();
        let mut st = self.lock();
        if !st.failures.contains_key(&source) && st.failures.len() >= MAX_SOURCES {
            // Forget the source whose last failure is oldest (an expired one if any).
            if let Some(old) = st.failures.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip) {
                st.failures.remove(&old);
            }
        }
        let f = st.failures.entry(source).or_insert(Failures { count: 0, last: now, until: None });
        if now - f.last > FORGET {
            *f = Failures { count: 0, last: now, until: None };
        }
        f.count += 1;
        f.last = now;
        let answer = match f.count.checked_sub(self.limits.free_failures + 1) {
            None => Failed::Refused,
            Some(over) => {
                let wait = Duration::from_secs(1u64 << over.min(6)).min(MAX_PENALTY);
                f.until = Some(now + wait);
                Failed::Slowed(wait)
            }
        };
        st.tally.failures += 1;
        if matches!(answer, Failed::Slowed(_)) {
            st.tally.slowed += 1;
        }
        if st.tally.by_source.len() < MAX_SOURCES || st.tally.by_source.contains_key(&source) {
            *st.tally.by_source.entry(source).or_default() += 1;
        }
        drop(st);
        self.report(false);
        answer
    }

    /// A request from a slowed, non-loopback source, refused unchecked.
    pub fn refused_unchecked(&self) {
        let mut st = self.lock();
        st.tally.slowed += 1;
    }

    /// Runs the periodic summary until dropped.
    pub async fn report_loop(self: Arc<Guard>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.limits.report_every));
        loop {
            tick.tick().await;
            self.report(true);
        }
    }
}

impl Conn {
    /// The key of its source address.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// True for a connection from a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }

    /// True once it presented a valid token.
    pub fn is_authenticated(&self) -> bool {
        self.shared.promoted.load(Ordering::Acquire)
    }

    /// Moves it to the authenticated budget; false when that is full.
    pub fn authenticate(&self) -> bool {
        if self.is_authenticated() {
            return true;
        }
        let mut st = self.guard.lock();
        if st.authenticated >= self.guard.limits.authenticated {
            st.tally.full += 1;
            drop(st);
            self.guard.report(false);
            return false;
        }
        match st.waiting.remove(&self.id) {
            Some(w) => st.forget_waiting(w.source),
            // Displaced moments ago, but its request (read in the same poll that would have
            // closed it) carries a valid token: it stays.
            None => self.shared.evicted.store(false, Ordering::Release),
        }
        st.authenticated += 1;
        self.shared.promoted.store(true, Ordering::Release);
        true
    }

    /// Resolves when it was displaced by a newcomer (and has not shown a valid token since:
    /// poll the connection first).
    pub async fn displaced(&self) {
        while !self.shared.evicted.load(Ordering::Acquire) {
            self.shared.wake.notified().await;
        }
    }

    /// It sent no valid token in time: counted (the caller closes it).
    pub fn timed_out(&self) {
        self.guard.lock().tally.timed_out += 1;
        self.guard.report(false);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut st = self.guard.lock();
        if self.is_authenticated() {
            st.authenticated -= 1;
        } else if let Some(w) = st.waiting.remove(&self.id) {
            st.forget_waiting(w.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn limits(unauth: usize, per_source: usize, auth: usize) -> Limits {
        Limits {
            unauthenticated: unauth,
            per_source,
            authenticated: auth,
            min_age: Duration::ZERO,
            ..Limits::default()
        }
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of("192.0.2.7".parse().unwrap()), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            source_of("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(source_of("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert!(source_of("::1".parse().unwrap()).is_loopback());
    }

    #[test]
    fn unauthenticated_connections_take_each_others_places_never_the_authenticated_ones() {
        let g = Guard::new(limits(4, 3, 2), addr("127.0.0.1:1"));
        let a = g.admit(addr("127.0.0.1:1000")).unwrap();
        assert!(a.authenticate());
        let b = g.admit(addr("127.0.0.1:1001")).unwrap();
        assert!(b.authenticate());
        // The authenticated budget is full: a third valid token is answered 503.
        let c = g.admit(addr("127.0.0.1:1002")).unwrap();
        assert!(!c.authenticate());
        drop(c);
        // Strangers: the source's share (3) is full at the fourth; each newcomer displaces the
        // oldest stranger, and both authenticated connections stay.
        let s: Vec<_> = (0..10).map(|i| g.admit(addr(&format!("127.0.0.1:{}", 2000 + i))).unwrap()).collect();
        let displaced = s.iter().filter(|c| c.shared.evicted.load(Ordering::Acquire)).count();
        assert_eq!(displaced, 7);
        assert!(a.is_authenticated() && b.is_authenticated());
        assert_eq!(g.lock().waiting.len(), 3);
        // Another source gets the fourth place, then displaces the globally oldest.
        let o = g.admit(addr("192.0.2.1:1")).unwrap();
        let o2 = g.admit(addr("192.0.2.1:2")).unwrap();
        assert!(!o.shared.evicted.load(Ordering::Acquire) && !o2.shared.evicted.load(Ordering::Acquire));
        assert!(s[7].shared.evicted.load(Ordering::Acquire), "the oldest stranger made room");
        drop((s, o, o2));
        let st = g.lock();
        assert_eq!((st.waiting.len(), st.per_source.len(), st.authenticated), (0, 0, 2));
    }

    #[test]
    fn newcomers_displace_those_that_had_their_chance_first() {
        let l = Limits { min_age: Duration::from_millis(200), ..limits(3, 3, 2) };
        let g = Guard::new(l, addr("127.0.0.1:1"));
        let a = g.admit(addr("127.0.0.1:1")).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let b = g.admit(addr("127.0.0.1:2")).unwrap();
        let c = g.admit(addr("127.0.0.1:3")).unwrap();
        // b and c are younger than min_age: a (old enough) goes, then the oldest, b.
        let d = g.admit(addr("127.0.0.1:4")).unwrap();
        assert!(a.shared.evicted.load(Ordering::Acquire));
        let _e = g.admit(addr("127.0.0.1:5")).unwrap();
        assert!(b.shared.evicted.load(Ordering::Acquire), "a burst never locks the next one out");
        assert!(!c.shared.evicted.load(Ordering::Acquire) && !d.shared.evicted.load(Ordering::Acquire));
        assert_eq!(g.lock().waiting.len(), 3);
    }

    #[test]
    fn a_displaced_connection_that_shows_a_valid_token_in_time_stays() {
        let g = Guard::new(limits(1, 1, 2), addr("127.0.0.1:1"));
        let a = g.admit(addr("127.0.0.1:1")).unwrap();
        let b = g.admit(addr("127.0.0.1:2")).unwrap();
        assert!(a.shared.evicted.load(Ordering::Acquire));
        assert!(a.authenticate(), "its request was already there");
        assert!(!a.shared.evicted.load(Ordering::Acquire) && a.is_authenticated());
        let st = g.lock();
        assert_eq!((st.waiting.len(), st.authenticated), (1, 1));
        drop(st);
        drop((a, b));
        let st = g.lock();
        assert_eq!((st.waiting.len(), st.per_source.len(), st.authenticated), (0, 0, 0));
    }

    #[test]
    fn wrong_tokens_slow_their_source_only_and_the_table_is_bounded() {
        let g = Guard::new(Limits::default(), addr("127.0.0.1:1"));
        let bad: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(g.failed(bad), Failed::Refused);
        }
        assert_eq!(g.failed(bad), Failed::Slowed(Duration::from_secs(1)));
        assert_eq!(g.failed(bad), Failed::Slowed(Duration::from_secs(2)));
        for _ in 0..20 {
            g.failed(bad);
        }
        assert_eq!(g.failed(bad), Failed::Slowed(MAX_PENALTY));
        assert!(g.penalty(bad).is_some_and(|d| d > Duration::from_secs(50)));
        assert!(g.penalty("192.0.2.10".parse().unwrap()).is_none());
        for i in 0..(MAX_SOURCES as u32 + 100) {
            g.failed(IpAddr::V4((0x0a00_0000 + i).into()));
        }
        assert!(g.lock().failures.len() <= MAX_SOURCES);
    }
}
