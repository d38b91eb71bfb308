//! A disposable binary copy of roster.toml, tagged with the length and FNV-1a hash of the
//! text it was made from; any edit of roster.toml makes it stale, and a stale, torn or
//! foreign cache is simply ignored.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::records::{RosterEntry, RosterFile};
use crate::domain::Domain;

const MAGIC: &str = "server-trust roster cache v1";

/// Written from borrowed peers, read into owned ones: the bytes are the same.
#[derive(Serialize, Deserialize)]
struct Cache<P> {
    magic: String,
    toml_len: u64,
    toml_fnv: u64,
    peers: P,
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub(super) fn load(path: &Path, text: &str) -> Option<RosterFile> {
    let bytes = fs::read(path).ok()?;
    let c: Cache<Vec<(Domain, RosterEntry)>> = postcard::from_bytes(&bytes).ok()?;
    if c.magic != MAGIC || c.toml_len != text.len() as u64 || c.toml_fnv != fnv1a(text) {
        return None;
    }
    Some(RosterFile { peers: c.peers.into_iter().collect() })
}

/// Best effort: a cache that cannot be written only costs the next load some time.
pub(super) fn save(path: &Path, text: &str, peers: &BTreeMap<&Domain, &RosterEntry>) {
    let c = Cache { magic: MAGIC.into(), toml_len: text.len() as u64, toml_fnv: fnv1a(text), peers };
    if let Ok(bytes) = postcard::to_allocvec(&c) {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        if fs::write(&tmp, bytes).is_err() || fs::rename(&tmp, path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}
