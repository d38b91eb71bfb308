//! The admin surface shared by every front end (the CLI, the sidecar's HTTP admin API):
//! finding a host's store, read views in the wire vocabulary, and the acts an admin records
//! in the store for the running server to carry out.
//!
//! Views serialise to the JSON that the CLI's `--json` prints and the HTTP API returns, so
//! both speak one vocabulary; front ends only format them as text or send them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::engine::Actor;
use crate::error::{Error, Result};
use crate::store::{AuditRecord, Decision, PendingRequest, QueuedAct, RosterEntry, Store, Waiting};
use crate::subscription::Subscription;

/// Opens the store of `host` under `root`; without a host, the one host the store serves.
/// Refuses (never creates) a host folder that does not exist: a mistyped `--host` must not
/// start an empty roster beside the real one.
pub fn open_store(root: &Path, host: Option<&str>) -> Result<Store> {
    // `--store` naming one host's folder (it has a pending/ folder and a domain for a name)
    // means its parent and that host.
    let own_name = root.file_name().and_then(|n| n.to_str()).and_then(|n| Domain::new(n).ok());
    if let (Some(name), Some(parent)) = (own_name, root.parent())
        && root.join("pending").is_dir()
        && host.is_none_or(|h| Domain::new(h).is_ok_and(|h| h == name))
    {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        return open_store(parent, Some(name.as_str()));
    }
    let unknown = |detail: String| Error::UnknownHost { store: root.to_path_buf(), detail };
    let host = match host {
        Some(h) => Domain::new(h)?,
        None => match Store::hosts(root)?.as_slice() {
            [one] => one.clone(),
            [] => return Err(unknown("no host folders here; pass --host".into())),
            many => {
                let names: Vec<&str> = many.iter().map(Domain::as_str).collect();
                return Err(unknown(format!(
                    "the store holds several hosts ({}); pass --host",
                    names.join(", ")
                )));
            }
        },
    };
    if !root.join(host.as_str()).is_dir() {
        return Err(unknown(format!(
            "no store for {host} here (has the server run with this store? check --host)"
        )));
    }
    Store::open(root, &host)
}

/// One roster line as admins see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer.
    pub peer: Domain,
    /// RFC 6121 state.
    pub state: Subscription,
    /// We approved it (From or Both): what access control checks.
    pub trusted: bool,
    /// Scopes.
    pub groups: Vec<String>,
    /// Admin's note.
    pub note: String,
    /// When it was approved.
    pub approved_at: Option<String>,
    /// Its next `subscribe` is answered without a prompt.
    pub pre_approved: bool,
    /// Its last presence was available (only peers that approved us send us presence;
    /// absent: never heard from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    /// Since when (RFC 3339): for an unavailable peer, when it was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When our trust in it ends (RFC 3339), for trust given for a time; absent: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl PeerView {
    /// The view of one roster entry.
    pub fn new(peer: &Domain, e: &RosterEntry) -> PeerView {
        PeerView {
            peer: peer.clone(),
            state: e.state,
            trusted: e.state.from(),
            groups: e.groups.clone(),
            note: e.note.clone(),
            approved_at: e.approved_at.clone(),
            pre_approved: e.pre_approved,
            available: None,
            since: None,
            expires_at: e.expires_at.clone(),
        }
    }
}

/// The roster as stored, sorted by peer.
/// Availability comes from what the server last heard (`presence.toml`; a file that does
/// not parse only leaves it out).
pub fn roster(store: &Store) -> Result<Vec<PeerView>> {
    let seen = store.read_seen().unwrap_or_default();
    Ok(store
        .load_roster()?
        .peers
        .iter()
        .map(|(d, e)| {
            let mut v = PeerView::new(d, e);
            if let Some(s) = seen.get(d) {
                (v.available, v.since) = (Some(s.available), Some(s.since.clone()));
            }
            v
        })
        .collect())
}

/// Everything known about one peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer.
    pub peer: Domain,
    /// Its roster entry, if any.
    pub entry: Option<RosterEntry>,
    /// Its pending request, if any.
    pub pending: Option<PendingRequest>,
    /// Its audit records, oldest first.
    pub history: Vec<AuditRecord>,
    /// Subscription stanzas recorded for it that the XMPP server has not accepted yet
    /// (its entry's outbox), oldest first.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
}

/// The report on `peer`.
pub fn show(store: &Store, peer: &Domain) -> Result<PeerReport> {
    let entry = store.load_roster()?.peers.remove(peer);
    let pending = store.read_pending(peer)?;
    let history = log(store, Some(peer), usize::MAX)?;
    let waiting = entry.as_ref().and_then(|e| e.outbox.clone()).unwrap_or_default();
    Ok(PeerReport { peer: peer.clone(), entry, pending, history, waiting })
}

