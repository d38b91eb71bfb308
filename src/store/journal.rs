//! `roster.journal`: the roster's changes since roster.toml was last written whole.
//!
//! Rewriting roster.toml costs O(roster) (250 ms at 100k peers), so a change appends one line
//! here instead (O(1): one write and one fdatasync) and roster.toml is rewritten now and then
//! ("compaction"). JSON lines, for people and `jq`:
//!
//! ```text
//! {"base":"5f0e33a4c2d19b7e"}                                   the seal of the roster.toml it extends
//! {"peer":"capulet.lit","set":{"state":"both","updated_at":"…"}}  fields that changed
//! {"peer":"verona.lit","remove":true}                            the entry is gone
//! ```
//!
//! The journal applies to the roster.toml whose last line names the same seal, whether or not
//! the file was edited since: an admin's edit of `note` survives the journal's later change
//! of `state` (only changed fields are recorded), so a hand edit is merged, not lost. A
//! roster.toml that names another seal (a backup restored, or a compaction that died after
//! writing roster.toml, which then holds every change already) makes the journal void.
//! A last line without its newline is a write that a crash cut short: it was never
//! acknowledged, so it is ignored, and cut off before the next append.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::files::{MAX_ROSTER, check_dir, open_regular};
use super::records::RosterEntry;
use crate::domain::Domain;
use crate::error::{Error, Result};

/// One change to one peer, as journalled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The peer concerned.
    pub peer: Domain,
    /// Fields of its entry that changed, with their new values.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub set: Map<String, Value>,
    /// The entry was removed (it carried nothing worth keeping).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    base: String,
    /// Only in `roster.journal.prev`: the seal of the roster.toml these lines were folded
    /// into, which the current journal extends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A seal as the files write it (16 hex digits).
fn parse_seal(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

fn header(base: u64, next: Option<u64>) -> String {
    let h = Header { base: format!("{base:016x}"), next: next.map(|n| format!("{n:016x}")) };
    serde_json::to_string(&h).expect("header")
}

impl Change {
    /// The change that turns `old` into `new` (`None`: no entry).
    pub fn between(peer: &Domain, old: Option<&RosterEntry>, new: Option<&RosterEntry>) -> Change {
        let Some(new) = new else { return Change { peer: peer.clone(), set: Map::new(), remove: true } };
        let new = fields(new);
        let set = match old.map(fields) {
            Some(old) => new.into_iter().filter(|(k, v)| old.get(k) != Some(v)).collect(),
            // A new entry's unset end is its default: not worth a line's bytes.
            None => new
                .into_iter()
                .filter(|(k, v)| !(v.is_null() && (k == "expires_at" || k == "reminded_at")))
                .collect(),
        };
        Change { peer: peer.clone(), set, remove: false }
    }

    /// `entry` with this change applied (`None`: removed). A field that is not a roster
    /// field, or a value of the wrong type, is an error.
    pub fn apply(&self, entry: Option<&RosterEntry>) -> std::result::Result<Option<RosterEntry>, String> {
        if self.remove {
            return Ok(None);
        }
        let mut map = fields(&entry.cloned().unwrap_or_default());
        for (k, v) in &self.set {
            if !map.contains_key(k) {
                return Err(format!("{k:?} is not a roster field"));
            }
            map.insert(k.clone(), v.clone());
        }
        serde_json::from_value(Value::Object(map)).map(Some).map_err(|e| e.to_string())
    }
}

fn fields(e: &RosterEntry) -> Map<String, Value> {
    match serde_json::to_value(e).expect("roster entries serialise") {
        Value::Object(mut m) => {
            // Left out of roster.toml when empty, but a field like the others here: a line
            // can set it, and an emptied outbox is journalled as `"outbox":null`.
            m.entry("outbox").or_insert(Value::Null);
            // The same for the end of a time-limited trust, cleared when it ends or is renewed
            // for good.
            m.entry("expires_at").or_insert(Value::Null);
            m.entry("reminded_at").or_insert(Value::Null);
            m
        }
        _ => unreachable!("a roster entry is a struct"),
    }
}

/// Where a journal stands: the roster it extends and how far it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalPos {
    /// Seal of the roster.toml it extends.
    pub base: u64,
    /// Bytes read so far (whole lines only).
    pub offset: u64,
    /// Inode, to tell a replaced journal from a grown one.
    pub ino: u64,
    /// Lines of changes read so far.
    pub lines: u64,
}

