//! One lab Prosody server: start, stop, admin shell, and what it recorded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::TrustAdmin;
use crate::lua::lua_long_str;
use crate::process::{Daemon, NotReady, alive, run_with_timeout, stop_pid, tail};
use crate::stanza::{Stanza, read_records};

/// How long to wait for one server to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop()` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for one `prosodyctl shell` call.
pub const SHELL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
/// The start timeout in force, in ms (0: [`START_TIMEOUT`]); see [`Server::set_start_timeout`].
static START_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Server {
    /// "montague.lit" / "capulet.lit"
    pub host: String,
    /// Loopback address the server binds (s2s 5269, c2s 5222).
    pub ip: String,
    /// `<lab>/<name>/prosody.cfg.lua`
    pub cfg: PathBuf,
    /// `<lab>/<name>/data` (Prosody data_path; admin socket, lab-received.jsonl, lab-ready)
    pub data: PathBuf,
    /// `<data>/server_trust` (value of server_trust_store)
    pub store: PathBuf,
    /// `<lab>/<name>/prosody.log` (debug log)
    pub log: PathBuf,
    /// `<lab>/<name>` (server directory)
    pub dir: PathBuf,
    /// `<lab>/<name>/console.log` (stdout/stderr of the process, info and above)
    pub console_log: PathBuf,
    /// `<lab>/<name>/prosody.pid`
    pub pidfile: PathBuf,
    /// `<data>/lab-received.jsonl`
    pub record: PathBuf,
    /// Where `prosody` and `prosodyctl` come from: `None` for Debian's (0.12), else a prefix
    /// such as the Prosody 13 build's.
    pub prefix: Option<PathBuf>,
    /// Run as this (uid, gid) instead of root, like Debian's `prosody` user.
    pub run_as: Option<(u32, u32)>,
    process: Daemon,
}

impl Server {
    pub(super) fn new(lab: &Path, name: &str, host: &str, ip: &str) -> Server {
        let dir = lab.join(name);
        let data = dir.join("data");
        Server {
            host: host.to_owned(),
            ip: ip.to_owned(),
            cfg: dir.join("prosody.cfg.lua"),
            store: data.join("server_trust"),
            log: dir.join("prosody.log"),
            console_log: dir.join("console.log"),
            pidfile: dir.join("prosody.pid"),
            record: data.join("lab-received.jsonl"),
            data,
            dir,
            prefix: None,
            run_as: None,
            process: Daemon::new(host),
        }
    }

    fn ready_file(&self) -> PathBuf {
        self.data.join("lab-ready")
    }

    fn socket(&self) -> PathBuf {
        self.data.join("prosody.sock")
    }

