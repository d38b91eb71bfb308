//! XEP-0267 policy: what each RFC 6121 transition means for a server.
//!
//! A [`Txn`] is one engine operation in progress, run by `Engine::transact` with the locks
//! held. Its `on_*` handlers are the policy: an inbound `subscribe` is never approved
//! without an admin (or the admin's own earlier request), `subscribe` goes out only because
//! an admin asked, and every change is audited with its actor.
//!
//! (Over 400 lines on purpose: the XEP-0267 policy is one set of handlers that must be read
//! together, since each relies on what the others leave in the roster and the store.)

use std::time::Instant;

use super::api::{Engine, Ops};
use super::snapshot::{Map, Roster};
use super::types::{Action, Actor, LogLevel, PresenceKind};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::store::{
    AuditRecord, Decision, Fingerprint, FirstDecision, PendingRequest, QueuedAct, RosterEntry, now_rfc3339,
};
use crate::subscription::{Direction, Disposition, Subscription, SubscriptionType, transition};

/// Prompts held back in a flood are summed up once per this long.
pub(super) const DIGEST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// At most one log line per this long about requests dropped at the pending cap.
const CAP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Peers named in one log line about dropped requests (the rest are counted).
const CAP_LOG_NAMES: usize = 10;
/// Pending requests are checked for expiry at most once per this long (and at each scan).
const EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Per-site token buckets kept before full ones are pruned (at most once per minute).
const SITE_BUCKETS: usize = 4096;

/// One operation in progress: the locked state, the actor, and what it produced.
pub(super) struct Txn<'a> {
    pub(super) engine: &'a Engine,
    pub(super) ops: &'a mut Ops,
    actor: Actor,
    actions: Vec<Action>,
    /// The entries this operation changed (`None`: removed).
    working: Map<Option<RosterEntry>>,
}

