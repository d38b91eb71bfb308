//! The shared file store: the admin's approval interface and the engine's memory.
//!
//! One directory per served host:
//!
//! ```text
//! <root>/<host>/roster.toml            the server roster (state, groups, note, approvals)
//! <root>/<host>/pending/<peer>.toml    one inbound request each; set `decision` to approve/deny
//! <root>/<host>/outbound/<peer>.toml   admin acts queued for the running server (request, revoke)
//! <root>/<host>/audit.log              append-only JSON lines, one per transition
//! <root>/<host>/.lock                  serialises read-modify-write across processes
//! ```
//!
//! Every write is atomic (temp file, fsync, rename, fsync of the directory), so a reader or a
//! `kill -9` sees the old file or the new one, never half of each. A file that does not parse
//! is reported with its path and line and is never overwritten.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::domain::Domain;
use crate::engine::Actor;
use crate::error::{Error, Result};

mod cache;
mod files;
mod records;

use files::{atomic_write, parse_toml, read_named, read_text, remove, toml_text, write_toml};
pub use records::{AuditRecord, Decision, PendingRequest, Queued, QueuedAct, RosterEntry, RosterFile};

/// Current time as RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Cheap change detector for a file: changes whenever the file is replaced or edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(Fingerprint { len: m.len(), mtime: m.modified().ok(), ino: m.ino() })
}

/// Holds the store's cross-process lock until dropped.
#[derive(Debug)]
pub struct StoreLock(File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Handle on one host's directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    host: Domain,
}

const ROSTER: &str = "roster.toml";
const PENDING: &str = "pending";
const OUTBOUND: &str = "outbound";
const AUDIT: &str = "audit.log";
const LOCK: &str = ".lock";
const CACHE: &str = ".roster.cache";

impl Store {
    /// Opens (creating if needed) `<root>/<host>/`.
    pub fn open(root: &Path, host: &Domain) -> Result<Store> {
        let dir = root.join(host.as_str());
        for d in [dir.clone(), dir.join(PENDING), dir.join(OUTBOUND)] {
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        Ok(Store { dir, host: host.clone() })
    }

    /// Lists the hosts that have a directory under `root`.
    pub fn hosts(root: &Path) -> Result<Vec<Domain>> {
        let rd = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        let mut hosts: Vec<Domain> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Domain::new(e.file_name().to_str()?).ok())
            .collect();
        hosts.sort();
        Ok(hosts)
    }

    /// The host this store belongs to.
    pub fn host(&self) -> &Domain {
        &self.host
    }

    /// The host's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the pending file for `peer`.
    pub fn pending_path(&self, peer: &Domain) -> PathBuf {
        self.dir.join(PENDING).join(format!("{peer}.toml"))
    }

    fn outbound_path(&self, peer: &Domain) -> PathBuf {
        self.dir.join(OUTBOUND).join(format!("{peer}.toml"))
    }

