//! `presence.toml`: which approved-us peers were available when last heard, and since when,
//! so `server-trust list` (another process), the HTTP API and a restarted server can say
//! "available since T" or "last seen T".
//!
//! Written by the server, unsynced (a statistic: a crash loses at most the last change, and
//! the next presence writes it again), only when a peer's availability changes and at most
//! once a second (changes in between are written by the next poll), so a peer toggling its
//! presence costs one small rename a second, not a write per stanza. Deleting it forgets the
//! times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Store;
use super::files::{parse_toml, read_text, replace_unsynced, toml_text};
use crate::domain::Domain;
use crate::error::Result;

const SEEN: &str = "presence.toml";
/// One line per peer: room for 100k peers.
const MAX_SEEN: u64 = 16 * 1024 * 1024;

/// A peer's availability as last heard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its last presence was available.
    pub available: bool,
    /// When it became so (RFC 3339): for an unavailable peer, when it was last seen.
    pub since: String,
}

#[derive(Default, Serialize, Deserialize)]
struct SeenFile {
    #[serde(default)]
    peers: BTreeMap<Domain, Seen>,
}

impl Store {
    /// The availability of each peer heard from, empty when none was (or the file was
    /// deleted). A file that does not parse is an error naming it.
    pub fn read_seen(&self) -> Result<BTreeMap<Domain, Seen>> {
        let path = self.dir.join(SEEN);
        let Some(text) = read_text(&path, MAX_SEEN)? else { return Ok(BTreeMap::new()) };
        Ok(parse_toml::<SeenFile>(&path, &text)?.peers)
    }

    /// Replaces the file with `peers` (see the module's doc for when).
    pub fn write_seen(&self, peers: &BTreeMap<Domain, Seen>) -> Result<()> {
        let path = self.dir.join(SEEN);
        let header = "# Peers' availability as last heard, written by the server (delete to forget).\n\n";
        let file = SeenFile { peers: peers.clone() };
        replace_unsynced(&path, toml_text(header, &file).as_bytes())?;
        self.wrote(path);
        Ok(())
    }
}