/// The last `limit` audit records, of `peer` only if given, oldest first.
pub fn log(store: &Store, peer: Option<&Domain>, limit: usize) -> Result<Vec<AuditRecord>> {
    let mut recs: Vec<_> =
        store.read_audit()?.into_iter().filter(|r| peer.is_none_or(|p| r.peer == p.as_str())).collect();
    recs.drain(..recs.len().saturating_sub(limit));
    Ok(recs)
}

/// A peer's groups (scopes), as `groups PEER` shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupsView {
    /// The peer.
    pub peer: Domain,
    /// Its groups.
    pub groups: Vec<String>,
}

/// A pending request as `pending --json` and the HTTP API show it: the file's fields, and
/// `summary`, what is known about the requester a line each ([`PendingRequest::summary_lines`]),
/// so every driver (the ejabberd ad-hoc form, the WebAdmin page) shows the same words.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingView {
    /// The request as its file holds it.
    #[serde(flatten)]
    pub request: PendingRequest,
    /// For people.
    pub summary: Vec<String>,
}

/// Every pending request, and the files that could not be read (each names its file).
pub fn pending(store: &Store) -> (Vec<PendingView>, Vec<Error>) {
    let (reqs, bad) = store.list_pending();
    let views = reqs.into_iter().map(|r| PendingView { summary: r.summary_lines(), request: r }).collect();
    (views, bad)
}

/// An admin act, as named in answers and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAct {
    /// Ask a peer to be a buddy.
    Request,
    /// Approve a pending request.
    Approve,
    /// Deny a pending request.
    Deny,
    /// Withdraw trust both ways.
    Revoke,
    /// Replace a peer's groups.
    Groups,
    /// Set when a buddy's trust ends.
    Renew,
}

/// The answer to an act: what was done and what happens next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Always true (failures are errors).
    pub ok: bool,
    /// The act.
    pub act: AdminAct,
    /// The peer.
    pub peer: Domain,
    /// What happens next, for humans.
    pub detail: String,
}

impl Done {
    /// A successful `act` on `peer`.
    pub fn new(act: AdminAct, peer: &Domain, detail: impl Into<String>) -> Done {
        Done { ok: true, act, peer: peer.clone(), detail: detail.into() }
    }
}

/// Queues a request or a revocation for the running server (which owns the roster).
pub fn queue(store: &Store, peer: &Domain, act: QueuedAct, actor: Actor) -> Result<Done> {
    if peer == store.host() {
        return Err(Error::OwnHost(peer.clone()));
    }
    let done = match act {
        QueuedAct::Request => {
            Domain::peer(peer.as_str())?;
            Done::new(AdminAct::Request, peer, "queued: the server sends `subscribe` at its next poll")
        }
        QueuedAct::Revoke => {
            if !store.load_roster()?.peers.contains_key(peer) {
                return Err(Error::NotInRoster(peer.clone()));
            }
            Done::new(AdminAct::Revoke, peer, "queued: the server withdraws trust at its next poll")
        }
    };
    store.queue(peer, act, actor)?;
    Ok(done)
}

/// Records an approve/deny decision in the pending file, as an editor would.
pub fn decide(store: &Store, peer: &Domain, decision: Decision, actor: Actor) -> Result<Done> {
    store.set_decision(peer, decision, actor)?;
    let act = if decision == Decision::Approve { AdminAct::Approve } else { AdminAct::Deny };
    Ok(Done::new(act, peer, "recorded: the server answers at its next poll"))
}

/// Records an approval for a time only (`trust_for` such as `90d`) in the pending file.
pub fn approve_for(store: &Store, peer: &Domain, trust_for: &str, actor: Actor) -> Result<Done> {
    store.set_decision_for(peer, Decision::Approve, actor, Some(trust_for))?;
    let detail = format!("recorded: the server answers at its next poll; trust ends {trust_for} after that");
    Ok(Done::new(AdminAct::Approve, peer, detail))
}

/// The answer to a renewal: when the trust in `peer` now ends.
pub fn renewed(peer: &Domain, expires_at: Option<&str>) -> Done {
    let detail = match expires_at {
        Some(t) => format!("trusted until {t}; the admins are reminded before"),
        None => "trusted with no end".to_string(),
    };
    Done::new(AdminAct::Renew, peer, detail)
}

/// Splits a comma-separated group list (`""` clears).
pub fn parse_groups(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()
}

/// Requests dropped at the pending caps since when (`drops.toml`, kept by the server), or
/// `None` when none were.
pub fn dropped(store: &Store) -> Result<Option<crate::store::DropCount>> {
    store.read_drops()
}

