//! File primitives of the store, written for a folder that others can write too.
//!
//! Anyone who can write the store (the server user, an editor, a backup restore) may plant
//! symlinks, FIFOs or huge files, and the CLI often runs as root. So: nothing here follows a
//! symlink or leaves the store folder, only regular files are read, and never more than a
//! size limit; new files are created exclusively under unpredictable names, replace their
//! target by rename (which replaces a symlink, never writes through it), and get the owner
//! and mode of the file they replace, or of their folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};

/// Prefix of our temp files: hidden, so listings and the watcher skip them.
pub(super) const TMP_PREFIX: &str = ".st-tmp-";
/// Largest pending or queued-act file read (they are a few hundred bytes).
pub(super) const MAX_RECORD: u64 = 64 * 1024;
/// Largest roster read (100k peers take ~25 MB).
pub(super) const MAX_ROSTER: u64 = 256 * 1024 * 1024;
/// Largest audit log read by `read_audit` (rotate it beyond that).
pub(super) const MAX_AUDIT: u64 = 512 * 1024 * 1024;

fn refused(path: &Path, why: &str) -> Error {
    Error::io(path, io::Error::new(io::ErrorKind::InvalidInput, why.to_string()))
}

/// Checks that `dir` is a real directory, not a symlink to one (checked before each use, so a
/// folder swapped for a symlink later is refused too).
pub(super) fn check_dir(dir: &Path) -> Result<fs::Metadata> {
    let m = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if m.file_type().is_symlink() {
        return Err(refused(dir, "is a symbolic link; a store folder must be a real directory"));
    }
    if !m.is_dir() {
        return Err(refused(dir, "is not a directory"));
    }
    Ok(m)
}

/// Creates `dir` if missing (with the mode of `like`, its parent) and checks it. The mode
/// (which the umask narrowed) and owner are set through the new folder's own descriptor,
/// opened without following a symlink: one planted at that name right after `mkdir` makes
/// this fail rather than change the mode or owner of what it points to.
pub(super) fn ensure_dir(dir: &Path, like: &fs::Metadata) -> Result<()> {
    match fs::DirBuilder::new().mode(like.mode() & 0o7777).create(dir) {
        Ok(()) => {
            #[cfg(test)]
            tests::AFTER_MKDIR.with(|h| h.take().map(|f| f(dir)));
            let created = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(dir)
                // Swapped for a symlink or a file meanwhile: say which, as for any folder.
                .map_err(|e| check_dir(dir).err().unwrap_or_else(|| Error::io(dir, e)))?;
            created
                .set_permissions(fs::Permissions::from_mode(like.mode() & 0o7777))
                .map_err(|e| Error::io(dir, e))?;
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::fchown(&created, Some(like.uid()), Some(like.gid()))
                    .map_err(|e| Error::io(dir, e))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        // Say whose folder it is and what to run, not just "Permission denied".
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(dir
                .parent()
                .and_then(|p| crate::owner::check_writable(p).err())
                .unwrap_or(Error::io(dir, e)));
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    check_dir(dir).map(|_| ())
}

/// Gives `path` the owner of `like` when we are root and they differ (a root CLI must not
/// leave root-owned files the unprivileged server cannot replace).
fn chown_like(path: &Path, like: &fs::Metadata) -> io::Result<()> {
    if unsafe { libc::geteuid() } == 0 {
        let m = fs::symlink_metadata(path)?;
        if (m.uid(), m.gid()) != (like.uid(), like.gid()) {
            std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))?;
        }
    }
    Ok(())
}

/// Opens a regular file for reading: no symlink followed, no FIFO or device opened (they
/// would block or never end), nothing over `limit` bytes. `None` when it does not exist.
pub(super) fn open_regular(path: &Path, limit: u64) -> Result<Option<File>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(path, "is a symbolic link; store files must be regular files"));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    if m.len() > limit {
        return Err(refused(path, &format!("is larger than {limit} bytes")));
    }
    Ok(Some(f))
}

