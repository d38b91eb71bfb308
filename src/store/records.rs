//! The records kept in the store, as they appear in its files (TOML, audit JSON lines).
//!
//! Field and enum names are the wire vocabulary: the CLI's `--json` and the HTTP API print
//! these structs as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::engine::{Actor, PresenceKind};
use crate::evidence::Evidence;
use crate::subscription::Subscription;
use crate::vocab;

/// One peer in the server roster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// RFC 6121 subscription state.
    pub state: Subscription,
    /// Scopes the peer is trusted for (`incidents`, `muc-limits`, ...).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free text for admins.
    #[serde(default)]
    pub note: String,
    /// RFC 6121 §3.4 pre-approval: the peer's next `subscribe` is answered without a prompt.
    #[serde(default)]
    pub pre_approved: bool,
    /// When and by whom we asked the peer.
    #[serde(default)]
    pub requested_at: Option<String>,
    /// Actor that asked the peer.
    #[serde(default)]
    pub requested_by: Option<Actor>,
    /// When the peer was approved.
    #[serde(default)]
    pub approved_at: Option<String>,
    /// Actor that approved the peer.
    #[serde(default)]
    pub approved_by: Option<Actor>,
    /// Last state change.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Subscription stanzas recorded with the change that caused them and not yet accepted
    /// by the XMPP server, oldest first: at most one per direction (`subscribed` or
    /// `unsubscribed`; `subscribe` or `unsubscribe`), the latest act's. Absent when nothing
    /// waits (see `engine::outbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Vec<Waiting>>,
}

/// A subscription stanza waiting in a peer's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    /// `subscribe`, `subscribed`, `unsubscribe` or `unsubscribed`.
    #[serde(rename = "type")]
    pub kind: PresenceKind,
    /// The stanza id to use (the peer's, when answering its request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When the change that caused it was recorded.
    pub since: String,
}

impl RosterEntry {
    /// A fresh entry in state None.
    pub fn new() -> Self {
        RosterEntry {
            state: Subscription::None,
            groups: Vec::new(),
            note: String::new(),
            pre_approved: false,
            requested_at: None,
            requested_by: None,
            approved_at: None,
            approved_by: None,
            updated_at: None,
            outbox: None,
        }
    }

    /// An entry that carries nothing worth keeping (state None, no pre-approval, no notes).
    pub fn is_empty(&self) -> bool {
        self.state == Subscription::None
            && !self.pre_approved
            && self.groups.is_empty()
            && self.note.is_empty()
            && self.outbox.is_none()
    }
}

impl Default for RosterEntry {
    fn default() -> Self {
        Self::new()
    }
}

/// The roster file: peers keyed by domain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    /// Peers, sorted by domain in the file.
    #[serde(default)]
    pub peers: BTreeMap<Domain, RosterEntry>,
}

/// An admin's verdict on a pending request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Not decided yet.
    Pending,
    /// Send `subscribed` (and reciprocate).
    Approve,
    /// Send `unsubscribed`.
    Deny,
}

impl Decision {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }
}

/// One inbound request waiting for an admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    /// The requesting server.
    pub peer: Domain,
    /// Edit to `approve` or `deny` and save; the running server acts on it.
    pub decision: Decision,
    /// Who set the decision (`cli`, `api`, ...); absent means an editor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Actor>,
    /// When an admin tool recorded the decision (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// First time the request arrived.
    pub first_seen: String,
    /// Latest repeat.
    pub last_seen: String,
    /// How many `subscribe` stanzas arrived.
    pub times_seen: u64,
    /// The `id` of the first stanza, echoed in our answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza_id: Option<String>,
    /// What the server learnt about the peer when it asked (filled in as answers arrive).
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub evidence: Evidence,
}

impl PendingRequest {
    /// What an admin deciding should know, a line per fact ([`Evidence::lines`]), then how
    /// often and since when the peer asked.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = self.evidence.lines();
        let times =
            if self.times_seen == 1 { "once".to_string() } else { format!("{} times", self.times_seen) };
        lines.push(format!("asked {times}: first {}, last {}", self.first_seen, self.last_seen));
        lines
    }

    /// The refusal of `decision` when the file records a different one already.
    pub fn conflict(&self, decision: Decision) -> Option<crate::error::Error> {
        (self.decision != Decision::Pending && self.decision != decision).then(|| {
            crate::error::Error::AlreadyDecided {
                peer: self.peer.clone(),
                decision: self.decision,
                by: self.decided_by,
                at: self.decided_at.clone(),
                applied: false,
            }
        })
    }
}

/// An admin act queued for the running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueuedAct {
    /// Send `subscribe` (and pre-approve the peer's reciprocal request).
    Request,
    /// Withdraw trust both ways.
    Revoke,
}

/// A queued admin act (`outbound/<peer>.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queued {
    /// The peer it concerns.
    pub peer: Domain,
    /// What to do.
    pub act: QueuedAct,
    /// When it was queued.
    pub queued_at: String,
    /// Who queued it.
    pub queued_by: Actor,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 time.
    pub time: String,
    /// The peer concerned.
    pub peer: String,
    /// Who caused it.
    pub actor: Actor,
    /// What happened, e.g. `inbound subscribe`, `approve`, `dropped: pending cap`.
    pub event: String,
    /// State before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Subscription>,
    /// State after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Subscription>,
}

impl AuditRecord {
    /// A record of `event` on `peer` by `actor`, stamped now.
    pub fn now(
        peer: &str,
        actor: Actor,
        event: &str,
        from: Option<Subscription>,
        to: Option<Subscription>,
    ) -> Self {
        AuditRecord {
            time: super::now_rfc3339(),
            peer: peer.to_string(),
            actor,
            event: event.to_string(),
            from,
            to,
        }
    }
}

/// The first decision on a peer's current request, as the audit log tells it: what an admin
/// tool recorded for the server's next poll (`approve recorded`), or what was carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstDecision {
    /// Approve or deny.
    pub decision: Decision,
    /// Who made it.
    pub by: Actor,
    /// When (RFC 3339).
    pub at: String,
    /// It was carried out (the answer went out), not only recorded.
    pub applied: bool,
}

impl FirstDecision {
    /// The audit event an admin tool writes when it records `decision` in a pending file.
    pub fn recorded_event(decision: Decision) -> String {
        format!("{} recorded", decision.as_str())
    }

    /// The first decision taken on `peer`'s latest request in `records` (oldest first): a
    /// new request (`inbound subscribe`, or one recovered from its file) starts afresh.
    pub fn of(records: &[AuditRecord], peer: &str) -> Option<FirstDecision> {
        let mut first = None;
        for r in records.iter().filter(|r| r.peer == peer) {
            let (decision, applied) = match r.event.as_str() {
                "inbound subscribe" | "recovered pending request" => {
                    first = None;
                    continue;
                }
                "approve recorded" => (Decision::Approve, false),
                "deny recorded" => (Decision::Deny, false),
                "approve" | "approve (pre-approved by request)" => (Decision::Approve, true),
                "deny" | "revoke: unsubscribed" => (Decision::Deny, true),
                _ => continue,
            };
            if first.is_none() {
                first = Some(FirstDecision { decision, by: r.actor, at: r.time.clone(), applied });
            }
        }
        first
    }

    /// The refusal of a later act that disagrees with this decision.
    pub fn refusal(&self, peer: &Domain) -> crate::error::Error {
        crate::error::Error::AlreadyDecided {
            peer: peer.clone(),
            decision: self.decision,
            by: Some(self.by),
            at: Some(self.at.clone()),
            applied: self.applied,
        }
    }
}
