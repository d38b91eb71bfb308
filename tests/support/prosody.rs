//! Integration-test harness: two REAL Prosody 0.12 servers (`montague.lit`, `capulet.lit`)
//! federating over real s2s (STARTTLS + dialback, self-signed certs) on loopback.
//!
//! ```ignore
//! mod support;
//! use support::prosody::{Lab, LabOptions};
//! let lab = Lab::start(LabOptions::default());
//! lab.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='x1'/>");
//! let s = lab.capulet.wait_for("subscribe from montague", Duration::from_secs(5),
//!     |s| s.id.as_deref() == Some("x1") && s.typ.as_deref() == Some("subscribe"));
//! ```
//!
//! How it works:
//! * Every `Lab` gets its own tempdir (certs, hosts file, two server dirs) and its own PAIR of
//!   loopback addresses `127.0.O.(2k)` / `127.0.O.(2k+1)` with O in 10..=250, so any number of
//!   labs can run in parallel, in one test process or across processes. A slot is reserved with
//!   an flock on `$TMPDIR/server-trust-lab-slots/slot-O-k.lock` (released automatically when the
//!   process dies) and by checking that ports 5269/5222 on both addresses can be bound.
//! * Name resolution never leaves the box: Prosody uses lua-unbound with our own hosts file
//!   (`hoststxt`) and a static local zone `lit.` (SRV lookups answered NXDOMAIN instantly).
//! * `tests/prosody/mod_lab.lua` (global module) records every presence/message/iq event of
//!   every local host (any origin) plus every stanza routed to a remote domain (`dir == "out"`)
//!   as JSON lines in `<data>/lab-received.jsonl`, writes `<data>/lab-ready` on
//!   "server-started", and adds `lab:send(xml)` / `lab:ping()` to the admin shell.
//! * Servers are started in the foreground (`prosody --config CFG -F`) in their own process
//!   group. `Drop for Lab` stops them (SIGTERM, SIGKILL after 10 s). A small watchdog shell
//!   process per lab SIGKILLs them if the test process dies without running destructors.
//! * On panic (failed test) the lab directory is KEPT and its path printed, for post-mortem;
//!   set `LAB_KEEP=1` to keep it always.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for one server to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop()` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for one `prosodyctl shell` call.
pub const SHELL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

pub const MONTAGUE: &str = "montague.lit";
pub const CAPULET: &str = "capulet.lit";

#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Load mod_server_trust on both hosts (and set its options in the global section).
    pub server_trust: bool,
    /// Lua config text appended to both global sections.
    pub extra_global: String,
    /// Lua config text appended inside each VirtualHost section.
    pub extra_host: String,
    /// More VirtualHosts served by the montague server (same address and certificate), so
    /// tests can send from many distinct server domains.
    pub montague_extra_hosts: Vec<String>,
}

pub struct Lab {
    /// The lab's temp directory (certs/, hosts, montague/, capulet/). Deleted on drop unless
    /// the test panicked or `LAB_KEEP=1`.
    pub dir: PathBuf,
    pub montague: Server,
    pub capulet: Server,
    tmp: Option<tempfile::TempDir>,
    watchdog: Option<Child>,
    _slot_lock: File,
}

pub struct Server {
    /// "montague.lit" / "capulet.lit"
    pub host: String,
    /// loopback address the server binds (s2s 5269, c2s 5222)
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
    child: Mutex<Option<Child>>,
}

/// One line of `lab-received.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stanza {
    /// util.time.now() inside Prosody (Unix time, seconds)
    pub t: f64,
    /// local host whose event this was
    pub host: String,
    /// "in": an event for a local host (any origin); "out": routed to a remote domain;
    /// "event": a server-trust event fired by the module (recorded by mod_lab)
    pub dir: String,
    /// "presence/host", "message/bare", ..., or "route/remote" for dir == "out"
    pub event: String,
    /// "s2sin", "s2sout", "local", "c2s", ... ("" if the event had no origin)
    pub origin_type: String,
    pub origin_from_host: Option<String>,
    /// "presence" / "message" / "iq"
    pub name: String,
    pub typ: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    /// text of `<body/>` (messages only)
    pub body: Option<String>,
    pub xml: String,
}