pub(super) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads a whole regular file as UTF-8, at most `limit` bytes.
pub(super) fn read_text(path: &Path, limit: u64) -> Result<Option<String>> {
    let Some(f) = open_regular(path, limit)? else { return Ok(None) };
    let mut bytes = Vec::new();
    // The size was checked, but the file may grow meanwhile: never read past the limit.
    f.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(refused(path, &format!("is larger than {limit} bytes")));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| Error::Corrupt {
        path: path.into(),
        line: None,
        message: "not valid UTF-8".into(),
    })
}

pub(super) fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Error::Corrupt { path: path.into(), line, message: e.message().to_string() }
    })
}

/// Reads a record file named for `peer`; one that names another peer inside (a renamed or
/// copied file) is refused rather than acted on for the wrong server.
pub(super) fn read_named<T: for<'de> Deserialize<'de>>(
    path: &Path,
    peer: &Domain,
    named: impl Fn(&T) -> &Domain,
) -> Result<Option<T>> {
    let Some(text) = read_text(path, MAX_RECORD)? else { return Ok(None) };
    let v: T = parse_toml(path, &text)?;
    if named(&v) != peer {
        return Err(Error::Corrupt {
            path: path.into(),
            line: None,
            message: format!("file is named for {peer} but says peer = {:?}", named(&v).as_str()),
        });
    }
    Ok(Some(v))
}

pub(super) fn toml_text<T: Serialize>(header: &str, value: &T) -> String {
    let body = toml::to_string_pretty(value).expect("store records always encode as TOML");
    format!("{header}{body}")
}

pub(super) fn write_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<()> {
    atomic_write(path, toml_text(header, value).as_bytes())
}

/// Exclusive temp file + fsync + rename + fsync(dir): readers and crashes see the old file
/// or the new one, never a mix; a symlink planted at `path` is replaced, not followed.
pub(super) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    prepare(path, bytes)?.commit()
}

/// [`atomic_write`] without either fsync, for a file whose content another record already
/// made durable (a crash may lose it, or leave it empty, but never half-written for a
/// reader): the caller must be able to write it again from that record.
pub(super) fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    let Prepared { tmp, path, .. } = prepare_with(path, bytes, false)?;
    tmp.persist(&path).map(|_| ()).map_err(|e| Error::io(&path, e.error))
}

