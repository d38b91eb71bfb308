//! The shared file store: the admin's approval interface and the engine's memory.
//!
//! One directory per served host:
//!
//! ```text
//! <root>/<host>/roster.toml            the server roster (state, groups, note, approvals)
//! <root>/<host>/roster.journal         its changes since it was last written whole
//! <root>/<host>/roster.journal.prev    the changes folded in last time (for edits begun before)
//! <root>/<host>/pending/<peer>.toml    one inbound request each; set `decision` to approve/deny
//! <root>/<host>/outbound/<peer>.toml   admin acts queued for the running server (request, revoke)
//! <root>/<host>/audit.log              append-only JSON lines, one per transition
//! <root>/<host>/drops.toml             requests dropped at the pending caps, and since when
//! <root>/<host>/presence.toml          peers' availability as last heard, and since when
//! <root>/<host>/.lock                  serialises read-modify-write across processes
//! ```
//!
//! Every write is atomic (temp file, fsync, rename, fsync of the directory), so a reader or a
//! `kill -9` sees the old file or the new one, never half of each. A file that does not parse
//! is reported with its path and line and is never overwritten.
//!
//! (Over 400 lines: the store's whole file API is one `impl Store`, the layout it encodes and
//! the lock that guards it; its file primitives are in `files.rs`, its formats in `records.rs`.)

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::domain::Domain;
use crate::engine::Actor;
use crate::error::{Error, Result};

mod drops;
mod files;
mod journal;
mod records;
mod sealed;
mod seen;

use files::{
    MAX_AUDIT, MAX_ROSTER, append, check_dir, clean_temp_files, ensure_dir, open_lock, parse_toml,
    read_named, read_text, remove, toml_text, write_toml,
};

pub use drops::DropCount;
pub use journal::{Change, JournalPos};
pub use seen::Seen;

/// Where a read of the audit log stopped: the log's inode and an offset.
pub type AuditPos = (u64, u64);
pub use records::{
    AuditRecord, Decision, FirstDecision, PendingRequest, Queued, QueuedAct, RosterEntry, RosterFile, Waiting,
};

/// The reader of engine-written (sealed) roster.toml files on its own, for the differential
/// fuzz target: `None`, or exactly what the TOML parser reads from `text`.
#[doc(hidden)]
pub fn read_sealed_roster(text: &str) -> Option<RosterFile> {
    sealed::parse(text)
}

/// Current time as RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 UTC, seconds precision (the store's timestamps).
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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
    let m = fs::symlink_metadata(path).ok()?;
    Some(Fingerprint { len: m.len(), mtime: m.modified().ok(), ino: m.ino() })
}

impl Fingerprint {
    /// The file's modification time.
    pub fn modified(&self) -> Option<SystemTime> {
        self.mtime
    }
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
    /// Files this process wrote or removed, as it left them: a watcher's event about one of
    /// them that still looks like this is our own echo, not news (shared by clones).
    own: Arc<Mutex<HashMap<PathBuf, Option<Fingerprint>>>>,
    /// Request files written without a sync ([`Store::write_new_pending`]), not synced yet.
    unsynced: Arc<Mutex<Vec<PathBuf>>>,
}

/// Own writes remembered at most (then forgotten: their echoes are merely looked at).
const MAX_OWN: usize = 10_000;

const ROSTER: &str = "roster.toml";
const JOURNAL: &str = "roster.journal";
const JOURNAL_PREV: &str = "roster.journal.prev";
const PENDING: &str = "pending";
const OUTBOUND: &str = "outbound";
const AUDIT: &str = "audit.log";
const LOCK: &str = ".lock";
/// The mode of a store root (and folders above it) that `Store::open` has to create.
const NEW_ROOT_MODE: u32 = 0o750;
/// Bytes of the holder record at the start of the lock file.
const HOLDER_LEN: usize = 80;
/// How long admin tools wait for the store lock before saying who holds it.
pub const ADMIN_LOCK_WAIT: Duration = Duration::from_secs(10);
/// A roster.toml this large (about 4,000 peers) is checksummed on a second thread while it
/// is read: at 100k peers the checksum alone is ~30 ms of an engine's start.
const PARALLEL_READ: usize = 1 << 20;
/// The last line of a roster the engine wrote: a checksum of everything above it.
const SEAL_PREFIX: &str = "# server-trust: end of roster, fnv1a ";

