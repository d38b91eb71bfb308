//! Trust changed outside the server: a roster.toml or journal line written by hand, a backup
//! restored while the server was stopped or while it runs. Every engine audits its own transitions; whatever
//! differs from the state the audit log last gave a peer was changed by someone else, and
//! is audited as such, naming the peer, with one alert to the admins.

use std::collections::HashMap;

use super::api::{Engine, Ops};
use super::snapshot::Roster;
use super::types::{Action, Actor, LogLevel};
use crate::domain::Domain;
use crate::error::Result;
use crate::store::AuditRecord;
use crate::subscription::Subscription;

/// The audit event of a state the server found changed outside any engine.
pub const OUTSIDE_EVENT: &str =
    "changed outside the server (roster.toml or its journal written by hand, or a backup restored)";

/// The state the audit log last gave each peer, and how far the log was read.
#[derive(Default)]
pub(super) struct Audited {
    pos: Option<(u64, u64)>,
    states: HashMap<Domain, Subscription>,
    /// Records read in all: none means no log to compare with (new, or rotated away).
    records: usize,
}

impl Engine {
    /// Audits each of `peers` (`None`: every peer the roster or the audit log knows) whose
    /// state in the published roster differs from the one the audit log last gave it, as
    /// changed outside the server, and returns one alert naming them. Reads only the audit
    /// lines appended since the last call. `at_start`: the server's first look, where an
    /// empty or missing log (a new store, or one rotated away) makes the roster as it is the
    /// baseline, said in one record, rather than a change for every peer. `previous`: the
    /// roster in use until the store's folder was found replaced (a backup put back while we
    /// run), which is then what the roster is compared with.
    pub(super) fn audit_outside_changes(
        &self,
        ops: &mut Ops,
        peers: Option<Vec<Domain>>,
        at_start: bool,
        previous: Option<&Roster>,
    ) -> Result<Vec<Action>> {
        let audited = &mut ops.audited;
        let (records, pos) = self.store.audit_since(audited.pos)?;
        audited.pos = pos;
        audited.records += records.len();
        match previous {
            // The folder was put back from a backup, audit log included: its lines are the
            // backup's history, and ours since went with the folder they were in. What we
            // knew is the roster in use until now, so the restore shows as changed outside.
            Some(previous) => {
                audited.states = previous.iter().map(|(p, e)| (p.clone(), e.state)).collect();
            }
            None => {
                for r in records {
                    if let (Some(to), Ok(peer)) = (r.to, Domain::new(&r.peer)) {
                        audited.states.insert(peer, to);
                    }
                }
            }
        }
        let roster = self.view.load();
        let peers = peers.unwrap_or_else(|| {
            let mut all: Vec<Domain> = roster.iter().map(|(p, _)| p.clone()).collect();
            all.extend(audited.states.keys().filter(|p| !roster.contains_key(p)).cloned());
            all
        });
        if audited.records == 0 && at_start {
            // No log to compare with: a new store, or a log rotated away. What is there now
            // is the baseline, said once rather than as a change per peer.
            if roster.iter().next().is_some() {
                let rec = AuditRecord::now(
                    self.host.as_str(),
                    Actor::Engine,
                    &format!("audit log begun with {} peer(s) in the roster, taken as they are", peers.len()),
                    None,
                    None,
                );
                self.store.audit(&rec)?;
                audited.records = 1;
                for (p, e) in roster.iter() {
                    audited.states.insert(p.clone(), e.state);
                }
            }
            return Ok(Vec::new());
        }
        let mut changed = Vec::new();
        for peer in peers {
            let now = roster.get(&peer).map_or(Subscription::None, |e| e.state);
            let was = audited.states.get(&peer).copied().unwrap_or(Subscription::None);
            if now == was {
                continue;
            }
            self.store.audit(&AuditRecord::now(
                peer.as_str(),
                Actor::File,
                OUTSIDE_EVENT,
                Some(was),
                Some(now),
            ))?;
            audited.states.insert(peer.clone(), now);
            changed.push((peer, was, now));
        }
        let Some((first, ..)) = changed.first() else { return Ok(Vec::new()) };
        let shown: Vec<String> = changed
            .iter()
            .take(10)
            .map(|(p, was, now)| format!("{} ({was} -> {now})", p.display_name()))
            .collect();
        let more = changed.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let text = format!(
            "Server roster of {} changed outside the server (by hand, or a backup restored): {}{more}. Audited; see `server-trust log`",
            self.host,
            shown.join(", ")
        );
        Ok(vec![
            Action::Log { level: LogLevel::Warn, text: text.clone() },
            Action::Notify { peer: first.clone(), text },
        ])
    }
}
