//! `drops.toml`: how many inbound requests the server dropped at the pending caps, and since
//! when, so that `server-trust pending` (and the HTTP API and the shell) can say so.
//!
//! Why a file of its own: the count lives in the server's memory (its metric), but the CLI
//! runs in another process. The server adds to the file with each rate-limited log line
//! about drops (at most one per 10 s), under the store lock, so a flood costs no more than
//! one small atomic write per 10 s, and a CLI or a second engine on the store reads a
//! whole file. An audit line per drop would let a flood grow the audit log without bound;
//! summing audit lines would make `pending` read the whole log. The count is a statistic,
//! not a decision: a crash loses at most the last 10 s of it. Deleting the file resets it.

use serde::{Deserialize, Serialize};

use super::files::{read_text, write_toml};
use super::{Store, now_rfc3339};
use crate::domain::Domain;
use crate::error::Result;

const DROPS: &str = "drops.toml";

/// Requests dropped at the caps since `since` (the first drop counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// Inbound requests dropped (nothing written, no prompt) since `since`.
    pub dropped: u64,
    /// When the first of them was counted (RFC 3339).
    pub since: String,
    /// When the last notice about drops was written (RFC 3339).
    pub last_at: String,
    /// Some of the peers dropped at the last notice (at most 10).
    pub last_peers: Vec<Domain>,
}

impl Store {
    /// The drops counted so far, `None` when none were (or the file was deleted).
    pub fn read_drops(&self) -> Result<Option<DropCount>> {
        let path = self.dir.join(DROPS);
        let Some(text) = read_text(&path, super::files::MAX_RECORD)? else { return Ok(None) };
        super::files::parse_toml(&path, &text).map(Some)
    }

    /// Adds `n` drops (the peers named are some of them) to the count. Call with the store
    /// lock held. An unreadable file is started afresh rather than blocking the count.
    pub fn add_drops(&self, n: u64, peers: &[Domain]) -> Result<()> {
        let now = now_rfc3339();
        let mut c = self
            .read_drops()
            .ok()
            .flatten()
            .unwrap_or_else(|| DropCount { since: now.clone(), ..DropCount::default() });
        c.dropped = c.dropped.saturating_add(n);
        c.last_at = now;
        c.last_peers = peers.to_vec();
        let path = self.dir.join(DROPS);
        let header = "# Inbound requests the server dropped at the pending caps (delete to reset).\n\n";
        write_toml(&path, header, &c)?;
        self.wrote(path);
        Ok(())
    }
}
