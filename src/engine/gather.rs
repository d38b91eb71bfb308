//! Gathering evidence for new requests ([`crate::evidence`]): the stream facts drivers
//! report before a `subscribe`, and the queries asked of each new requester, until their
//! answers arrive. Memory only and bounded: the pending file is where evidence is kept.
//!
//! Never in the way of a request: the request is recorded and prompted for first; answers
//! fill its file in later, and one that never comes is noted as missing.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use super::policy::Txn;
use super::types::Action;
use crate::domain::Domain;
use crate::error::Result;
use crate::evidence::{ANSWER_TIMEOUT, QUERIES, Session};
use crate::store::Decision;

/// Peers tracked at most (a flood of streams or requests is capped elsewhere; this only
/// bounds memory: past it the oldest facts are forgotten, and shown as missing).
const MAX_TRACKED: usize = 4096;

#[derive(Default)]
pub(super) struct Gathering {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// What the driver told of the stream each peer's latest subscription came by.
    sessions: HashMap<Domain, (Session, Instant)>,
    /// Queries asked of new requesters and not answered yet.
    asked: HashMap<Domain, (Instant, Vec<&'static str>)>,
}

/// Once `map` holds [`MAX_TRACKED`] entries: drops those older than twice the answer
/// timeout and, if it is still full, the older half.
fn prune<V>(map: &mut HashMap<Domain, V>, at: impl Fn(&V) -> Instant) {
    if map.len() < MAX_TRACKED {
        return;
    }
    let stale = 2 * ANSWER_TIMEOUT;
    map.retain(|_, v| at(v).elapsed() < stale);
    if map.len() >= MAX_TRACKED {
        let mut times: Vec<Instant> = map.values().map(&at).collect();
        times.sort_unstable();
        let cut = times[times.len() / 2];
        map.retain(|_, v| at(v) > cut);
    }
}

impl Gathering {
    /// Notes the stream `peer`'s next subscription stanza comes by.
    pub(super) fn session(&self, peer: Domain, session: Session) {
        let mut inner = self.inner.lock();
        prune(&mut inner.sessions, |(_, t)| *t);
        inner.sessions.insert(peer, (session, Instant::now()));
    }

    /// The stream facts noted for `peer`, if recent.
    pub(super) fn session_of(&self, peer: &Domain) -> Option<Session> {
        let inner = self.inner.lock();
        inner.sessions.get(peer).filter(|(_, t)| t.elapsed() < 2 * ANSWER_TIMEOUT).map(|(s, _)| s.clone())
    }

    /// Starts the queries for `peer`'s new request: the actions that ask them.
    pub(super) fn ask(&self, peer: &Domain) -> Vec<Action> {
        let mut inner = self.inner.lock();
        prune(&mut inner.asked, |(t, _)| *t);
        inner.asked.insert(peer.clone(), (Instant::now(), QUERIES.to_vec()));
        QUERIES.iter().map(|ns| Action::Query { peer: peer.clone(), ns: ns.to_string() }).collect()
    }

    /// `peer` answered `ns` (or the driver gave up): `None` when that was not asked (a reply
    /// nobody waits for changes nothing), else whether it was the last one outstanding.
    pub(super) fn answered(&self, peer: &Domain, ns: &str) -> Option<bool> {
        let mut inner = self.inner.lock();
        let (_, left) = inner.asked.get_mut(peer)?;
        let i = left.iter().position(|q| *q == ns)?;
        left.swap_remove(i);
        let last = left.is_empty();
        if last {
            inner.asked.remove(peer);
        }
        Some(last)
    }
}

impl Txn<'_> {
    /// Records the answer to `ns` in `peer`'s pending file, unless an admin decided meanwhile
    /// (the file is theirs then); with the `last` answer, tells the admins what is known.
    pub(super) fn on_answer(
        &mut self,
        peer: &Domain,
        ns: &str,
        reply: Option<&str>,
        last: bool,
    ) -> Result<()> {
        let store = &self.engine.store;
        let Some(mut req) = store.read_pending(peer)? else { return Ok(()) };
        if req.decision != Decision::Pending {
            return Ok(());
        }
        req.evidence.add_answer(ns, reply);
        store.write_pending(&req)?;
        // A request whose prompt was held back in a flood is not followed up one by one either.
        if last && !self.ops.suppressed.contains(peer) {
            let text = format!(
                "Evidence on the server buddy request from {}: {}",
                peer.display_name(),
                req.summary_lines().join("; ")
            );
            self.notify(peer, text);
        }
        Ok(())
    }
}