/// The line `pending` prints under its list: "N dropped at the cap since T (last at T2: a, b)".
pub fn dropped_line(d: &crate::store::DropCount) -> String {
    let names: Vec<&str> = d.last_peers.iter().map(Domain::as_str).collect();
    let last = if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) };
    format!("{} dropped at the cap since {} (last at {}{last})", d.dropped, d.since, d.last_at)
}

/// Which pending requests a bulk act takes: those of one site (the domain and its
/// subdomains), or all of them with `all_pending`; in both cases only those first seen more
/// than `older_than_secs` ago, if given. Requests that already carry a decision are left as
/// they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// A domain: the requests from it and from its subdomains (`github.io`: `a1.github.io`…).
    #[serde(default)]
    pub site: Option<Domain>,
    /// Every pending request (refused without it when no site is given, so that an empty
    /// selection never means "all").
    #[serde(default)]
    pub all_pending: bool,
    /// Only requests first seen more than this many seconds ago.
    #[serde(default)]
    pub older_than_secs: Option<u64>,
}

impl Selection {
    fn takes(&self, req: &PendingRequest, now: std::time::SystemTime) -> bool {
        let site_ok = self.site.as_ref().is_none_or(|s| {
            let p = req.peer.as_str();
            p == s.as_str() || p.strip_suffix(s.as_str()).is_some_and(|head| head.ends_with('.'))
        });
        let age_ok = self.older_than_secs.is_none_or(|secs| {
            humantime::parse_rfc3339(&req.first_seen)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(secs))
        });
        req.decision == Decision::Pending && site_ok && age_ok
    }

    /// How the selection reads in answers: "from github.io", "all pending, older than 7d".
    fn describe(&self) -> String {
        let mut s = match &self.site {
            Some(site) => format!("from {site}"),
            None => "all pending".to_string(),
        };
        if let Some(secs) = self.older_than_secs {
            s += &format!(
                ", first seen over {} ago",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            );
        }
        s
    }
}

/// A request a bulk act could not take, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The peer, or the file's name when it could not be read.
    pub peer: String,
    /// Why.
    pub reason: String,
}

/// The answer to a bulk act: the peers it was recorded for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkDone {
    /// True when nothing was skipped.
    pub ok: bool,
    /// The act.
    pub act: AdminAct,
    /// The selection, for humans ("from github.io").
    pub selection: String,
    /// The peers the act was recorded for, sorted.
    pub peers: Vec<Domain>,
    /// Requests selected that could not be taken (decided or removed meanwhile, unreadable).
    pub skipped: Vec<Skipped>,
    /// What happens next, for humans.
    pub detail: String,
}

/// Records a deny decision for every pending request `sel` takes, one by one through
/// [`decide`] (as `deny PEER` would): the running server answers each at its next poll.
pub fn deny_pending(store: &Store, sel: &Selection, actor: Actor) -> Result<BulkDone> {
    if sel.site.is_none() && !sel.all_pending {
        return Err(Error::InvalidOption {
            name: "selection",
            reason: "give a site, or all pending requests explicitly".into(),
        });
    }
    let (reqs, bad) = store.list_pending();
    let now = std::time::SystemTime::now();
    let mut peers = Vec::new();
    let mut skipped: Vec<Skipped> =
        bad.iter().map(|e| Skipped { peer: "?".into(), reason: e.to_string() }).collect();
    for req in reqs.iter().filter(|r| sel.takes(r, now)) {
        match decide(store, &req.peer, Decision::Deny, actor) {
            Ok(_) => peers.push(req.peer.clone()),
            Err(e) => skipped.push(Skipped { peer: req.peer.to_string(), reason: e.to_string() }),
        }
    }
    peers.sort();
    let detail = format!("{} denial(s) recorded: the server answers at its next poll", peers.len());
    Ok(BulkDone {
        ok: skipped.is_empty(),
        act: AdminAct::Deny,
        selection: sel.describe(),
        peers,
        skipped,
        detail,
    })
}

/// An age such as `7d`, `12h`, `30m`, `90s`, `2w` (or several: `1d12h`), in seconds.
pub fn parse_age(s: &str) -> Result<u64> {
    Ok(crate::engine::parse_duration("older-than", s)?.as_secs())
}

#[cfg(test)]
mod bulk_tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_age("1d12h").unwrap(), 36 * 3600);
        assert_eq!(parse_age("90s").unwrap(), 90);
        assert_eq!(parse_age("2w").unwrap(), 14 * 86_400);
        for bad in ["", "7", "d", "7x", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