impl Stanza {
    fn from_json(v: &serde_json::Value) -> Option<Stanza> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Some(Stanza {
            t: v.get("t")?.as_f64()?,
            host: s("host")?,
            dir: s("dir").unwrap_or_else(|| "in".into()),
            event: s("event").unwrap_or_default(),
            origin_type: s("origin_type").unwrap_or_default(),
            origin_from_host: s("origin_from_host"),
            name: s("name")?,
            typ: s("type"),
            from: s("from"),
            to: s("to"),
            id: s("id"),
            body: s("body"),
            xml: s("xml").unwrap_or_default(),
        })
    }

    /// `self.typ == Some(typ)`
    pub fn is_type(&self, typ: &str) -> bool {
        self.typ.as_deref() == Some(typ)
    }

    /// True for stanzas that arrived over s2s (origin s2sin or s2sout/bidi).
    pub fn via_s2s(&self) -> bool {
        self.dir == "in" && (self.origin_type == "s2sin" || self.origin_type == "s2sout")
    }

    /// One-line summary used in panic dumps.
    pub fn summary(&self) -> String {
        let mut xml = self.xml.clone();
        if xml.len() > 400 {
            let mut cut = 400;
            while !xml.is_char_boundary(cut) {
                cut -= 1;
            }
            xml.truncate(cut);
            xml.push_str("...");
        }
        format!(
            "t={:.3} {} {} [{} origin={}{}] {} type={} from={} to={} id={}{}  {}",
            self.t,
            self.dir,
            self.host,
            self.event,
            self.origin_type,
            self.origin_from_host.as_deref().map(|h| format!("({h})")).unwrap_or_default(),
            self.name,
            self.typ.as_deref().unwrap_or("-"),
            self.from.as_deref().unwrap_or("-"),
            self.to.as_deref().unwrap_or("-"),
            self.id.as_deref().unwrap_or("-"),
            self.body.as_deref().map(|b| format!(" body={b:?}")).unwrap_or_default(),
            xml
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The repository root (this crate's manifest dir).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target_dir>/debug`: `$CARGO_TARGET_DIR/debug` if set, else `<repo>/target/debug`.
pub fn target_debug_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            let d = if d.is_absolute() { d } else { repo_dir().join(d) };
            d.join("debug")
        }
        _ => repo_dir().join("target").join("debug"),
    }
}

/// Path of the native Lua module loaded by mod_server_trust (server_trust_native_path).
pub fn native_lib_path() -> PathBuf {
    target_debug_dir().join("libserver_trust_lua.so")
}

/// The `server-trust` CLI: cargo's own path in tests and benches, else `<target>/debug`.
pub fn cli_path() -> PathBuf {
    option_env!("CARGO_BIN_EXE_server-trust")
        .map_or_else(|| target_debug_dir().join("server-trust"), PathBuf::from)
}

/// A presence of `typ` ("available" = no type) from `from`, received over s2s.
pub fn presence_from<'a>(from: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    move |s: &Stanza| {
        s.via_s2s()
            && s.name == "presence"
            && s.from.as_deref() == Some(from)
            && match typ {
                "available" => s.typ.is_none(),
                t => s.is_type(t),
            }
    }
}

// ---------------------------------------------------------------------------------------------
// Small utilities

fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lua_path(p: &Path) -> String {
    lua_str(p.to_str().expect("lab paths must be UTF-8"))
}

/// A Lua long-bracket string `[==[...]==]` that cannot be terminated early by `s`.
fn lua_long_str(s: &str) -> String {
    let mut level = 0;
    loop {
        let eq = "=".repeat(level);
        if !s.contains(&format!("]{eq}]")) && !s.ends_with(&format!("]{eq}")) {
            return format!("[{eq}[{s}]{eq}]");
        }
        level += 1;
    }
}