/// The whole lines of the journal at `path` from byte `offset` on, its inode, and the offset
/// where those lines end. A torn last line is left out: it was never acknowledged. `None`
/// when the journal is missing or, given `ino`, was replaced by another file.
pub(super) fn whole_lines(path: &Path, offset: u64, ino: Option<u64>) -> Result<Option<(String, u64, u64)>> {
    whole_lines_within(path, offset, ino, MAX_ROSTER)
}

/// [`whole_lines`] of a file that may hold up to `limit` bytes.
pub(super) fn whole_lines_within(
    path: &Path,
    offset: u64,
    ino: Option<u64>,
    limit: u64,
) -> Result<Option<(String, u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let Some(mut f) = open_regular(path, limit)? else { return Ok(None) };
    let actual = f.metadata().map_err(|e| Error::io(path, e))?.ino();
    if ino.is_some_and(|i| i != actual) {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(whole);
    let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
        path: path.into(),
        line: None,
        message: "not valid UTF-8".into(),
    })?;
    Ok(Some((text, actual, offset + whole as u64)))
}

/// The changes of the journal at `path` from `from` on, if it extends the roster sealed
/// `base`. `from = None` reads it whole. Returns `None` when the journal is missing, void, or
/// was replaced since `from`.
pub(super) fn read(
    path: &Path,
    base: u64,
    from: Option<JournalPos>,
) -> Result<Option<(Vec<Change>, JournalPos)>> {
    if from.is_some_and(|p| p.base != base) {
        return Ok(None);
    }
    let (start, ino) = from.map_or((0, None), |p| (p.offset, Some(p.ino)));
    let Some((text, ino, end)) = whole_lines(path, start, ino)? else { return Ok(None) };
    if from.is_none() && text.is_empty() {
        return Ok(None); // not even a header: a journal whose creation was cut short
    }
    let first_line = |i: usize| from.map_or(i + 1, |p| p.lines as usize + 2 + i);
    let mut changes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let corrupt =
            |message: String| Error::Corrupt { path: path.into(), line: Some(first_line(i)), message };
        if from.is_none() && i == 0 {
            let h: Header = serde_json::from_str(line).map_err(|e| corrupt(e.to_string()))?;
            if parse_seal(&h.base) != Some(base) {
                return Ok(None); // extends another roster.toml
            }
            continue;
        }
        changes.push(serde_json::from_str::<Change>(line).map_err(|e| corrupt(e.to_string()))?);
    }
    let lines = from.map_or(0, |p| p.lines) + changes.len() as u64;
    Ok(Some((changes, JournalPos { base, offset: end, ino, lines })))
}

/// The whole lines appended after `from` (raw), and where they end; `None` when the journal
/// was replaced since.
pub(super) fn tail(path: &Path, from: JournalPos) -> Result<Option<(String, u64)>> {
    Ok(whole_lines(path, from.offset, Some(from.ino))?.map(|(text, _, end)| (text, end)))
}

/// Starts the journal afresh for the roster sealed `base`, with `lines` (whole JSON lines).
pub(super) fn start(path: &Path, base: u64, lines: &str) -> Result<()> {
    super::files::atomic_write(path, format!("{}\n{lines}", header(base, None)).as_bytes())
}