    /// Starts the server (`prosody --config CFG -F`) and waits (<= 10 s) until "server-started"
    /// fired (`<data>/lab-ready`) and the admin socket exists. Panics with the console output
    /// if it exits, does not become ready, or a module failed to load.
    pub fn start(&self) {
        fs::create_dir_all(&self.data).unwrap();
        let _ = fs::remove_file(self.ready_file());
        let console_start = fs::metadata(&self.console_log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(self.program("prosody"));
        cmd.arg("--config").arg(&self.cfg).arg("-F").current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid); // std also drops root's supplementary groups
        }
        self.process.spawn(cmd, &self.console_log);
        let ready = || self.ready_file().exists() && self.socket().exists();
        let timeout = Server::start_timeout();
        let why = match self.process.wait_ready(timeout, ready) {
            Ok(()) => return self.check_module_errors(console_start),
            Err(NotReady::Exited(st)) => format!("exited during startup ({st})"),
            Err(NotReady::TimedOut) => format!("not ready after {timeout:?}"),
        };
        panic!(
            "prosody for {} {why}.\n--- console.log ---\n{}\n--- prosody.log (tail) ---\n{}",
            self.host,
            tail(&self.console_log, 40),
            tail(&self.log, 40)
        );
    }

    /// How long [`Server::start`] waits for a server of this process to become ready:
    /// [`START_TIMEOUT`] unless [`Server::set_start_timeout`] said otherwise.
    pub fn start_timeout() -> Duration {
        match START_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => START_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }

    /// Lets every later start in this process wait up to `timeout`: a server with a thousand
    /// VirtualHosts (the flood bench) needs 20-40 s to load them all.
    pub fn set_start_timeout(timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        START_TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops the server: SIGTERM, SIGKILL after 10 s. No-op if not running.
    pub fn stop(&self) {
        // Not started by us (or already reaped): fall back to the pidfile, if it names our
        // config (prosody -F does not fork, so it is the same process otherwise).
        if !self.process.stop(STOP_TIMEOUT)
            && let Some(pid) = self.pid_from_file()
            && alive(pid)
            && self.pid_is_ours(pid)
        {
            stop_pid(pid, STOP_TIMEOUT);
        }
        let _ = fs::remove_file(&self.pidfile);
        let _ = fs::remove_file(self.ready_file());
    }

    /// Prosody only logs an error when a module fails to load and starts anyway: turn that
    /// into a failure (e.g. a syntax error in mod_server_trust.lua).
    fn check_module_errors(&self, console_start: u64) {
        let Ok(bytes) = fs::read(&self.console_log) else {
            return;
        };
        let start = (console_start as usize).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Unable to load module") || l.contains("Error initializing module"))
            .collect();
        if !bad.is_empty() {
            self.stop();
            panic!(
                "{}: module errors during startup:\n{}\n--- console.log ---\n{}",
                self.host,
                bad.join("\n"),
                tail(&self.console_log, 40)
            );
        }
    }

    fn pid_from_file(&self) -> Option<u32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    fn pid_is_ours(&self, pid: u32) -> bool {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(self.cfg.to_str().unwrap_or("\u{0}")))
            .unwrap_or(false)
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// OS pid of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `prosodyctl --config CFG shell <cmd>` (cmd is ONE argument, i.e. one line of shell
    /// syntax such as `s2s:show()` or `module:reload("server_trust", "capulet.lit")`).
    /// Killed after 20 s. Exit status 0 for "OK:"/"Result:", 1 for errors.
    pub fn shell(&self, cmd: &str) -> Output {
        self.prosodyctl(&["shell", cmd])
    }

    /// `prosodyctl --config CFG ARGS...` of this server's Prosody, killed after 20 s.
    pub fn prosodyctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.program("prosodyctl"));
        c.arg("--config").arg(&self.cfg).args(args).current_dir(&self.dir);
        run_with_timeout(c, SHELL_TIMEOUT)
    }

    /// `prosody` or `prosodyctl` of this server's Prosody.
    fn program(&self, name: &str) -> PathBuf {
        match &self.prefix {
            Some(p) => p.join("bin").join(name),
            None => PathBuf::from(name),
        }
    }

    /// Like `shell`, but panics unless it succeeded; returns stdout.
    pub fn shell_ok(&self, cmd: &str) -> String {
        let out = self.shell(cmd);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "{}: shell {cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout
    }

    /// Makes this server post `xml` as one of its local hosts (`lab:send`). The stanza's `from`
    /// must be this server's host or a JID at it. Panics with stderr on failure.
    pub fn inject(&self, xml: &str) {
        self.shell_ok(&format!("lab:send({})", lua_long_str(xml)));
    }

    /// All records of `<data>/lab-received.jsonl` so far (received and, with dir == "out", sent).
    pub fn received(&self) -> Vec<Stanza> {
        read_records(&self.record)
    }

    /// Waits until a record matching `pred` exists (anywhere in the history, so use unique ids),
    /// polling every 20 ms. Panics with a dump of all records and the log tails on timeout.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Stanza) -> bool) -> Stanza {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.received();
            if let Some(s) = all.iter().find(|s| pred(s)) {
                return s.clone();
            }
            if Instant::now() >= deadline {
                panic!("{}: timed out after {timeout:?} waiting for: {what}\n{}", self.host, self.dump(&all));
            }
            thread::sleep(POLL);
        }
    }

    /// Watches for `dur` and panics (with a dump) as soon as any record matches `pred`.
    pub fn assert_none_for(&self, dur: Duration, pred: impl Fn(&Stanza) -> bool, why: &str) {
        let deadline = Instant::now() + dur;
        loop {
            let all = self.received();
            if let Some(s) = all.iter().find(|s| pred(s)) {
                panic!("{}: unexpected stanza ({why}):\n  {}\n{}", self.host, s.summary(), self.dump(&all));
            }
            if Instant::now() >= deadline {
                return;
            }
            thread::sleep(POLL);
        }
    }

    /// Human-readable dump: every record plus the tails of both logs.
    pub fn dump(&self, records: &[Stanza]) -> String {
        let mut s = format!(
            "--- {} ({}) running={} records in {} ({}) ---\n",
            self.host,
            self.ip,
            self.is_running(),
            self.record.display(),
            records.len()
        );
        for r in records {
            s.push_str("  ");
            s.push_str(&r.summary());
            s.push('\n');
        }
        s.push_str(&format!("--- {} console.log (tail) ---\n{}\n", self.host, tail(&self.console_log, 20)));
        s.push_str(&format!("--- {} prosody.log (tail) ---\n{}\n", self.host, tail(&self.log, 60)));
        s
    }

    /// Last `n` lines of the debug log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl TrustAdmin for Server {
    fn store_root(&self) -> &Path {
        &self.store
    }

    fn trust_host(&self) -> &str {
        &self.host
    }

    fn diagnostics(&self) -> String {
        self.log_tail(30)
    }
}