/// Last `n` lines of a file (or a note that it could not be read).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Run a command with a timeout, capturing stdout/stderr. On timeout the process is killed and
/// a note is appended to stderr.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
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
        stderr.extend_from_slice(format!("\n[harness] killed after {timeout:?} timeout\n").as_bytes());
    }
    Output { status, stdout, stderr }
}

// ---------------------------------------------------------------------------------------------
// Loopback address slots

const OCTET_MIN: u32 = 10;
const OCTET_MAX: u32 = 250;
const PAIRS_PER_OCTET: u32 = 126; // k = 1..=126 -> .2k / .2k+1 = .2 ... .253

fn port_free(ip: &str, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// Reserve a unique pair of loopback addresses: (montague ip, capulet ip, lock held while alive).
fn allocate_slot() -> (String, String, File) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let lock_dir = std::env::temp_dir().join("server-trust-lab-slots");
    fs::create_dir_all(&lock_dir).expect("create slot lock dir");
    let n = (OCTET_MAX - OCTET_MIN + 1) * PAIRS_PER_OCTET;
    // Different processes start at different (pid-derived) places in the ring.
    let base = std::process::id().wrapping_mul(2_654_435_761) % n;
    for _ in 0..4000 {
        let idx = (base + COUNTER.fetch_add(1, Ordering::Relaxed)) % n;
        let octet = OCTET_MIN + idx / PAIRS_PER_OCTET;
        let k = 1 + idx % PAIRS_PER_OCTET;
        let (a, b) = (format!("127.0.{octet}.{}", 2 * k), format!("127.0.{octet}.{}", 2 * k + 1));
        debug_assert!(a.starts_with("127.") && b.starts_with("127."));
        let lock_path = lock_dir.join(format!("slot-{octet}-{k}.lock"));
        let Ok(lock) = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        if [5269u16, 5222].iter().all(|&p| port_free(&a, p) && port_free(&b, p)) {
            return (a, b, lock);
        }
    }
    panic!("could not find a free pair of loopback addresses for a Prosody lab");
}

// ---------------------------------------------------------------------------------------------
// Lab