/// Keeps the lines of the journal at `path` up to `upto` as `prev`: they extend the roster
/// sealed `base` and were folded into the one sealed `next`. An editor who opened roster.toml
/// before that compaction saves a file naming `base`; with these lines it is still merged.
pub(super) fn keep_previous(path: &Path, prev: &Path, base: u64, next: u64, upto: u64) -> Result<()> {
    let Some(f) = open_regular(path, MAX_ROSTER)? else { return Ok(()) };
    let mut bytes = Vec::new();
    f.take(upto).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    let body = bytes.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &bytes[i + 1..]);
    let mut out = format!("{}\n", header(base, Some(next))).into_bytes();
    out.extend_from_slice(body);
    super::files::atomic_write(prev, &out)
}

/// `roster.journal.prev`: the seal of the roster its lines extend, the seal of the roster
/// they were folded into, and the lines.
pub(super) fn read_previous(prev: &Path) -> Result<Option<(u64, u64, Vec<Change>)>> {
    let Some(text) = super::files::read_text(prev, MAX_ROSTER)? else { return Ok(None) };
    let mut lines = text.lines();
    let corrupt =
        |line: usize, message: String| Error::Corrupt { path: prev.into(), line: Some(line), message };
    let h: Header =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| corrupt(1, e.to_string()))?;
    let seal = |s: &str| parse_seal(s).ok_or_else(|| corrupt(1, format!("{s:?} is not a seal")));
    let Some(next) = h.next.as_deref() else { return Err(corrupt(1, "no \"next\" seal".into())) };
    let (base, next) = (seal(&h.base)?, seal(next)?);
    let mut changes = Vec::new();
    for (i, line) in lines.enumerate() {
        changes.push(serde_json::from_str::<Change>(line).map_err(|e| corrupt(i + 2, e.to_string()))?);
    }
    Ok(Some((base, next, changes)))
}

/// Appends `changes` to the journal extending the roster sealed `base`, and makes them
/// durable (fdatasync). A journal that is missing or extends another roster is started
/// afresh; a torn last line left by a killed writer is cut off first. Caller holds the
/// store lock.
pub(super) fn append(path: &Path, base: u64, changes: &[Change], sync: bool) -> Result<()> {
    check_dir(path.parent().unwrap_or(Path::new(".")))?;
    let mut out = String::new();
    for c in changes {
        out.push_str(&serde_json::to_string(c).expect("changes serialise"));
        out.push('\n');
    }
    let fresh = !matches!(read_header(path)?, Some(b) if b == base);
    if fresh {
        return start(path, base, &out);
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut end = len;
    let mut last = [0u8];
    if len > 0 && f.read_at(&mut last, len - 1).map_err(|e| Error::io(path, e))? == 1 && last[0] != b'\n' {
        end = whole_length(&f, len).map_err(|e| Error::io(path, e))?;
        f.set_len(end).map_err(|e| Error::io(path, e))?;
    }
    f.seek(SeekFrom::Start(end)).map_err(|e| Error::io(path, e))?;
    f.write_all(out.as_bytes()).map_err(|e| Error::io(path, e))?;
    if !sync {
        return Ok(());
    }
    f.sync_data().map_err(|e| Error::io(path, e))
}

/// Length of the file up to and including its last newline.
fn whole_length(f: &std::fs::File, len: u64) -> std::io::Result<u64> {
    let mut pos = len;
    let mut buf = vec![0u8; 4096];
    while pos > 0 {
        let n = buf.len().min(pos as usize);
        pos -= n as u64;
        f.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

/// The base named by the journal's first line, if it has a whole one.
fn read_header(path: &Path) -> Result<Option<u64>> {
    let Some(f) = open_regular(path, MAX_ROSTER)? else { return Ok(None) };
    let mut first = Vec::new();
    std::io::BufRead::read_until(&mut std::io::BufReader::new(f.take(256)), b'\n', &mut first)
        .map_err(|e| Error::io(path, e))?;
    if first.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Header>(&first).ok().and_then(|h| parse_seal(&h.base)))
}
