//! Child processes of a lab: started in their own process group, always stopped (also when
//! the test process dies without unwinding), and commands that cannot hang a test.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Last `n` lines of a file (or a note that it could not be read), for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Sends `sig` ("TERM", "KILL", ...) to `pid`, ignoring errors (it may be gone already).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops a process we did not spawn (e.g. found by its pidfile): SIGTERM, SIGKILL after
/// `timeout`.
pub fn stop_pid(pid: u32, timeout: Duration) {
    signal(pid, "TERM");
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            signal(pid, "KILL");
            return;
        }
        thread::sleep(POLL);
    }
}

/// Runs `cmd` with stdout/stderr captured; kills it after `timeout` and says so on stderr.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            v
        })
    };
    let out_t = drain(Box::new(child.stdout.take().unwrap()));
    let err_t = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait after kill");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let mut stderr = err_t.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[lab] killed after {timeout:?} timeout\n").as_bytes());
    }
    Output { status, stdout, stderr }
}

/// A `sh` process that SIGKILLs the processes named in `pidfiles` (and their process groups)
/// once this process is gone, e.g. killed by a CI timeout before `Drop` ran. Dropping the
/// watchdog ends it.
pub struct Watchdog(Child);

impl Watchdog {
    /// Starts the watchdog; `None` if `sh` cannot be started (the lab then only relies on Drop).
    /// A pidfile may be written later: it is read when this process is gone.
    pub fn spawn(pidfiles: &[&Path]) -> Option<Watchdog> {
        let script = r#"p=$1; shift
while kill -0 "$p" 2>/dev/null; do sleep 0.5; done
for f in "$@"; do
  if [ -s "$f" ]; then pid=$(cat "$f"); kill -KILL "-$pid" "$pid" 2>/dev/null; fi
done"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("lab-watchdog").arg(std::process::id().to_string());
        cmd.args(pidfiles);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        cmd.spawn().ok().map(Watchdog)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why [`Daemon::wait_ready`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited first.
    Exited(ExitStatus),
    /// Still running but not ready; it has been stopped.
    TimedOut,
}

/// A long-running server process we spawned, stopped on request and reaped. Thread-safe, so
/// a lab can stop its servers in parallel.
pub struct Daemon {
    name: String,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    /// `name` is used in messages ("montague.lit").
    pub fn new(name: &str) -> Daemon {
        Daemon { name: name.to_owned(), child: Mutex::new(None) }
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns `cmd` in its own process group (a signal to the test's group does not reach
    /// it twice, and the watchdog can kill the group) with stdout and stderr appended to
    /// `console`. Panics if it is already running or cannot be spawned.
    pub fn spawn(&self, mut cmd: Command, console: &Path) {
        let mut guard = self.child();
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            panic!("{} is already running (pid {})", self.name, child.id());
        }
        let out = OpenOptions::new().create(true).append(true).open(console).expect("open console log");
        let err = out.try_clone().expect("clone console log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        *guard = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {} ({cmd:?}): {e}", self.name)));
    }

    /// Waits until `ready()` holds, polling every 20 ms. On timeout the process is stopped.
    pub fn wait_ready(&self, timeout: Duration, ready: impl Fn() -> bool) -> Result<(), NotReady> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            {
                let mut guard = self.child();
                match guard.as_mut().map(Child::try_wait) {
                    Some(Ok(None)) => {}
                    Some(Ok(Some(st))) => {
                        *guard = None;
                        return Err(NotReady::Exited(st));
                    }
                    _ => panic!("{} was not spawned", self.name),
                }
            }
            if started.elapsed() > timeout {
                self.stop(Duration::from_secs(10));
                return Err(NotReady::TimedOut);
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; reaps it. Returns false if it was not running.
    pub fn stop(&self, timeout: Duration) -> bool {
        let Some(mut child) = self.child().take() else { return false };
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        signal(child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("[lab] {} did not stop within {timeout:?}, SIGKILL", self.name);
                    let _ = child.kill();
                    let _ = child.wait();
                    return true;
                }
                Ok(None) => thread::sleep(POLL),
            }
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// OS pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.child();
        let c = guard.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// At the end of a lab: keeps its folder (and says where) when the test failed, when `also`
/// (e.g. a test asked for it), or with `LAB_KEEP=1`; otherwise the temp dir is deleted.
pub fn keep_lab_dir_if_failed(tmp: &mut Option<tempfile::TempDir>, also: bool, label: &str) {
    let keep = std::thread::panicking() || also || std::env::var_os("LAB_KEEP").is_some_and(|v| v != "0");
    if keep && let Some(tmp) = tmp.take() {
        eprintln!("[{label}] kept lab directory {}", tmp.keep().display());
    }
}