    /// Takes the exclusive cross-process lock (blocks until free).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.lock().map_err(|e| Error::io(&path, e))?;
        Ok(StoreLock(f))
    }

    /// Fingerprint of the roster file, to skip re-reading it when unchanged.
    pub fn roster_fingerprint(&self) -> Option<Fingerprint> {
        fingerprint(&self.dir.join(ROSTER))
    }

    /// Reads the roster; a missing file is an empty roster.
    ///
    /// roster.toml is the truth. Parsing 100k peers of TOML takes ~400 ms, so a binary
    /// copy (`.roster.cache`) is used when it was made from exactly these bytes.
    pub fn load_roster(&self) -> Result<RosterFile> {
        let path = self.dir.join(ROSTER);
        let Some(text) = read_text(&path)? else { return Ok(RosterFile::default()) };
        if let Some(roster) = cache::load(&self.dir.join(CACHE), &text) {
            return Ok(roster);
        }
        let roster: RosterFile = parse_toml(&path, &text)?;
        cache::save(&self.dir.join(CACHE), &text, &roster.peers.iter().collect());
        Ok(roster)
    }

    /// Replaces the roster atomically with `peers` (any map of peers: borrowed, so a large
    /// roster is not copied to be written).
    pub fn save_roster<'a>(
        &self,
        peers: impl IntoIterator<Item = (&'a Domain, &'a RosterEntry)>,
    ) -> Result<()> {
        /// Same shape as [`RosterFile`], borrowed and sorted.
        #[derive(Serialize)]
        struct Sorted<'a> {
            peers: BTreeMap<&'a Domain, &'a RosterEntry>,
        }
        let sorted = Sorted { peers: peers.into_iter().collect() };
        let header = format!(
            "# server-trust roster of {}. `groups` and `note` may be edited by hand;\n\
             # states change only through the engine (CLI, server, API).\n\n",
            self.host
        );
        let text = toml_text(&header, &sorted);
        atomic_write(&self.dir.join(ROSTER), text.as_bytes())?;
        cache::save(&self.dir.join(CACHE), &text, &sorted.peers);
        Ok(())
    }

    /// Reads one pending request, `None` when there is none.
    pub fn read_pending(&self, peer: &Domain) -> Result<Option<PendingRequest>> {
        read_named(&self.pending_path(peer), peer, |r: &PendingRequest| &r.peer)
    }

    /// Writes a pending request atomically.
    pub fn write_pending(&self, req: &PendingRequest) -> Result<()> {
        let header = format!(
            "# Server buddy request from {peer} to {host} (XEP-0267).\n\
             # To decide, set decision = \"approve\" or \"deny\" and save, or run:\n\
             #   server-trust --store {root} --host {host} approve {peer}\n\n",
            peer = req.peer,
            host = self.host,
            root = self.dir.parent().unwrap_or(&self.dir).display(),
        );
        write_toml(&self.pending_path(&req.peer), &header, req)
    }

    /// Removes a pending request (no error when absent).
    pub fn remove_pending(&self, peer: &Domain) -> Result<()> {
        remove(&self.pending_path(peer))
    }

    /// Every pending request; unreadable files are returned as errors beside the good ones.
    pub fn list_pending(&self) -> (Vec<PendingRequest>, Vec<Error>) {
        self.list(PENDING, |s, p| s.read_pending(p))
    }

    /// Number of pending files, without parsing them.
    pub fn pending_count(&self) -> usize {
        self.peers_in(PENDING).map(|v| v.len()).unwrap_or(0)
    }

    /// Records an admin decision in the pending file, as an editor would.
    pub fn set_decision(&self, peer: &Domain, decision: Decision, actor: Actor) -> Result<()> {
        let _lock = self.lock()?;
        let mut req = self.read_pending(peer)?.ok_or_else(|| Error::NoPendingRequest(peer.clone()))?;
        req.decision = decision;
        req.decided_by = Some(actor);
        self.write_pending(&req)
    }

    /// Queues an act for the running server.
    pub fn queue(&self, peer: &Domain, act: QueuedAct, actor: Actor) -> Result<()> {
        let q = Queued { peer: peer.clone(), act, queued_at: now_rfc3339(), queued_by: actor };
        let header = "# Queued for the running server; removed once carried out.\n\n";
        write_toml(&self.outbound_path(peer), header, &q)
    }

    /// Every queued act.
    pub fn list_queued(&self) -> (Vec<Queued>, Vec<Error>) {
        self.list(OUTBOUND, |s, p| read_named(&s.outbound_path(p), p, |q: &Queued| &q.peer))
    }

    /// Removes a queued act (no error when absent).
    pub fn remove_queued(&self, peer: &Domain) -> Result<()> {
        remove(&self.outbound_path(peer))
    }

    /// Appends one line to the audit log.
    pub fn audit(&self, rec: &AuditRecord) -> Result<()> {
        let path = self.dir.join(AUDIT);
        let mut line = serde_json::to_string(rec).expect("audit record serialises");
        line.push('\n');
        // O_APPEND + one write: concurrent appenders never interleave within a line.
        let mut f =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&path, e))
    }

    /// The whole audit log, oldest first. A torn or foreign line is an error naming its line.
    pub fn read_audit(&self) -> Result<Vec<AuditRecord>> {
        let path = self.dir.join(AUDIT);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    line: Some(i + 1),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    fn peers_in(&self, sub: &str) -> Result<Vec<Domain>> {
        let dir = self.dir.join(sub);
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut peers: Vec<Domain> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                // Hidden files are our temp files and editors' swap files.
                if name.starts_with('.') {
                    return None;
                }
                Domain::new(name.strip_suffix(".toml")?).ok()
            })
            .collect();
        peers.sort();
        Ok(peers)
    }

    fn list<T>(
        &self,
        sub: &str,
        read: impl Fn(&Store, &Domain) -> Result<Option<T>>,
    ) -> (Vec<T>, Vec<Error>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        match self.peers_in(sub) {
            Ok(peers) => {
                for p in peers {
                    match read(self, &p) {
                        Ok(Some(v)) => ok.push(v),
                        Ok(None) => {} // removed meanwhile
                        Err(e) => bad.push(e),
                    }
                }
            }
            Err(e) => bad.push(e),
        }
        (ok, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::Subscription;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &Domain::new("montague.lit").unwrap()).unwrap();
        (t, s)
    }

    fn req(peer: &str) -> PendingRequest {
        PendingRequest {
            peer: Domain::new(peer).unwrap(),
            decision: Decision::Pending,
            decided_by: None,
            first_seen: now_rfc3339(),
            last_seen: now_rfc3339(),
            times_seen: 1,
            stanza_id: Some("x1".into()),
        }
    }

    #[test]
    fn pending_round_trip_and_listing() {
        let (_t, s) = store();
        s.write_pending(&req("capulet.lit")).unwrap();
        s.write_pending(&req("verona.lit")).unwrap();
        let (ok, bad) = s.list_pending();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok.len(), 2);
        assert_eq!(s.pending_count(), 2);
        let text = fs::read_to_string(s.pending_path(&Domain::new("capulet.lit").unwrap())).unwrap();
        assert!(text.contains("decision = \"pending\""), "{text}");
        assert!(text.contains("approve capulet.lit"), "{text}");
    }

    #[test]
    fn corrupt_file_names_file_and_line_and_is_kept() {
        let (_t, s) = store();
        let peer = Domain::new("capulet.lit").unwrap();
        s.write_pending(&req("capulet.lit")).unwrap();
        let path = s.pending_path(&peer);
        let text = fs::read_to_string(&path).unwrap().replace("\"pending\"", "\"yes please\"");
        fs::write(&path, &text).unwrap();
        let err = s.read_pending(&peer).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("decision")).unwrap() + 1;
        assert!(err.contains(&format!("capulet.lit.toml:{line}")), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "corrupt file must be left as is");
        let (_, bad) = s.list_pending();
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn renamed_file_is_refused() {
        let (_t, s) = store();
        s.write_pending(&req("capulet.lit")).unwrap();
        let from = s.pending_path(&Domain::new("capulet.lit").unwrap());
        let to = s.pending_path(&Domain::new("evil.lit").unwrap());
        fs::rename(from, to).unwrap();
        let err = s.read_pending(&Domain::new("evil.lit").unwrap()).unwrap_err();
        assert!(err.to_string().contains("named for evil.lit"), "{err}");
    }

    #[test]
    fn stray_files_are_ignored() {
        let (_t, s) = store();
        let dir = s.dir().join(PENDING);
        fs::write(dir.join(".capulet.lit.toml.swp"), "x").unwrap();
        fs::write(dir.join("README"), "x").unwrap();
        fs::write(dir.join("..toml"), "x").unwrap();
        assert_eq!(s.pending_count(), 0);
    }

    #[test]
    fn audit_appends_and_reports_torn_lines() {
        let (_t, s) = store();
        let rec = AuditRecord {
            time: now_rfc3339(),
            peer: "capulet.lit".into(),
            actor: Actor::Cli,
            event: "approve".into(),
            from: Some(Subscription::NonePendingIn),
            to: Some(Subscription::From),
        };
        s.audit(&rec).unwrap();
        s.audit(&rec).unwrap();
        assert_eq!(s.read_audit().unwrap().len(), 2);
        let mut f = OpenOptions::new().append(true).open(s.dir().join(AUDIT)).unwrap();
        f.write_all(b"{\"time\":").unwrap();
        let err = s.read_audit().unwrap_err().to_string();
        assert!(err.contains("audit.log:3"), "{err}");
    }

    #[test]
    fn roster_cache_is_used_only_for_the_exact_text() {
        let (_t, s) = store();
        let mut roster = RosterFile::default();
        let mut e = RosterEntry::new();
        e.state = Subscription::Both;
        e.groups = vec!["incidents".into()];
        roster.peers.insert(Domain::new("capulet.lit").unwrap(), e);
        s.save_roster(&roster.peers).unwrap();
        assert!(s.dir().join(CACHE).exists());
        assert_eq!(s.load_roster().unwrap(), roster);
        // A hand edit makes the cache stale: the TOML wins.
        let path = s.dir().join(ROSTER);
        let text = fs::read_to_string(&path).unwrap().replace("incidents", "muc-limits");
        fs::write(&path, text).unwrap();
        assert_eq!(s.load_roster().unwrap().peers.values().next().unwrap().groups, ["muc-limits"]);
        // A garbage cache is ignored, never trusted.
        fs::write(s.dir().join(CACHE), b"garbage").unwrap();
        assert_eq!(s.load_roster().unwrap().peers.values().next().unwrap().groups, ["muc-limits"]);
    }
}