impl<'a> Txn<'a> {
    pub(super) fn new(engine: &'a Engine, ops: &'a mut Ops, actor: Actor) -> Txn<'a> {
        Txn { engine, ops, actor, actions: Vec::new(), working: Map::default() }
    }

    /// The changed entries (if any) to save and publish, and the actions to return.
    pub(super) fn finish(mut self) -> (Map<Option<RosterEntry>>, Vec<Action>) {
        // Subscription stanzas are recorded with the change that caused them.
        super::outbox::record(&mut self.working, &self.actions);
        (self.working, self.actions)
    }

    /// `peer`'s entry as this operation sees it: its own changes, else the published one.
    pub(super) fn current(&self, peer: &Domain) -> RosterEntry {
        let found = match self.working.get(peer) {
            Some(changed) => changed.clone(),
            None => self.engine.view.load().get(peer).cloned(),
        };
        found.unwrap_or_default()
    }

    /// Changes one entry among the operation's own changes (readers keep the old snapshot
    /// until the operation publishes its result).
    pub(super) fn update(&mut self, peer: &Domain, f: impl FnOnce(&mut RosterEntry)) {
        let mut e = self.current(peer);
        f(&mut e);
        self.working.insert(peer.clone(), (!e.is_empty()).then_some(e));
    }

    pub(super) fn audit(
        &mut self,
        peer: &Domain,
        event: &str,
        from: Option<Subscription>,
        to: Option<Subscription>,
    ) {
        let rec = AuditRecord::now(peer.as_str(), self.actor, event, from, to);
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

    pub(super) fn notify(&mut self, peer: &Domain, text: String) {
        self.actions.push(Action::Notify { peer: peer.clone(), text });
    }

    /// Applies one RFC 6121 transition to `peer` and records it. Returns the disposition.
    fn apply(&mut self, peer: &Domain, dir: Direction, ty: SubscriptionType, event: &str) -> Disposition {
        let before = self.current(peer).state;
        let (after, disposition) = transition(before, dir, ty);
        if after != before {
            let actor = self.actor;
            self.update(peer, |e| {
                e.state = after;
                e.updated_at = Some(now_rfc3339());
                if after.from() && !before.from() {
                    e.approved_at = e.updated_at.clone();
                    e.approved_by = Some(actor);
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

    /// A subscription stanza from `peer` to our host.
    pub(super) fn on_inbound(&mut self, peer: &Domain, ty: SubscriptionType, id: Option<&str>) -> Result<()> {
        let event = format!("inbound {}", ty.as_str());
        let before = self.current(peer);
        // A peer that denies our request or drops us takes its pre-approval with it (even
        // when the stanza changes no state): if it asks later, the admin is prompted.
        if before.pre_approved && matches!(ty, SubscriptionType::Unsubscribed | SubscriptionType::Unsubscribe)
        {
            self.update(peer, |e| e.pre_approved = false);
            self.audit(peer, &format!("pre-approval cancelled by inbound {}", ty.as_str()), None, None);
        }
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
                self.ops.stats.approvals += 1;
                self.send(peer, PresenceKind::Subscribed, id);
                self.send(peer, PresenceKind::Available, None);
                let host = &self.engine.host;
                self.notify(
                    peer,
                    format!("{peer} is now subscribed to {host} (pre-approved by your request)"),
                );
            }
            (SubscriptionType::Subscribe, Disposition::Deliver) => self.new_request(peer, id)?,
            (SubscriptionType::Subscribe, Disposition::AutoReply) => {
                self.audit(peer, "inbound subscribe (already approved: answered)", Some(before.state), None);
                self.send(peer, PresenceKind::Subscribed, id);
                self.send(peer, PresenceKind::Available, None);
            }
            (SubscriptionType::Subscribe, _) => self.repeat(peer)?,
            (_, Disposition::Deliver) => {
                self.apply(peer, Direction::Inbound, ty, &event);
                let after = self.current(peer).state;
                if !after.pending_in() && before.state.pending_in() {
                    self.drop_pending_file(peer);
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

    /// A first `subscribe` from `peer`: a pending file and a prompt, never an approval.
    fn new_request(&mut self, peer: &Domain, id: Option<&str>) -> Result<()> {
        let config = &self.engine.config;
        let site = peer.site();
        let (total, from_site) = self.pending_counts(&site);
        let limit = if total >= config.max_pending {
            Some(format!("{} requests already pending (max_pending)", config.max_pending))
        } else if from_site >= config.max_pending_per_site {
            Some(format!(
                "{} requests from {site} already pending (max_pending_per_site)",
                config.max_pending_per_site
            ))
        } else if !self.take_site_token(&site) {
            Some(format!(
                "more than {} new requests a minute from {site} (site_requests_per_minute)",
                config.site_requests_per_minute
            ))
        } else {
            None
        };
        if let Some(why) = limit {
            self.dropped_at_cap(peer, why);
            return Ok(());
        }
        let now = now_rfc3339();
        let mut req = PendingRequest {
            peer: peer.clone(),
            decision: Decision::Pending,
            decided_by: None,
            decided_at: None,
            first_seen: now.clone(),
            last_seen: now,
            times_seen: 1,
            stanza_id: id.map(str::to_string),
            evidence: Default::default(),
        };
        let session = self.engine.gathering.session_of(peer);
        if let Some(s) = &session {
            req.evidence.add_session(s);
        }
        let store = &self.engine.store;
        // Never overwrite a file the admin is working on, even a broken one.
        if store.read_pending(peer)?.is_none() {
            let before = store.pending_dir_fingerprint();
            // Durable through the journal line `save` appends for this change.
            store.write_new_pending(&req)?;
            self.counted_pending(site, true, before);
        }
        self.apply(peer, Direction::Inbound, SubscriptionType::Subscribe, "inbound subscribe");
        self.ops.stats.requests += 1;
        self.ops.last_repeat.insert(peer.clone(), Instant::now());
        let adhoc = if self.engine.config.adhoc {
            "Decide in your XMPP client with the command \"Pending server buddies\", or approve: "
        } else {
            "Approve: "
        };
        let stream = match &session {
            Some(_) => format!(" Its server {}.", req.evidence.lines()[0]),
            None => String::new(),
        };
        let text = format!(
            "Server buddy request from {} to {} (XEP-0267).{stream} {adhoc}{} (or deny; or edit {})",
            peer.display_name(),
            self.engine.host,
            store.command("approve", peer),
            store.pending_path(peer).display()
        );
        self.prompt(peer, text);
        // Evidence comes after the request is recorded and prompted for, never before.
        self.actions.extend(self.engine.gathering.ask(peer));
        Ok(())
    }

    /// Takes one token from `site`'s bucket (a minute's worth of `site_requests_per_minute`,
    /// refilled continuously); false when it is empty.
    fn take_site_token(&mut self, site: &str) -> bool {
        let rate = self.engine.config.site_requests_per_minute as f64;
        let now = Instant::now();
        let fill = |(tokens, at): (f64, Instant)| {
            (tokens + now.duration_since(at).as_secs_f64() * rate / 60.0).min(rate)
        };
        let ops = &mut *self.ops;
        if ops.site_tokens.len() >= SITE_BUCKETS
            && ops.site_tokens_pruned.is_none_or(|t| t.elapsed() >= DIGEST_EVERY)
        {
            ops.site_tokens.retain(|_, b| fill(*b) < rate); // a full bucket is a fresh one
            ops.site_tokens_pruned = Some(now);
        }
        let bucket = ops.site_tokens.entry(site.to_string()).or_insert((rate, now));
        let tokens = fill(*bucket);
        let ok = tokens >= 1.0;
        *bucket = (if ok { tokens - 1.0 } else { tokens }, now);
        ok
    }

    /// A request dropped at a cap: nothing is written, and a flood gets one log line per
    /// 10 s naming some of the peers dropped, not one per stanza (the line about the last
    /// ones comes at a poll once the 10 s are over).
    fn dropped_at_cap(&mut self, peer: &Domain, why: String) {
        self.ops.cap_drops += 1;
        self.ops.stats.cap_drops += 1;
        if self.ops.cap_dropped.len() < CAP_LOG_NAMES && !self.ops.cap_dropped.contains(peer) {
            self.ops.cap_dropped.push(peer.clone());
        }
        self.ops.cap_why = why;
        match self.ops.cap_logged {
            Some(t) if t.elapsed() < CAP_LOG_EVERY => self.engine.set_drop_notice_at(Some(t + CAP_LOG_EVERY)),
            _ => self.flush_drop_notice(),
        }
    }

    /// Logs the requests dropped since the last notice, naming up to ten, and adds them to
    /// the store's count (`drops.toml`, which `pending` shows); at most once per 10 s.
    pub(super) fn flush_drop_notice(&mut self) {
        if self.ops.cap_drops == 0 || self.ops.cap_logged.is_some_and(|t| t.elapsed() < CAP_LOG_EVERY) {
            return;
        }
        let n = std::mem::take(&mut self.ops.cap_drops);
        let peers = std::mem::take(&mut self.ops.cap_dropped);
        self.ops.cap_logged = Some(Instant::now());
        self.engine.set_drop_notice_at(None);
        let names: Vec<String> = peers.iter().map(Domain::display_name).collect();
        let more = n.saturating_sub(peers.len() as u64);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let why = self.ops.cap_why.clone();
        self.log(
            LogLevel::Warn,
            format!(
                "dropped subscribe from {}{more} ({n} dropped since the last notice; last: {why})",
                names.join(", ")
            ),
        );
        if let Err(e) = self.engine.store.add_drops(n, &peers) {
            self.log(LogLevel::Error, format!("counting dropped requests: {e}"));
        }
    }

    /// Removes the requests nobody decided within `pending_max_age` (from `first_seen`)
    /// from `pending`: each file is removed and the pending-in state cleared, as when an
    /// admin deletes the file (RFC 6121: nothing is sent), audited by the engine. Returns
    /// the others. Runs at each scan, which a server's poll forces at most once a minute.
    fn expire_pending(&mut self, pending: Vec<PendingRequest>) -> Vec<PendingRequest> {
        self.engine.set_expiry_at(Instant::now() + EXPIRY_EVERY);
        let max_age = self.engine.config.pending_max_age;
        let now = std::time::SystemTime::now();
        let mut kept = Vec::with_capacity(pending.len());
        let mut expired = Vec::new();
        for req in pending {
            let age = humantime::parse_rfc3339(&req.first_seen).ok().and_then(|t| now.duration_since(t).ok());
            // A decision recorded is carried out, never expired; a date we cannot read is kept.
            if req.decision != Decision::Pending
                || req.peer == self.engine.host
                || age.is_none_or(|a| a < max_age)
            {
                kept.push(req);
                continue;
            }
            self.actor = Actor::Engine;
            let before = self.current(&req.peer).state;
            let after = Subscription::from_parts(before.to(), before.from(), before.pending_out(), false);
            if after != before {
                self.update(&req.peer, |e| e.state = after);
            }
            let days = max_age.as_secs() / 86_400;
            let event = format!("expired unanswered (pending since {}, over {days} day(s))", req.first_seen);
            self.audit(&req.peer, &event, Some(before), Some(after));
            self.drop_pending_file(&req.peer);
            self.ops.stats.expired += 1;
            expired.push(req.peer);
        }
        if !expired.is_empty() {
            let shown: Vec<String> = expired.iter().take(CAP_LOG_NAMES).map(Domain::display_name).collect();
            let more = expired.len() - shown.len();
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            self.log(
                LogLevel::Info,
                format!(
                    "{} pending request(s) expired unanswered after {} day(s): {}{more}",
                    expired.len(),
                    max_age.as_secs() / 86_400,
                    shown.join(", ")
                ),
            );
        }
        kept
    }

    /// Pending requests in all and from `site`: counted from the folder's listing once, then
    /// kept as we add files, and counted again whenever someone else changed the folder (its
    /// mtime moved), so a request costs O(1) rather than a listing of every pending file.
    fn pending_counts(&mut self, site: &str) -> (usize, usize) {
        let store = &self.engine.store;
        let now = store.pending_dir_fingerprint();
        if self.ops.pending_sites.as_ref().is_none_or(|(fp, _)| *fp != now) {
            let mut sites: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            for p in store.pending_peers() {
                *sites.entry(p.site()).or_default() += 1;
            }
            self.ops.pending_sites = Some((now, sites));
        }
        let (_, sites) = self.ops.pending_sites.as_ref().expect("counted above");
        (sites.values().sum(), sites.get(site).copied().unwrap_or(0))
    }

    /// A pending file we added or removed, counted without listing the folder again (when
    /// the count was of the folder as it was just `before`; otherwise it is counted afresh).
    fn counted_pending(&mut self, site: String, added: bool, before: Option<Fingerprint>) {
        let now = self.engine.store.pending_dir_fingerprint();
        match &mut self.ops.pending_sites {
            Some((fp, sites)) if *fp == before => {
                let n = sites.entry(site).or_default();
                *n = if added { *n + 1 } else { n.saturating_sub(1) };
                *fp = now;
            }
            counts => *counts = None,
        }
    }

    /// Prompts the admins about a new request: the first few of each minute one by one, the
    /// rest summed up in one digest when the minute is over, so a flood is one message.
    fn prompt(&mut self, peer: &Domain, text: String) {
        if self.ops.burst_started.is_none_or(|t| t.elapsed() >= DIGEST_EVERY) {
            self.flush_digest();
            self.ops.burst_started = Some(Instant::now());
            self.ops.burst_count = 0;
        }
        self.ops.burst_count += 1;
        if self.ops.burst_count <= self.engine.config.notify_burst {
            self.notify(peer, text);
        } else {
            self.ops.suppressed.push(peer.clone());
            self.engine.set_digest_at(self.ops.burst_started.map(|t| t + DIGEST_EVERY));
        }
    }

    /// Sends the digest of the prompts held back, once their minute is over.
    pub(super) fn flush_digest(&mut self) {
        if self.ops.burst_started.is_some_and(|t| t.elapsed() < DIGEST_EVERY)
            || self.ops.suppressed.is_empty()
        {
            return;
        }
        let peers = std::mem::take(&mut self.ops.suppressed);
        self.engine.set_digest_at(None);
        let shown: Vec<String> = peers.iter().take(10).map(Domain::display_name).collect();
        let more = if peers.len() > shown.len() {
            format!(" and {} more", peers.len() - shown.len())
        } else {
            String::new()
        };
        let store = &self.engine.store;
        let list = store.command("pending", &peers[0]);
        let list = list.rsplit_once(' ').map_or(list.as_str(), |(cmd, _)| cmd).to_string();
        let adhoc = if self.engine.config.adhoc { "the command \"Pending server buddies\", or " } else { "" };
        let text = format!(
            "{} more server buddy requests to {}: {}{more}. List them: {adhoc}{list}",
            peers.len(),
            self.engine.host,
            shown.join(", ")
        );
        self.notify(&peers[0], text);
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
            if req.decision != Decision::Pending {
                // A decision someone wrote, that our rewrite must not hide from the next poll.
                self.engine.watcher_mark_dirty();
            }
        }
        Ok(())
    }

    /// The admin asks `peer` for a subscription.
    pub(super) fn on_request(&mut self, peer: &Domain) -> Result<()> {
        if peer == &self.engine.host {
            return Err(Error::OwnHost(peer.clone()));
        }
        let before = self.current(peer);
        // RFC 6121 routes an outbound subscribe in every state: when we think we are
        // subscribed already, the peer may have dropped us without telling us, and only
        // asking again can repair the pair.
        let event = if before.state.to() { "request (already subscribed: asked again)" } else { "request" };
        self.apply(peer, Direction::Outbound, SubscriptionType::Subscribe, event);
        let pre =
            self.engine.config.preapprove_on_request && !before.state.from() && !before.state.pending_in();
        let actor = self.actor;
        self.update(peer, |e| {
            e.requested_at = Some(now_rfc3339());
            e.requested_by = Some(actor);
            e.pre_approved |= pre;
        });
        self.send(peer, PresenceKind::Subscribe, None);
        Ok(())
    }

    /// The admin approves or denies `peer`'s pending request. The first recorded decision
    /// wins: one that disagrees with a decision an admin tool or editor already wrote in the
    /// pending file (not carried out yet), or with one already carried out, is refused with
    /// [`Error::AlreadyDecided`] naming it, and nothing changes.
    pub(super) fn on_decision(&mut self, peer: &Domain, decision: Decision) -> Result<()> {
        let before = self.current(peer).state;
        if !before.pending_in() {
            return Err(match self.engine.store.first_decision(peer)? {
                Some(first) if first.decision != decision => first.refusal(peer),
                _ => Error::NoPendingRequest(peer.clone()),
            });
        }
        // A broken file must not block the admin's decision.
        let file = self.engine.store.read_pending(peer).ok().flatten();
        if let Some(refusal) = file.as_ref().and_then(|r| r.conflict(decision)) {
            return Err(refusal);
        }
        self.carry_out(peer, decision, file.and_then(|r| r.stanza_id));
        Ok(())
    }

    /// Answers `peer`'s pending request (the state is pending-in) with `decision`, echoing
    /// the request's stanza `id`, and removes its file.
    fn carry_out(&mut self, peer: &Domain, decision: Decision, id: Option<String>) {
        match decision {
            Decision::Approve => {
                self.apply(peer, Direction::Outbound, SubscriptionType::Subscribed, "approve");
                self.ops.stats.approvals += 1;
                self.send(peer, PresenceKind::Subscribed, id.as_deref());
                self.send(peer, PresenceKind::Available, None);
                let now = self.current(peer).state;
                if self.engine.config.reciprocate && !now.to() && !now.pending_out() {
                    self.apply(peer, Direction::Outbound, SubscriptionType::Subscribe, "reciprocate");
                    self.send(peer, PresenceKind::Subscribe, None);
                }
            }
            Decision::Deny => {
                self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribed, "deny");
                self.update(peer, |e| e.pre_approved = false);
                self.ops.stats.denials += 1;
                self.send(peer, PresenceKind::Unsubscribed, id.as_deref());
            }
            Decision::Pending => return,
        }
        self.drop_pending_file(peer);
    }

    /// The admin withdraws all trust with `peer`, both ways.
    pub(super) fn on_revoke(&mut self, peer: &Domain) -> Result<()> {
        let before = self.current(peer);
        if before.state == Subscription::None && !before.pre_approved {
            return Err(Error::NotInRoster(peer.clone()));
        }
        if before.state.to() || before.state.pending_out() {
            self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribe, "revoke: unsubscribe");
            self.send(peer, PresenceKind::Unsubscribe, None);
        }
        let now = self.current(peer).state;
        if now.from() || now.pending_in() {
            self.apply(peer, Direction::Outbound, SubscriptionType::Unsubscribed, "revoke: unsubscribed");
            self.send(peer, PresenceKind::Unsubscribed, None);
        }
        self.update(peer, |e| e.pre_approved = false);
        self.drop_pending_file(peer);
        self.ops.stats.revocations += 1;
        Ok(())
    }

    /// The admin replaces `peer`'s groups.
    pub(super) fn on_set_groups(&mut self, peer: &Domain, groups: Vec<String>) -> Result<()> {
        if !self.engine.view.load().contains_key(peer) {
            return Err(Error::NotInRoster(peer.clone()));
        }
        self.audit(peer, &format!("groups set to {groups:?}"), None, None);
        self.update(peer, |e| e.groups = groups);
        Ok(())
    }

    /// Applies the stanzas deferred while another process held the store lock, in order.
    pub(super) fn replay_deferred(&mut self) -> Result<()> {
        while let Some((peer, ty, id)) = self.ops.deferred.pop_front() {
            self.actor = Actor::Peer;
            self.on_inbound(&peer, ty, id.as_deref())?;
        }
        self.actor = Actor::File;
        Ok(())
    }

    /// What other processes left in the store: decided pending files, deleted ones, acts
    /// queued by the CLI.
    pub(super) fn apply_store_changes(&mut self) -> Result<()> {
        self.flush_digest();
        self.restore_lost_requests()?;
        if std::mem::take(&mut self.ops.audit_all) {
            let alert = self.engine.audit_outside_changes(self.ops, None, true, None)?;
            self.actions.extend(alert);
        }
        let (pending, bad) = self.engine.store.list_pending();
        let pending = self.expire_pending(pending);
        let (queued, bad_q) = self.engine.store.list_queued();
        let mut audit = None; // read once, when a decided file needs it
        for err in bad.into_iter().chain(bad_q) {
            self.report(err);
        }
        for req in pending {
            if req.peer == self.engine.host {
                let path = self.engine.store.pending_path(&req.peer);
                self.report(Error::Corrupt {
                    path,
                    line: None,
                    message: "a request from our own host".into(),
                });
                continue;
            }
            // What the audit log says was decided first on this request, for a decided file:
            // an editor may have saved over a decision recorded before, or saved a decision
            // after the request was answered.
            let first = match req.decision {
                Decision::Pending => None,
                _ => FirstDecision::of(
                    audit.get_or_insert_with(|| self.engine.store.read_audit().unwrap_or_default()),
                    req.peer.as_str(),
                ),
            };
            // A crash between writing the file and saving the roster leaves a request the
            // roster does not know: recover it rather than lose it. But a decided file for
            // a request answered since it arrived is a late edit: the answer stands.
            let before = self.current(&req.peer).state;
            if let Some(f) =
                first.as_ref().filter(|f| !before.pending_in() && f.applied && f.at >= req.first_seen)
            {
                self.late_edit(&req, "saved after", f, "; the file is removed");
                self.drop_pending_file(&req.peer);
                continue;
            }
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
            // Only admin tools record who decided; anything else in the file (a hand-edited
            // `decided_by = "peer"`) is an editor's decision, audited as such.
            self.actor = match req.decided_by {
                Some(a @ (Actor::Cli | Actor::Api | Actor::Shell | Actor::Adhoc)) => a,
                _ => Actor::File,
            };
            // The first decision recorded on this request stands over an edit saved after it.
            let mut decision = req.decision;
            if let Some(f) = first.filter(|f| !f.applied && f.decision != decision) {
                self.late_edit(&req, "saved over an earlier decision:", &f, "");
                (decision, self.actor) = (f.decision, f.by);
            }
            // The state is pending-in (recovered above if need be): the decision applies.
            self.carry_out(&req.peer, decision, req.stanza_id);
        }
        // A pending state whose file the admin deleted: the request is dismissed unanswered.
        let gone = dismissed(&self.engine.view.load(), &self.working, &self.engine.store);
        for peer in gone {
            self.actor = Actor::File;
            let before = self.current(&peer).state;
            let after = Subscription::from_parts(before.to(), before.from(), before.pending_out(), false);
            self.update(&peer, |e| e.state = after);
            self.audit(&peer, "dismissed (pending file deleted)", Some(before), Some(after));
        }
        for (q, name) in queued {
            self.actor = q.queued_by;
            let r = match q.act {
                QueuedAct::Request => self.on_request(&q.peer),
                QueuedAct::Revoke => self.on_revoke(&q.peer),
            };
            // A queued act is consumed whether it applied or not.
            if let Err(e) = r {
                self.not_applied(&q.peer, &e);
            }
            if let Err(e) = self.engine.store.remove_queued(&name) {
                self.report(e);
            }
        }
        Ok(())
    }

    /// Writes again the request files a crash lost, once, at the first scan of the store
    /// (a server's first poll; admin tools never poll). A new request's file is written
    /// without waiting for the disk, its journal line being the durable record
    /// (`Store::write_new_pending`): so a peer that a line not folded in when we opened left
    /// pending in, with no file or an empty one, gets its file back, instead of having the
    /// request taken for one the admin deleted. Under the store lock, from the roster as it
    /// is now: a request decided or removed by an admin tool meanwhile is not brought back.
    fn restore_lost_requests(&mut self) -> Result<()> {
        let store = &self.engine.store;
        for peer in std::mem::take(&mut self.ops.unfolded_at_open) {
            let entry = self.current(&peer);
            if !entry.state.pending_in() {
                continue;
            }
            if !store.pending_lost(&peer) {
                // Written by the process before us, maybe never synced: the fold syncs it.
                store.note_unsynced(&peer);
                continue;
            }
            let at = entry.updated_at.clone().unwrap_or_else(now_rfc3339);
            store.write_pending(&PendingRequest {
                peer: peer.clone(),
                decision: Decision::Pending,
                decided_by: None,
                decided_at: None,
                first_seen: at.clone(),
                last_seen: at,
                times_seen: 1,
                stanza_id: None, // not kept in the journal
                evidence: Default::default(),
            })?;
            self.ops.pending_sites = None; // counted again
            self.actor = Actor::Engine;
            self.audit(
                &peer,
                "pending file written again from the roster journal (lost in a crash)",
                None,
                None,
            );
        }
        Ok(())
    }

    /// Tells the log and the admins that `req`'s file was saved (`how`) after the decision
    /// `first`, which stands.
    fn late_edit(&mut self, req: &PendingRequest, how: &str, first: &FirstDecision, then: &str) {
        let text = format!(
            "{}: `{}` {how} {}{then}",
            self.engine.store.pending_path(&req.peer).display(),
            req.decision.as_str(),
            first.refusal(&req.peer)
        );
        self.log(LogLevel::Warn, text.clone());
        self.notify(&req.peer, text);
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
        let existed = self.engine.store.pending_path(peer).exists();
        let before = self.engine.store.pending_dir_fingerprint();
        match self.engine.store.remove_pending(peer) {
            Ok(()) if existed => self.counted_pending(peer.site(), false, before),
            Ok(()) => {}
            Err(e) => self.report(e),
        }
    }

    /// Logs a broken store file once per change of its error, not at every poll.
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

/// Peers pending in from us whose request file is gone (`working`: changes not published yet).
fn dismissed(
    roster: &Roster,
    working: &Map<Option<RosterEntry>>,
    store: &crate::store::Store,
) -> Vec<Domain> {
    let published = roster.iter().filter(|(p, _)| !working.contains_key(*p));
    let changed = working.iter().filter_map(|(p, e)| e.as_ref().map(|e| (p, e)));
    published
        .chain(changed)
        .filter(|(p, e)| e.state.pending_in() && !store.pending_path(p).exists())
        .map(|(p, _)| p.clone())
        .collect()
}