/// The roster as read: roster.toml with its journal applied, and how it stands on disk.
#[derive(Clone, Debug)]
pub struct RosterRead {
    /// The peers.
    pub file: RosterFile,
    /// roster.toml is exactly as an engine wrote it (or missing).
    pub sealed: bool,
    /// The seal its last line names, edited since or not: what a journal extends. `None`
    /// when the file is missing or has no seal line (written from scratch, or copied in part).
    pub base: Option<u64>,
    /// How far the journal was read, when one applies.
    pub journal: Option<JournalPos>,
    /// The peers the journal lines applied name (not yet folded into roster.toml).
    pub journal_peers: Vec<Domain>,
}

/// A roster.toml written under a temp name, not yet in place ([`Store::prepare_roster`]).
pub struct PreparedRoster(files::Prepared);

impl std::fmt::Debug for PreparedRoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedRoster")
    }
}

/// The seal a roster's text names, and whether it is sealed: the seal line is its last line
/// and the checksum of everything above. An edit may leave the seal line inside the file (a
/// section added at the end): the file still names the seal it was edited from.
fn seal_line(text: &str) -> Option<(u64, bool)> {
    let at = text.rfind(SEAL_PREFIX).filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')?;
    let rest = &text[at + SEAL_PREFIX.len()..];
    let (value, after) = rest.split_once('\n').unwrap_or((rest, ""));
    let value = u64::from_str_radix(value.trim_end(), 16).ok()?;
    let body = text[..at].strip_suffix('\n')?;
    Some((value, after.trim().is_empty() && seal(body) == value))
}

