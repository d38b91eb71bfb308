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

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::subscription::Subscription;

/// Current time as RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

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
    pub requested_by: Option<String>,
    /// When the peer was approved.
    #[serde(default)]
    pub approved_at: Option<String>,
    /// Actor that approved the peer.
    #[serde(default)]
    pub approved_by: Option<String>,
    /// Last state change.
    #[serde(default)]
    pub updated_at: Option<String>,
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
        }
    }

    /// An entry that carries nothing worth keeping (state None, no pre-approval, no notes).
    pub fn is_empty(&self) -> bool {
        self.state == Subscription::None
            && !self.pre_approved
            && self.groups.is_empty()
            && self.note.is_empty()
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
    pub decided_by: Option<String>,
    /// First time the request arrived.
    pub first_seen: String,
    /// Latest repeat.
    pub last_seen: String,
    /// How many `subscribe` stanzas arrived.
    pub times_seen: u64,
    /// The `id` of the first stanza, echoed in our answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza_id: Option<String>,
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
    pub queued_by: String,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 time.
    pub time: String,
    /// The peer concerned.
    pub peer: String,
    /// Who caused it: `peer`, `cli`, `file`, `api`, `shell`, `adhoc`, `engine`.
    pub actor: String,
    /// What happened, e.g. `inbound subscribe`, `approve`, `dropped: pending cap`.
    pub event: String,
    /// State before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Subscription>,
    /// State after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Subscription>,
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
        let text = toml_text(&header, &sorted)?;
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
    pub fn set_decision(&self, peer: &Domain, decision: Decision, actor: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut req = self.read_pending(peer)?.ok_or_else(|| Error::NoPendingRequest(peer.to_string()))?;
        req.decision = decision;
        req.decided_by = Some(actor.to_string());
        self.write_pending(&req)
    }

    /// Queues an act for the running server.
    pub fn queue(&self, peer: &Domain, act: QueuedAct, actor: &str) -> Result<()> {
        let q = Queued { peer: peer.clone(), act, queued_at: now_rfc3339(), queued_by: actor.to_string() };
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

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_text(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(Error::Corrupt { path: path.into(), line: None, message: "not valid UTF-8".into() })
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Error::Corrupt { path: path.into(), line, message: e.message().to_string() }
    })
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    read_text(path)?.map(|text| parse_toml(path, &text)).transpose()
}

/// Reads a file named for `peer`; one that names another peer inside (a renamed or copied
/// file) is refused rather than acted on for the wrong server.
fn read_named<T: for<'de> Deserialize<'de>>(
    path: &Path,
    peer: &Domain,
    named: impl Fn(&T) -> &Domain,
) -> Result<Option<T>> {
    match read_toml::<T>(path)? {
        Some(v) if named(&v) != peer => Err(Error::Corrupt {
            path: path.into(),
            line: None,
            message: format!("file is named for {peer} but says peer = {:?}", named(&v).as_str()),
        }),
        other => Ok(other),
    }
}

fn toml_text<T: Serialize>(header: &str, value: &T) -> Result<String> {
    let body = toml::to_string_pretty(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(format!("{header}{body}"))
}

fn write_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<()> {
    atomic_write(path, toml_text(header, value)?.as_bytes())
}

/// A disposable binary copy of roster.toml, tagged with the length and FNV-1a hash of the
/// text it was made from; any edit of roster.toml makes it stale, and a stale, torn or
/// foreign cache is simply ignored.
mod cache {
    use super::*;

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
}

/// temp + fsync + rename + fsync(dir): readers and crashes see old or new, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            actor: "cli".into(),
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
