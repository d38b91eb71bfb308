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
use crate::store::{AuditRecord, Decision, Fingerprint, PendingRequest, QueuedAct, RosterEntry, now_rfc3339};
use crate::subscription::{Direction, Disposition, Subscription, SubscriptionType, transition};

/// Prompts held back in a flood are summed up once per this long.
pub(super) const DIGEST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// At most one log line per this long about requests dropped at the pending cap.
const CAP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// One operation in progress: the locked state, the actor, and what it produced.
pub(super) struct Txn<'a> {
    engine: &'a Engine,
    ops: &'a mut Ops,
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
        let rec = AuditRecord {
            time: now_rfc3339(),
            peer: peer.to_string(),
            actor: self.actor,
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
        } else {
            None
        };
        if let Some(why) = limit {
            // Nothing is written for a dropped request, and a flood gets one log line per
            // 10 s, not one per stanza.
            self.ops.cap_drops += 1;
            self.ops.stats.cap_drops += 1;
            if self.ops.cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                let n = std::mem::take(&mut self.ops.cap_drops);
                self.ops.cap_logged = Some(Instant::now());
                self.log(
                    LogLevel::Warn,
                    format!("dropped subscribe from {peer} ({n} dropped since the last notice): {why}"),
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
        let text = format!(
            "Server buddy request from {} to {} (XEP-0267). Approve: {} (or deny; or edit {})",
            peer.display_name(),
            self.engine.host,
            store.command("approve", peer),
            store.pending_path(peer).display()
        );
        self.prompt(peer, text);
        Ok(())
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
        let text = format!(
            "{} more server buddy requests to {}: {}{more}. List them: {list}",
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

    /// The admin approves or denies `peer`'s pending request.
    pub(super) fn on_decision(&mut self, peer: &Domain, decision: Decision) -> Result<()> {
        let before = self.current(peer).state;
        if !before.pending_in() {
            return Err(Error::NoPendingRequest(peer.clone()));
        }
        let id = match self.engine.store.read_pending(peer) {
            Ok(r) => r.and_then(|r| r.stanza_id),
            Err(_) => None, // a broken file must not block the admin's decision
        };
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
            Decision::Pending => return Ok(()),
        }
        self.drop_pending_file(peer);
        Ok(())
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
        let (pending, bad) = self.engine.store.list_pending();
        let (queued, bad_q) = self.engine.store.list_queued();
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
            // A crash between writing the file and saving the roster leaves a request the
            // roster does not know: recover it rather than lose it.
            let before = self.current(&req.peer).state;
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
            // On success `on_decision` removed the file; a decision that cannot apply is
            // consumed too.
            if let Err(e) = self.on_decision(&req.peer, req.decision) {
                self.not_applied(&req.peer, &e);
                self.drop_pending_file(&req.peer);
            }
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
                first_seen: at.clone(),
                last_seen: at,
                times_seen: 1,
                stanza_id: None, // not kept in the journal
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