/// FNV-1a: not a defence against forgery (nothing else reads the file as trusted), only a
/// cheap test that the file is whole and unedited.
fn seal(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Store {
    /// Opens (creating if needed) `<root>/<host>/`. A missing `root` (and missing folders
    /// above it) is created `0750` (narrowed by the umask): the store is the server user's
    /// alone (README, "Security model"). Folders inside get the mode and owner of `root`; a
    /// symlink where a store folder should be is refused. Temp files left by writers killed
    /// mid-write are cleaned up.
    pub fn open(root: &Path, host: &Domain) -> Result<Store> {
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(NEW_ROOT_MODE)
                .create(root)
                .map_err(|e| Error::io(root, e))?;
        }
        let root_meta = check_dir(root)?;
        let dir = root.join(host.as_str());
        ensure_dir(&dir, &root_meta)?;
        let dir_meta = check_dir(&dir)?;
        for sub in [PENDING, OUTBOUND] {
            ensure_dir(&dir.join(sub), &dir_meta)?;
        }
        for d in [dir.clone(), dir.join(PENDING), dir.join(OUTBOUND)] {
            clean_temp_files(&d);
        }
        Ok(Store { dir, host: host.clone(), own: Arc::default(), unsynced: Arc::default() })
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

    /// Remembers how we left `path` (after writing or removing it).
    fn wrote(&self, path: PathBuf) {
        let fp = fingerprint(&path);
        let mut own = self.own.lock();
        if own.len() >= MAX_OWN {
            own.clear();
        }
        own.insert(path, fp);
    }

    /// True when `path` is exactly as this process last left it: a change event about it is
    /// the echo of our own write.
    pub fn is_own_echo(&self, path: &Path) -> bool {
        self.own.lock().get(path).is_some_and(|fp| *fp == fingerprint(path))
    }

    /// True for roster.toml and its journal (as opposed to pending requests and queued acts).
    pub fn is_roster_file(&self, path: &Path) -> bool {
        [ROSTER, JOURNAL, JOURNAL_PREV].iter().any(|f| path == self.dir.join(f))
    }

    /// Path of the pending file for `peer`.
    pub fn pending_path(&self, peer: &Domain) -> PathBuf {
        self.dir.join(PENDING).join(format!("{peer}.toml"))
    }

    /// Checks that we can write every folder of the store (servers call it at start).
    pub fn check_writable(&self) -> Result<()> {
        for d in [self.dir.clone(), self.dir.join(PENDING), self.dir.join(OUTBOUND)] {
            crate::owner::check_writable(&d)?;
        }
        Ok(())
    }

    /// Takes the exclusive cross-process lock, waiting at most `wait` (zero: one try). A
    /// holder that keeps it longer gets [`Error::Busy`] naming it: the lock file says who
    /// holds it (`pid N (program)`), written by each holder.
    pub fn lock_within(&self, wait: Duration) -> Result<StoreLock> {
        let path = self.dir.join(LOCK);
        let f = open_lock(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = (&f).take(HOLDER_LEN as u64).read_to_string(&mut holder);
                    let holder = holder.trim();
                    let holder =
                        if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                    return Err(Error::Busy { path, holder, waited: wait });
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        // Say who holds it, for whoever waits next: one fixed-width write, no truncation (best
        // effort: the lock is what counts).
        static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let me = ME.get_or_init(|| {
            let exe = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            exe.unwrap_or_else(|| "?".into())
        });
        let mut record = format!("pid {} ({me})", std::process::id()).into_bytes();
        record.resize(HOLDER_LEN, b' ');
        let _ = std::os::unix::fs::FileExt::write_at(&f, &record[..HOLDER_LEN], 0);
        Ok(StoreLock(f))
    }

    /// The lock for admin tools: waits up to 10 s, then says who holds it.
    pub fn lock(&self) -> Result<StoreLock> {
        self.lock_within(ADMIN_LOCK_WAIT)
    }

    /// Fingerprint of the roster file, to skip re-reading it when unchanged.
    pub fn roster_fingerprint(&self) -> Option<Fingerprint> {
        fingerprint(&self.dir.join(ROSTER))
    }

    /// Fingerprint of the pending folder: moves whenever a request file is added, removed or
    /// renamed (not when one is edited in place).
    pub fn pending_dir_fingerprint(&self) -> Option<Fingerprint> {
        fingerprint(&self.dir.join(PENDING))
    }

    /// Fingerprint of the journal, to tell whether it grew or was replaced.
    pub fn journal_fingerprint(&self) -> Option<Fingerprint> {
        fingerprint(&self.dir.join(JOURNAL))
    }

    /// Reads the roster: roster.toml with its journal applied; a missing file is an empty
    /// roster. These two files are the only truth: there is no side cache that could say
    /// otherwise.
    pub fn load_roster(&self) -> Result<RosterFile> {
        Ok(self.read_roster()?.file)
    }

    /// Reads the roster and says how it stands on disk: whether roster.toml is sealed
    /// (written whole by an engine, as opposed to edited by hand or still being copied in
    /// place: a half-written file can parse, so only the seal on its last line tells it is
    /// complete), the seal its last line names, and how far its journal was read.
    pub fn read_roster(&self) -> Result<RosterRead> {
        let path = self.dir.join(ROSTER);
        let Some(text) = read_text(&path, MAX_ROSTER)? else {
            let file = RosterFile::default();
            return Ok(RosterRead {
                file,
                sealed: true,
                base: None,
                journal: None,
                journal_peers: Vec::new(),
            });
        };
        // The checksum (a serial pass over the whole file) and the fast reader run side by
        // side on a large roster: the reader's result is used only if the file is sealed.
        let (seal, fast) = if text.len() >= PARALLEL_READ {
            std::thread::scope(|s| {
                let seal = s.spawn(|| seal_line(&text));
                let fast = sealed::parse(&text);
                (seal.join().expect("the checksum does not panic"), fast)
            })
        } else {
            let seal = seal_line(&text);
            let fast = seal.is_some_and(|(_, sealed)| sealed).then(|| sealed::parse(&text)).flatten();
            (seal, fast)
        };
        let (base, sealed) = match seal {
            Some((value, sealed)) => (Some(value), sealed),
            None => (None, false),
        };
        // Exactly as an engine wrote it: read without the (much slower) TOML parser.
        let mut file: RosterFile = match fast.filter(|_| sealed) {
            Some(file) => file,
            None => parse_toml(&path, &text)?,
        };
        let mut journal = None;
        let mut journal_peers = Vec::new();
        if let Some(base) = base {
            let path = self.dir.join(JOURNAL);
            let read = journal::read(&path, base, None)?;
            let prev =
                if read.is_none() { journal::read_previous(&self.dir.join(JOURNAL_PREV))? } else { None };
            match (read, prev) {
                (Some((changes, pos)), _) => {
                    self.apply_changes(&mut file.peers, &changes)?;
                    journal_peers.extend(changes.iter().map(|c| c.peer.clone()));
                    journal = Some(pos);
                }
                // Edited from the roster.toml before the last compaction: both journals
                // apply. (An unedited older file is a restored backup: it wins, as any restore.)
                (None, Some((from, next, earlier))) if !sealed && from == base => {
                    if let Some((changes, pos)) = journal::read(&path, next, None)? {
                        self.apply_changes(&mut file.peers, &earlier)?;
                        self.apply_changes(&mut file.peers, &changes)?;
                        journal_peers.extend(changes.iter().map(|c| c.peer.clone()));
                        journal = Some(pos);
                    }
                }
                // A compaction stopped after writing roster.toml: the old journal's lines past
                // those folded in were appended meanwhile and still apply.
                (None, Some((from, next, earlier))) if sealed && next == base => {
                    if let Some((changes, pos)) = journal::read(&path, from, None)? {
                        let carried = changes.get(earlier.len()..).unwrap_or(&[]);
                        self.apply_changes(&mut file.peers, carried)?;
                        journal_peers.extend(carried.iter().map(|c| c.peer.clone()));
                        journal = Some(pos);
                    }
                }
                _ => {}
            }
        }
        Ok(RosterRead { file, sealed, base, journal, journal_peers })
    }

    /// The changes appended to the journal since `pos`; `None` when the journal was replaced
    /// or voided since (read the roster whole again).
    pub fn journal_since(&self, pos: JournalPos) -> Result<Option<(Vec<Change>, JournalPos)>> {
        journal::read(&self.dir.join(JOURNAL), pos.base, Some(pos))
    }

    /// Applies journalled changes to `peers`; a change that does not fit a roster entry is
    /// reported as a corrupt journal.
    pub fn apply_changes(&self, peers: &mut BTreeMap<Domain, RosterEntry>, changes: &[Change]) -> Result<()> {
        for c in changes {
            match self.apply_change(c, peers.get(&c.peer))? {
                Some(e) => peers.insert(c.peer.clone(), e),
                None => peers.remove(&c.peer),
            };
        }
        Ok(())
    }

    /// `entry` with one journalled change applied (`None`: removed); a change that does not
    /// fit a roster entry is reported as a corrupt journal.
    pub fn apply_change(&self, change: &Change, entry: Option<&RosterEntry>) -> Result<Option<RosterEntry>> {
        change.apply(entry).map_err(|message| Error::Corrupt {
            path: self.dir.join(JOURNAL),
            line: None,
            message: format!("{}: {message}", change.peer),
        })
    }

    /// Appends `changes` to the journal of the roster.toml sealed `base`, durably unless
    /// `sync` is false, and returns where the journal now ends. O(changes), whatever the
    /// roster's size. Caller holds the store lock.
    pub fn append_changes(
        &self,
        base: u64,
        changes: &[Change],
        prev: Option<JournalPos>,
        sync: bool,
    ) -> Result<JournalPos> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(JOURNAL);
        journal::append(&path, base, changes, sync)?;
        self.wrote(path.clone());
        let m = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let n = changes.len() as u64;
        let lines = match prev {
            Some(p) if p.ino == m.ino() && p.base == base => p.lines + n,
            _ => n,
        };
        Ok(JournalPos { base, offset: m.len(), ino: m.ino(), lines })
    }

    /// Replaces the roster atomically with `peers` (any map of peers: borrowed, so a large
    /// roster is not copied to be written), then starts its journal afresh. O(roster): the
    /// engine does it only when roster.toml has no seal to journal against; otherwise its
    /// compaction thread uses [`Store::prepare_roster`] and [`Store::fold_journal`]. Returns
    /// where the new journal stands.
    pub fn save_roster<'a>(
        &self,
        peers: impl IntoIterator<Item = (&'a Domain, &'a RosterEntry)>,
    ) -> Result<JournalPos> {
        let (prepared, seal) = self.prepare_roster(peers)?;
        prepared.0.commit()?;
        self.wrote(self.dir.join(ROSTER));
        // A crash here leaves a journal naming the old seal: void, and already folded in.
        self.append_changes(seal, &[], None, true)
    }

    /// The slow half of rewriting roster.toml, which needs no lock: the text of `peers`,
    /// sealed, written and synced under a temp name. Returns it and its seal.
    pub fn prepare_roster<'a>(
        &self,
        peers: impl IntoIterator<Item = (&'a Domain, &'a RosterEntry)>,
    ) -> Result<(PreparedRoster, u64)> {
        let (text, seal) = self.roster_text(peers);
        Ok((PreparedRoster(files::prepare(&self.dir.join(ROSTER), text.as_bytes())?), seal))
    }

    /// roster.toml's text for `peers`, sorted, ending in its seal line; and the seal.
    fn roster_text<'a>(
        &self,
        peers: impl IntoIterator<Item = (&'a Domain, &'a RosterEntry)>,
    ) -> (String, u64) {
        /// Same shape as [`RosterFile`], borrowed and sorted.
        #[derive(Serialize)]
        struct Sorted<'a> {
            peers: BTreeMap<&'a Domain, &'a RosterEntry>,
        }
        let sorted = Sorted { peers: peers.into_iter().collect() };
        let header = format!(
            "# server-trust roster of {}. `groups` and `note` may be edited by hand;\n\
             # states change only through the engine (CLI, server, API). Changes since this\n\
             # file was written are in roster.journal until the server folds them in.\n\n",
            self.host
        );
        let mut text = toml_text(&header, &sorted);
        let seal = seal(&text);
        text.push_str(&format!("\n{SEAL_PREFIX}{seal:016x}\n"));
        (text, seal)
    }

    /// The quick half, under the store lock: puts a roster prepared from the state at journal
    /// position `from` in place, and starts the journal afresh with the lines appended since
    /// `from` carried over. Returns the new journal's position and where the old one ended;
    /// `None` (nothing written) when the journal was replaced since `from`.
    pub fn fold_journal(
        &self,
        prepared: PreparedRoster,
        seal: u64,
        from: JournalPos,
    ) -> Result<Option<(JournalPos, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(JOURNAL);
        let Some((tail, old_end)) = journal::tail(&path, from)? else { return Ok(None) };
        // In this order, a crash at any point leaves files that read as the same roster: the
        // old pair; the new roster.toml with the old journal's lines past those in .prev; the
        // new pair.
        let prev = self.dir.join(JOURNAL_PREV);
        journal::keep_previous(&path, &prev, from.base, seal, from.offset)?;
        prepared.0.commit()?;
        journal::start(&path, seal, &tail)?;
        // Lines carried over may be another process's, not yet seen by this one's engine:
        // then the change must look like news.
        self.wrote(prev);
        if tail.is_empty() {
            self.wrote(self.dir.join(ROSTER));
            self.wrote(path.clone());
        }
        let m = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let lines = tail.lines().count() as u64;
        Ok(Some((JournalPos { base: seal, offset: m.len(), ino: m.ino(), lines }, old_end)))
    }

    /// Reads one pending request, `None` when there is none.
    pub fn read_pending(&self, peer: &Domain) -> Result<Option<PendingRequest>> {
        read_named(&self.pending_path(peer), peer, |r: &PendingRequest| &r.peer)
    }

    /// Writes a pending request atomically.
    pub fn write_pending(&self, req: &PendingRequest) -> Result<()> {
        self.put_pending(req, true)
    }

    /// Writes a new request's file atomically but without waiting for the disk: the roster
    /// journal line the engine appends next (synced) is the durable record, from which the
    /// server, at its first poll after a crash, writes a lost (or emptied) file again
    /// ([`Store::pending_lost`]); compaction syncs the files ([`Store::sync_pending`]) before
    /// folding such lines away. Saves two of a request's three disk syncs.
    pub fn write_new_pending(&self, req: &PendingRequest) -> Result<()> {
        self.put_pending(req, false)
    }

    /// Makes the request files written without a sync durable (see
    /// [`Store::write_new_pending`]), with their folder. Nothing to do costs nothing.
    pub fn sync_pending(&self) -> Result<()> {
        let paths = std::mem::take(&mut *self.unsynced.lock());
        if paths.is_empty() {
            return Ok(());
        }
        files::sync_files(&self.dir.join(PENDING), &paths).inspect_err(|_| {
            self.unsynced.lock().extend(paths.iter().cloned()); // retried with the next fold
        })
    }

    /// Counts `peer`'s request file among those to sync before the next fold: one an earlier
    /// process wrote without a sync, found at start behind a journal line not folded in.
    pub fn note_unsynced(&self, peer: &Domain) {
        self.unsynced.lock().push(self.pending_path(peer));
    }

    /// `peer`'s pending file is missing or empty: what a crash can leave of a file written by
    /// [`Store::write_new_pending`] (an empty file is never a request, nor a decision).
    pub fn pending_lost(&self, peer: &Domain) -> bool {
        match fs::symlink_metadata(self.pending_path(peer)) {
            Ok(m) => m.is_file() && m.len() == 0,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    fn put_pending(&self, req: &PendingRequest, sync: bool) -> Result<()> {
        let header = format!(
            "# Server buddy request from {peer} to {host} (XEP-0267).\n\
             # To decide, set decision = \"approve\" or \"deny\" and save, or run:\n\
             #   {command}\n\n",
            peer = req.peer.display_name(),
            host = self.host,
            command = self.command("approve", &req.peer),
        );
        let path = self.pending_path(&req.peer);
        if sync {
            write_toml(&path, &header, req)?;
        } else {
            files::replace_unsynced(&path, toml_text(&header, req).as_bytes())?;
            self.unsynced.lock().push(path.clone());
        }
        self.wrote(path);
        Ok(())
    }

    /// The exact `server-trust` command line that does `verb` on `peer` in this store, quoted
    /// for a POSIX shell: admins paste it, so no name or path can smuggle a command in.
    pub fn command(&self, verb: &str, peer: &Domain) -> String {
        let root = self.dir.parent().unwrap_or(&self.dir).to_string_lossy();
        let words = ["server-trust", "--store", &root, "--host", self.host.as_str(), verb, peer.as_str()];
        words.iter().map(|w| shlex::try_quote(w).unwrap_or(Cow::Borrowed("''"))).collect::<Vec<_>>().join(" ")
    }

    /// Removes a pending request (no error when absent).
    pub fn remove_pending(&self, peer: &Domain) -> Result<()> {
        let path = self.pending_path(peer);
        remove(&path)?;
        self.wrote(path);
        Ok(())
    }

    /// Every pending request; unreadable files are returned as errors beside the good ones.
    pub fn list_pending(&self) -> (Vec<PendingRequest>, Vec<Error>) {
        let mut bad = Vec::new();
        let mut ok = Vec::new();
        for p in self.peers_in(PENDING, &mut bad) {
            match self.read_pending(&p) {
                Ok(Some(r)) => ok.push(r),
                Ok(None) => {} // removed meanwhile
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    /// The peers with a pending file, without parsing the files.
    pub fn pending_peers(&self) -> Vec<Domain> {
        self.peers_in(PENDING, &mut Vec::new())
    }

    /// Number of pending files, without parsing them.
    pub fn pending_count(&self) -> usize {
        self.names_in(PENDING, &mut Vec::new()).len()
    }

    /// Records an admin decision in the pending file, as an editor would, and audits it, for
    /// the running server to carry out at its next poll. The first decision recorded stands:
    /// one that disagrees with a decision already in the file, or already carried out, is
    /// refused with [`Error::AlreadyDecided`] naming it; the same decision again changes
    /// nothing (and keeps who recorded it first).
    pub fn set_decision(&self, peer: &Domain, decision: Decision, actor: Actor) -> Result<()> {
        self.set_decision_for(peer, decision, actor, None)
    }

    /// [`Store::set_decision`], approving for a time only when `trust_for` is given (`90d`:
    /// the file's `trust_for`). Approving again with another time records the new time.
    pub fn set_decision_for(
        &self,
        peer: &Domain,
        decision: Decision,
        actor: Actor,
        trust_for: Option<&str>,
    ) -> Result<()> {
        if let Some(t) = trust_for {
            crate::engine::parse_duration("for", t).and_then(crate::engine::trust_for)?;
        }
        let _lock = self.lock()?;
        let Some(mut req) = self.read_pending(peer)? else {
            return Err(match self.first_decision(peer)? {
                Some(first) if first.decision != decision => first.refusal(peer),
                _ => Error::NoPendingRequest(peer.clone()),
            });
        };
        if let Some(refusal) = req.conflict(decision) {
            return Err(refusal);
        }
        let trust_for = trust_for.filter(|_| decision == Decision::Approve).map(str::to_string);
        if req.decision == decision {
            // The same decision again: only a new time for the approval changes the file.
            if trust_for.is_some() && trust_for != req.trust_for {
                req.trust_for = trust_for;
                self.write_pending(&req)?;
            }
            return Ok(());
        }
        req.trust_for = trust_for.or(req.trust_for);
        req.decision = decision;
        req.decided_by = Some(actor);
        req.decided_at = Some(now_rfc3339());
        self.write_pending(&req)?;
        self.audit(&AuditRecord {
            time: req.decided_at.clone().unwrap_or_default(),
            peer: peer.to_string(),
            actor,
            event: FirstDecision::recorded_event(decision),
            from: None,
            to: None,
        })
    }

    /// The first decision on `peer`'s latest request that the audit log holds. Reads the
    /// whole log: for refusals and editors' files, not for every act.
    pub fn first_decision(&self, peer: &Domain) -> Result<Option<FirstDecision>> {
        Ok(FirstDecision::of(&self.read_audit()?, peer.as_str()))
    }

    /// Queues an act for the running server, under the store lock, in a file of its own:
    /// acts on one peer never replace each other and are carried out in the order queued.
    pub fn queue(&self, peer: &Domain, act: QueuedAct, actor: Actor) -> Result<()> {
        let _lock = self.lock()?;
        let q = Queued { peer: peer.clone(), act, queued_at: now_rfc3339(), queued_by: actor };
        let header = "# Queued for the running server; removed once carried out.\n\n";
        // Names sort in queue order: nanoseconds since the epoch, then the peer.
        let mut nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = loop {
            let path = self.dir.join(OUTBOUND).join(format!("{nanos:020}-{peer}.toml"));
            if !path.exists() {
                break path;
            }
            nanos += 1;
        };
        write_toml(&path, header, &q)
    }

    /// Every queued act, oldest first, each with its file name for [`Store::remove_queued`].
    pub fn list_queued(&self) -> (Vec<(Queued, String)>, Vec<Error>) {
        let mut bad = Vec::new();
        let mut acts = Vec::new();
        for name in self.names_in(OUTBOUND, &mut bad) {
            let path = self.dir.join(OUTBOUND).join(&name);
            let peer = name.strip_suffix(".toml").and_then(|n| n.split_once('-')).map(|(_, p)| p);
            let read = match peer.map(Domain::new) {
                Some(Ok(p))
                    if format!("{:020}-{p}.toml", name[..20].parse::<u128>().unwrap_or(0)) == name =>
                {
                    read_named(&path, &p, |q: &Queued| &q.peer)
                }
                _ => Err(Error::Corrupt {
                    path: path.clone(),
                    line: None,
                    message: "not a queued act's name (<20 digits>-<peer>.toml); delete it".into(),
                }),
            };
            match read {
                Ok(Some(q)) => acts.push((q, name)),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        (acts, bad)
    }

    /// Removes a carried-out act by its file name (no error when absent).
    pub fn remove_queued(&self, name: &str) -> Result<()> {
        let path = self.dir.join(OUTBOUND).join(name);
        remove(&path)?;
        self.wrote(path);
        Ok(())
    }

    /// Appends one line to the audit log.
    pub fn audit(&self, rec: &AuditRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec).expect("audit record serialises");
        line.push('\n');
        append(&self.dir.join(AUDIT), line.as_bytes())
    }

    /// The audit records appended since `from` (the log's inode and an offset, as this
    /// returned last; `None`: from the start), and where the next read starts. A log
    /// replaced since (rotated) is read from its start. Lines that do not parse are skipped:
    /// this reads for comparison, [`Store::read_audit`] reports them.
    pub fn audit_since(&self, from: Option<AuditPos>) -> Result<(Vec<AuditRecord>, Option<AuditPos>)> {
        let path = self.dir.join(AUDIT);
        // Emptied in place (`: > audit.log`): read from the start again.
        let len = fs::symlink_metadata(&path).map_or(0, |m| m.len());
        let from = from.filter(|&(_, offset)| offset <= len);
        let read = |from: Option<AuditPos>| {
            let (ino, offset) = from.map_or((None, 0), |(i, o)| (Some(i), o));
            journal::whole_lines_within(&path, offset, ino, MAX_AUDIT)
        };
        let read = match read(from)? {
            None if from.is_some() => read(None)?,
            r => r,
        };
        Ok(match read {
            Some((text, ino, end)) => {
                (text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(), Some((ino, end)))
            }
            None => (Vec::new(), None),
        })
    }

    /// The whole audit log, oldest first. A torn or foreign line is an error naming its line.
    pub fn read_audit(&self) -> Result<Vec<AuditRecord>> {
        let path = self.dir.join(AUDIT);
        let Some(text) = read_text(&path, MAX_AUDIT)? else { return Ok(Vec::new()) };
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

    /// Sorted names of the record files in `sub` (hidden files are temp and swap files).
    fn names_in(&self, sub: &str, bad: &mut Vec<Error>) -> Vec<String> {
        let dir = self.dir.join(sub);
        let rd = match check_dir(&dir).and_then(|_| fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))) {
            Ok(rd) => rd,
            Err(e) => {
                bad.push(e);
                return Vec::new();
            }
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && n.ends_with(".toml"))
            .collect();
        names.sort();
        names
    }

    /// Peers with a file in `sub`. A file whose name is a variant spelling of a peer
    /// (`XN--BCHER-KVA.de.toml`) is reported with the name to give it, never ignored.
    fn peers_in(&self, sub: &str, bad: &mut Vec<Error>) -> Vec<Domain> {
        let mut peers = Vec::new();
        for name in self.names_in(sub, bad) {
            let path = self.dir.join(sub).join(&name);
            match Domain::new(&name[..name.len() - ".toml".len()]) {
                Ok(p) if format!("{p}.toml") == name => peers.push(p),
                Ok(p) => bad.push(Error::Corrupt {
                    path,
                    line: None,
                    message: format!("not named in canonical form: rename it to {p}.toml"),
                }),
                Err(e) => bad.push(Error::Corrupt { path, line: None, message: e.to_string() }),
            }
        }
        peers
    }
}
#[cfg(test)]
mod tests;