/// fsyncs `paths` (regular files in `dir`; one gone or swapped for a symlink or anything
/// else meanwhile is skipped, never followed), then `dir`: what [`replace_unsynced`] left.
pub(super) fn sync_files(dir: &Path, paths: &[std::path::PathBuf]) -> Result<()> {
    check_dir(dir)?;
    for path in paths {
        if let Ok(Some(f)) = open_regular(path, u64::MAX) {
            f.sync_all().map_err(|e| Error::io(path, e))?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// A new version of a file, written and synced under a temp name, not yet in place.
pub(super) struct Prepared {
    tmp: tempfile::NamedTempFile,
    path: std::path::PathBuf,
}

/// The first half of [`atomic_write`]: the slow part (writing and syncing the bytes), which
/// needs no lock, so a large file can be prepared while others keep using the store.
pub(super) fn prepare(path: &Path, bytes: &[u8]) -> Result<Prepared> {
    prepare_with(path, bytes, true)
}

fn prepare_with(path: &Path, bytes: &[u8], sync: bool) -> Result<Prepared> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_meta = check_dir(dir)?;
    let write = || -> io::Result<tempfile::NamedTempFile> {
        // The mode and owner to keep: the replaced file's (a regular one), else the folder's.
        let like = match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => m,
            _ => dir_meta.clone(),
        };
        let mode = if like.is_dir() { like.mode() & 0o666 } else { like.mode() & 0o7777 };
        // O_EXCL with a random name: nothing planted in advance can be written through.
        // The writer's pid in the name lets a later open remove what a killed writer left.
        let prefix = format!("{TMP_PREFIX}{}-", std::process::id());
        let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
        tmp.as_file_mut().write_all(bytes)?;
        tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
        chown_like(tmp.path(), &like)?;
        if sync {
            tmp.as_file().sync_all()?;
        }
        Ok(tmp)
    };
    let tmp = write().map_err(|e| Error::io(path, e))?;
    Ok(Prepared { tmp, path: path.to_path_buf() })
}

impl Prepared {
    /// Puts the file in place (rename, then fsync of the folder).
    pub(super) fn commit(self) -> Result<()> {
        let Prepared { tmp, path } = self;
        let dir = path.parent().unwrap_or(Path::new("."));
        let done = || -> io::Result<()> {
            tmp.persist(&path).map_err(|e| e.error)?;
            File::open(dir)?.sync_all()
        };
        done().map_err(|e| Error::io(&path, e))
    }
}

/// Appends `line` to `path` (created with the folder's mode and owner), never through a
/// symlink; one O_APPEND write, so concurrent appenders never interleave within a line.
pub(super) fn append(path: &Path, line: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_meta = check_dir(dir)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(dir_meta.mode() & 0o666)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    if m.len() == 0 {
        chown_like(path, &dir_meta).map_err(|e| Error::io(path, e))?;
    }
    f.write_all(line).map_err(|e| Error::io(path, e))
}

/// Opens (creating) the lock file: a regular file, never through a symlink.
pub(super) fn open_lock(path: &Path) -> Result<File> {
    let dir_meta = check_dir(path.parent().unwrap_or(Path::new(".")))?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(dir_meta.mode() & 0o666)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused(path, "is a symbolic link; refusing to lock through it"),
            _ => Error::io(path, e),
        })?;
    if !f.metadata().map_err(|e| Error::io(path, e))?.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    chown_like(path, &dir_meta).map_err(|e| Error::io(path, e))?;
    Ok(f)
}

/// Removes temp files left by writers killed mid-write: those of a process that is gone, and
/// any older than a minute; a live writer's file is never taken from under it.
pub(super) fn clean_temp_files(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let old = SystemTime::now() - Duration::from_secs(60);
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else { continue };
        let writer_gone =
            rest.split_once('-').and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok()).is_some_and(|pid| {
                pid > 0
                    && unsafe { libc::kill(pid, 0) } == -1
                    && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            });
        let stale = || e.metadata().is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t < old));
        if writer_gone || stale() {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    type Hook = Box<dyn FnOnce(&Path)>;

    thread_local! {
        /// Runs once right after `ensure_dir`'s `mkdir`: where a racing writer would act.
        pub(in crate::store) static AFTER_MKDIR: Cell<Option<Hook>> = Cell::new(None);
    }

    /// A symlink planted between `mkdir` and the mode change does not lend its target the
    /// store's mode (the old code set the mode by path, through the symlink).
    #[test]
    fn ensure_dir_does_not_follow_a_symlink_planted_after_mkdir() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
        let root = t.path().join("store");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o775)).unwrap();
        let like = fs::metadata(&root).unwrap();
        let target = outside.clone();
        AFTER_MKDIR.with(|h| {
            h.set(Some(Box::new(move |dir: &Path| {
                fs::remove_dir(dir).unwrap();
                std::os::unix::fs::symlink(&target, dir).unwrap();
            })))
        });
        let err = ensure_dir(&root.join("pending"), &like).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::metadata(&outside).unwrap().permissions().mode() & 0o7777, 0o700);
        // Without the race the folder gets its parent's mode, umask or not.
        ensure_dir(&root.join("outbound"), &like).unwrap();
        assert_eq!(fs::metadata(root.join("outbound")).unwrap().permissions().mode() & 0o7777, 0o775);
    }
}