fn gen_cert(certs: &Path, host: &str) {
    let key = certs.join(format!("{host}.key"));
    let crt = certs.join(format!("{host}.crt"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "3650", "-subj"])
        .arg(format!("/CN={host}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{host}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt);
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "openssl failed for {host}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    /// A lab with mod_server_trust loaded on both servers; fails early with a clear message
    /// when the Lua bridge was not built.
    pub fn with_server_trust(opts: LabOptions) -> Lab {
        assert!(
            native_lib_path().exists(),
            "{} is missing: run `cargo build --workspace` first (the README test command does)",
            native_lib_path().display()
        );
        Lab::start(LabOptions { server_trust: true, ..opts })
    }

    /// Create certs, hosts file and configs in a fresh tempdir, start both servers and wait
    /// until both are ready. Panics (after stopping whatever was started) on failure.
    pub fn start(opts: LabOptions) -> Lab {
        let tmp = tempfile::Builder::new().prefix("server-trust-lab-").tempdir().expect("create lab tempdir");
        let dir = tmp.path().to_path_buf();
        let (ip_m, ip_c, slot_lock) = allocate_slot();

        let certs = dir.join("certs");
        fs::create_dir_all(&certs).unwrap();
        thread::scope(|s| {
            s.spawn(|| gen_cert(&certs, MONTAGUE));
            s.spawn(|| gen_cert(&certs, CAPULET));
        });
        let hosts_file = dir.join("hosts");
        fs::write(
            &hosts_file,
            format!(
                "{ip_m} {MONTAGUE}\n{ip_c} {CAPULET}\n{}",
                opts.montague_extra_hosts.iter().map(|h| format!("{ip_m} {h}\n")).collect::<String>()
            ),
        )
        .unwrap();

        let montague = Server::new(&dir, "montague", MONTAGUE, &ip_m);
        let capulet = Server::new(&dir, "capulet", CAPULET, &ip_c);
        for srv in [&montague, &capulet] {
            fs::create_dir_all(&srv.data).unwrap();
            fs::write(&srv.cfg, srv.config_text(&opts, &certs, &hosts_file)).unwrap();
        }

        let watchdog = spawn_watchdog(&[&montague.pidfile, &capulet.pidfile]);
        let lab = Lab { dir, montague, capulet, tmp: Some(tmp), watchdog, _slot_lock: slot_lock };
        // From here on `lab` is dropped on panic, which stops whatever was started.
        thread::scope(|s| {
            let m = s.spawn(|| lab.montague.start());
            let c = s.spawn(|| lab.capulet.start());
            // Re-raise the original panic (message) rather than "a scoped thread panicked".
            for h in [m, c] {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
        lab
    }

    pub fn servers(&self) -> [&Server; 2] {
        [&self.montague, &self.capulet]
    }
}

/// A `sh` process that SIGKILLs the servers (by pidfile) if this test process disappears
/// without running `Drop` (e.g. killed by a CI timeout). Killed by `Drop for Lab`.
fn spawn_watchdog(pidfiles: &[&Path]) -> Option<Child> {
    let script = r#"p=$1; shift
while kill -0 "$p" 2>/dev/null; do sleep 0.5; done
for f in "$@"; do
  if [ -s "$f" ]; then kill -KILL "$(cat "$f")" 2>/dev/null; fi
done"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("lab-watchdog").arg(std::process::id().to_string());
    for p in pidfiles {
        cmd.arg(p);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    cmd.spawn().ok()
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop both in parallel (graceful s2s close takes a moment each).
        thread::scope(|s| {
            s.spawn(|| self.montague.stop());
            s.spawn(|| self.capulet.stop());
        });
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let keep = thread::panicking() || std::env::var_os("LAB_KEEP").is_some_and(|v| v != "0");
        if keep && let Some(tmp) = self.tmp.take() {
            let path = tmp.keep();
            eprintln!("[prosody lab] kept lab directory {}", path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// The admin's view of a server: the `server-trust` CLI on its store.
impl Server {
    /// Runs `server-trust --store <store> --host <host> ARGS`; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(cli_path())
            .arg("--store")
            .arg(&self.store)
            .arg("--host")
            .arg(&self.host)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} (cargo build --workspace first): {e}", cli_path().display()));
        assert!(
            out.status.success(),
            "server-trust {args:?} on {} failed: {}{}",
            self.host,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The CLI's stdout.
    pub fn cli_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.cli(args).stdout).unwrap()
    }

    /// `peer`'s subscription state per `server-trust --json list` ("absent" when not listed).
    pub fn state(&self, peer: &str) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.cli(&["--json", "list"]).stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["peer"] == peer)
            .map_or("absent".into(), |e| e["state"].as_str().unwrap().to_string())
    }

    /// Waits until `peer` is in state `want`; panics with the log tail after `timeout`.
    pub fn wait_state(&self, peer: &str, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let now = self.state(peer);
            if now == want {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "{}: {peer} stayed {now}, expected {want}\n{}",
                self.host,
                self.log_tail(30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pending-request file `peer` would have in this server's store.
    pub fn pending_file(&self, peer: &str) -> PathBuf {
        self.store.join(&self.host).join("pending").join(format!("{peer}.toml"))
    }
}

impl Server {
    fn new(lab: &Path, name: &str, host: &str, ip: &str) -> Server {
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
            child: Mutex::new(None),
        }
    }

    fn config_text(&self, opts: &LabOptions, certs: &Path, hosts_file: &Path) -> String {
        let repo = repo_dir();
        let ip = lua_str(&self.ip);
        let mut c = String::new();
        c.push_str(&format!(
            r#"-- Generated by tests/support/prosody.rs (test lab instance for {host}). Do not edit.
run_as_root = true
pidfile = {pidfile}
data_path = {data}
plugin_paths = {{ {plug_tests}, {plug_repo} }}
certificates = {certs}

log = {{
	debug = {log};
	{{ levels = {{ min = "info" }}, to = "console" }};
}}

use_ipv6 = false
interfaces = {{ {ip} }}
local_interfaces = {{ {ip} }}

-- lua-unbound: our own hosts file, no upstream DNS; "lit." answered locally (SRV -> NXDOMAIN)
unbound = {{
	resolvconf = false;
	hoststxt = {hosts};
	forward = "127.0.0.1";
	options = {{ ["local-zone:"] = "lit. static" }};
}}

s2s_require_encryption = true
s2s_secure_auth = false
s2s_timeout = 10
s2s_close_timeout = 0.2
-- stop in ~0.5 s even with live s2s (default waits ~1 s for connections to close)
network_settings = {{ shutdown_deadline = 0.5 }}

admins = {{ {admin} }}

modules_enabled = {{
	"tls";
	"dialback";
	"disco";
	"admin_shell";
	"lab";
}}
"#,
            host = self.host,
            pidfile = lua_path(&self.pidfile),
            data = lua_path(&self.data),
            plug_tests = lua_path(&repo.join("tests").join("prosody")),
            plug_repo = lua_path(&repo),
            certs = lua_path(certs),
            log = lua_path(&self.log),
            hosts = lua_path(hosts_file),
            admin = lua_str(&format!("admin@{}", self.host)),
        ));
        if opts.server_trust {
            c.push_str(&format!(
                "\nserver_trust_store = {}\nserver_trust_native_path = {}\nserver_trust_poll_interval = 0.1\n",
                lua_path(&self.store),
                lua_path(&native_lib_path()),
            ));
        }
        if !opts.extra_global.is_empty() {
            c.push_str("\n-- extra_global\n");
            c.push_str(&opts.extra_global);
            c.push('\n');
        }
        c.push_str(&format!(
            "\nVirtualHost {host}\n\tssl = {{\n\t\tcertificate = {crt};\n\t\tkey = {key};\n\t}}\n",
            host = lua_str(&self.host),
            crt = lua_path(&certs.join(format!("{}.crt", self.host))),
            key = lua_path(&certs.join(format!("{}.key", self.host))),
        ));
        if opts.server_trust {
            c.push_str("\tmodules_enabled = { \"server_trust\" }\n");
        }
        if !opts.extra_host.is_empty() {
            c.push_str("\t-- extra_host\n");
            c.push_str(&opts.extra_host);
            c.push('\n');
        }
        if self.host == MONTAGUE {
            for extra in &opts.montague_extra_hosts {
                c.push_str(&format!(
                    "\nVirtualHost {host}\n\tssl = {{\n\t\tcertificate = {crt};\n\t\tkey = {key};\n\t}}\n",
                    host = lua_str(extra),
                    crt = lua_path(&certs.join(format!("{MONTAGUE}.crt"))),
                    key = lua_path(&certs.join(format!("{MONTAGUE}.key"))),
                ));
            }
        }
        c
    }

    fn ready_file(&self) -> PathBuf {
        self.data.join("lab-ready")
    }

    fn socket(&self) -> PathBuf {
        self.data.join("prosody.sock")
    }

    /// Start the server (`prosody --config CFG -F`) and wait (<= 10 s) until "server-started"
    /// fired (`<data>/lab-ready`) and the admin socket exists. Panics with the console output
    /// if it exits or does not become ready.
    pub fn start(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            panic!("{} is already running (pid {})", self.host, child.id());
        }
        *guard = None;
        fs::create_dir_all(&self.data).unwrap();
        let _ = fs::remove_file(self.ready_file());
        let console =
            OpenOptions::new().create(true).append(true).open(&self.console_log).expect("open console.log");
        let console2 = console.try_clone().unwrap();
        let console_start = fs::metadata(&self.console_log).map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.cfg)
            .arg("-F")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn prosody for {}: {e}", self.host));
        *guard = Some(child);
        let child = guard.as_mut().unwrap();
        loop {
            if self.ready_file().exists() && self.socket().exists() {
                drop(guard);
                self.check_module_errors(console_start);
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                *guard = None;
                panic!(
                    "prosody for {} exited during startup ({st}).\n--- console.log ---\n{}\n--- prosody.log (tail) ---\n{}",
                    self.host,
                    tail(&self.console_log, 40),
                    tail(&self.log, 40)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                drop(guard);
                self.stop();
                panic!(
                    "prosody for {} not ready after {START_TIMEOUT:?}.\n--- console.log ---\n{}\n--- prosody.log (tail) ---\n{}",
                    self.host,
                    tail(&self.console_log, 40),
                    tail(&self.log, 40)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Stop the server: SIGTERM, wait up to 10 s, then SIGKILL. No-op if not running.
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.take() {
            Some(mut child) => {
                if matches!(child.try_wait(), Ok(None)) {
                    // The pidfile names the same process (prosody -F does not fork).
                    send_signal(child.id(), "TERM");
                    let deadline = Instant::now() + STOP_TIMEOUT;
                    loop {
                        match child.try_wait() {
                            Ok(Some(_)) | Err(_) => break,
                            Ok(None) if Instant::now() >= deadline => {
                                eprintln!(
                                    "[prosody lab] {} did not stop within {STOP_TIMEOUT:?}, SIGKILL",
                                    self.host
                                );
                                let _ = child.kill();
                                let _ = child.wait();
                                break;
                            }
                            Ok(None) => thread::sleep(POLL),
                        }
                    }
                }
            }
            None => {
                // Not started by us (or already reaped): fall back to the pidfile.
                if let Some(pid) = self.pid_from_file()
                    && Path::new(&format!("/proc/{pid}")).exists()
                    && self.pid_is_ours(pid)
                {
                    send_signal(pid, "TERM");
                    let deadline = Instant::now() + STOP_TIMEOUT;
                    while Path::new(&format!("/proc/{pid}")).exists() {
                        if Instant::now() >= deadline {
                            send_signal(pid, "KILL");
                            break;
                        }
                        thread::sleep(POLL);
                    }
                }
            }
        }
        let _ = fs::remove_file(&self.pidfile);
        let _ = fs::remove_file(self.ready_file());
    }

    /// Prosody only logs an error when a module fails to load and starts anyway: turn that
    /// into a test failure (e.g. a syntax error in mod_server_trust.lua).
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
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// OS pid of the running server.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let c = guard.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }

    /// `prosodyctl --config CFG shell <cmd>` (cmd is ONE argument, i.e. one line of shell
    /// syntax such as `s2s:show()` or `module:reload("server_trust", "capulet.lit")`).
    /// Killed after 20 s. Exit status 0 for "OK:"/"Result:", 1 for errors.
    pub fn shell(&self, cmd: &str) -> Output {
        let mut c = Command::new("prosodyctl");
        c.arg("--config").arg(&self.cfg).arg("shell").arg(cmd).current_dir(&self.dir);
        run_with_timeout(c, SHELL_TIMEOUT)
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

    /// Make this server post `xml` as one of its local hosts (`lab:send`). The stanza's `from`
    /// must be this server's host or a JID at it. Panics with stderr on failure.
    pub fn inject(&self, xml: &str) {
        self.shell_ok(&format!("lab:send({})", lua_long_str(xml)));
    }

    /// All records of `<data>/lab-received.jsonl` so far (received and, with dir == "out", sent).
    pub fn received(&self) -> Vec<Stanza> {
        let Ok(text) = fs::read_to_string(&self.record) else {
            return Vec::new();
        };
        // Only complete lines (a line may be in the middle of being written).
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Stanza::from_json(&v))
            .collect()
    }

    /// Wait until a record matching `pred` exists (anywhere in the history, so use unique ids),
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

    /// Wait `dur` and panic (with a dump) as soon as any record matches `pred`.
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
