//! How the engine learns that another process changed the store: an inotify watcher thread
//! sets a flag that `poll` checks and signals an eventfd a driver can put in its event loop
//! (`Engine::wakeup_fd`), so CLI and file decisions apply at once and idle polls cost nothing.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The watcher of one host folder, restarted in a forked child.
pub(super) struct Watcher {
    dir: PathBuf,
    enabled: bool,
    /// A `wake_after` thread is running.
    waiting: Arc<AtomicBool>,
    wake: Arc<Wake>,
    running: Mutex<Option<Running>>,
}

/// The inotify watcher, the process that started it and the folder it watches: its thread
/// does not survive a fork (Prosody daemonizes after loading modules), and inotify keeps
/// watching a folder's old inode after the folder is replaced (a backup restored by rename),
/// so either means starting a new one.
struct Running {
    pid: u32,
    ino: Option<u64>,
    _watcher: notify::RecommendedWatcher,
}

/// A flag for `poll` and an eventfd for the driver's event loop.
struct Wake {
    dirty: AtomicBool,
    /// The files changed since the last look; `None`: unknown (look at everything).
    paths: Mutex<Option<HashSet<PathBuf>>>,
    fd: Option<OwnedFd>,
}

/// Changed paths remembered at most between two polls; past that, everything is looked at.
const MAX_PATHS: usize = 4096;

/// What changed since the last poll.
pub(super) enum Changed {
    Nothing,
    /// These files (created, written, removed or renamed).
    Paths(Vec<PathBuf>),
    /// Anything may have: look at everything.
    Unknown,
}

impl Watcher {
    /// Starts watching `dir` when `enabled`; otherwise every check reports a change.
    pub(super) fn new(dir: &Path, enabled: bool) -> Watcher {
        let wake = Arc::new(Wake::new(enabled));
        let running = if enabled { start(dir, wake.clone()) } else { None };
        Watcher {
            dir: dir.to_path_buf(),
            enabled,
            waiting: Arc::new(AtomicBool::new(false)),
            wake,
            running: Mutex::new(running),
        }
    }

    /// The eventfd, when watching.
    pub(super) fn fd(&self) -> Option<i32> {
        self.wake.fd.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// Runs `wait` (e.g. waiting for another process's store lock) on a thread of its own,
    /// then wakes the driver: work deferred because of that process resumes at once instead
    /// of at the driver's next timer. One such thread at a time.
    pub(super) fn wake_after(&self, wait: impl FnOnce() + Send + 'static) {
        if self.waiting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (wake, waiting) = (self.wake.clone(), self.waiting.clone());
        let spawned = std::thread::Builder::new().name("server-trust-lock-wait".into()).spawn(move || {
            wait();
            waiting.store(false, Ordering::Release);
            wake.signal();
        });
        if spawned.is_err() {
            self.waiting.store(false, Ordering::Release);
        }
    }

    /// Makes the next [`Watcher::take_change`] report a change (work left for the next poll).
    pub(super) fn mark_dirty(&self) {
        self.wake.set_unknown();
    }

    /// True when the store may have changed since the last call (always true when not
    /// watching). Resets the eventfd so a level-triggered loop does not spin.
    pub(super) fn take_change(&self) -> bool {
        let watching = {
            let mut w = self.running.lock();
            if w.as_ref().is_some_and(|w| w.pid != std::process::id()) {
                // Forked: the watcher's thread stayed in the parent. Dropping it here would
                // wait for that thread forever, so leak it and start a new one.
                std::mem::forget(w.take());
                *w = start(&self.dir, self.wake.clone());
                self.wake.set_unknown();
            } else if self.enabled && w.as_ref().is_none_or(|w| w.ino != inode(&self.dir)) {
                // Replaced folder (or none could be watched so far): one stat per poll
                // notices it; watch the new one and look.
                *w = start(&self.dir, self.wake.clone());
                self.wake.set_unknown();
            }
            w.is_some()
        };
        self.wake.drain();
        !watching || self.wake.dirty.swap(false, Ordering::AcqRel)
    }

    /// [`Watcher::take_change`], saying which files changed when the watcher knows.
    pub(super) fn take_changed(&self) -> Changed {
        if !self.take_change() {
            return Changed::Nothing;
        }
        let watching = self.running.lock().is_some();
        match self.wake.paths.lock().replace(HashSet::new()) {
            Some(paths) if watching => Changed::Paths(paths.into_iter().collect()),
            _ => Changed::Unknown,
        }
    }
}

impl Wake {
    fn new(with_fd: bool) -> Wake {
        let fd = with_fd
            .then(|| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })
            .filter(|&fd| fd >= 0)
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        Wake { dirty: AtomicBool::new(true), paths: Mutex::new(None), fd }
    }

    fn set_unknown(&self) {
        *self.paths.lock() = None;
        self.dirty.store(true, Ordering::Release);
    }

    /// Wakes the driver with no word on what changed.
    fn signal(&self) {
        *self.paths.lock() = None;
        self.wake_up();
    }

    /// Wakes the driver about changes to `paths`.
    fn signal_paths(&self, paths: &[PathBuf]) {
        {
            let mut known = self.paths.lock();
            if let Some(set) = known.as_mut() {
                set.extend(paths.iter().cloned());
                if set.len() > MAX_PATHS {
                    *known = None;
                }
            }
        }
        self.wake_up();
    }

    fn wake_up(&self) {
        self.dirty.store(true, Ordering::Release);
        if let Some(fd) = &self.fd {
            let one: u64 = 1;
            // Non-blocking; a full counter already means "readable", so errors are moot.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn drain(&self) {
        if let Some(fd) = &self.fd {
            let mut n: u64 = 0;
            unsafe { libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        }
    }
}

fn inode(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).ok().map(|m| m.ino())
}

fn start(dir: &Path, wake: Arc<Wake>) -> Option<Running> {
    let ino = inode(dir);
    use notify::Watcher as _;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (our own scans, the CLI's `list`, backups), audit appends and temp files are
        // not decisions; any other change may be.
        let relevant = |p: &PathBuf| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name != "audit.log"
        };
        match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(ev) if ev.paths.is_empty() => wake.signal(), // e.g. a queue overflow: look at all
            Ok(ev) => {
                let paths: Vec<PathBuf> = ev.paths.into_iter().filter(relevant).collect();
                if !paths.is_empty() {
                    wake.signal_paths(&paths);
                }
            }
            Err(_) => wake.signal(),
        }
    })
    .ok()?;
    w.watch(dir, notify::RecursiveMode::Recursive).ok()?;
    Some(Running { pid: std::process::id(), ino, _watcher: w })
}
