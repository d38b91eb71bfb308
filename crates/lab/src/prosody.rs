//! Two REAL Prosody servers (Debian's 0.12, or the Prosody 13 build), `montague.lit` and `capulet.lit`, federating over real s2s
//! (STARTTLS + dialback, self-signed certificates) on a private pair of loopback addresses.
//!
//! * Each [`Lab`] has its own temp dir (certs, hosts file, one folder per server) and its own
//!   [`Slot`] of addresses, so labs run in parallel in one process or many.
//! * Name resolution never leaves the box: lua-unbound reads our hosts file and answers the
//!   zone `lit.` locally (SRV lookups get NXDOMAIN at once).
//! * `crates/lab/prosody/mod_lab.lua` (global module) records every presence/message/iq event
//!   of every local host (any origin), every stanza routed to a remote domain (`dir == "out"`)
//!   and the server-trust events as JSON lines in `<data>/lab-received.jsonl`, writes
//!   `<data>/lab-ready` on "server-started", and adds `lab:send(xml)`, `lab:ping()` and
//!   `lab:adhoc(...)` to the admin shell.
//! * Servers run in the foreground (`prosody --config CFG -F`), each in its own process group.
//!   Dropping the lab stops them (SIGTERM, SIGKILL after 10 s); a [`Watchdog`] SIGKILLs them
//!   if the test process dies without unwinding.
//! * When a test panics the lab folder is KEPT and its path printed, for post-mortem; set
//!   `LAB_KEEP=1` to keep it always.

pub(crate) mod config;
mod server;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

pub use server::{SHELL_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT, Server};

use crate::process::{Watchdog, run_with_timeout};
use crate::slots::Slot;

pub const MONTAGUE: &str = "montague.lit";
pub const CAPULET: &str = "capulet.lit";
/// The third server's host, when [`LabOptions::verona`] asks for one.
pub const VERONA: &str = "verona.lit";

/// What the two servers are configured with.
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Load mod_server_trust on both hosts (and set its options in the global section).
    pub server_trust: bool,
    /// Lua config text appended to both global sections.
    pub extra_global: String,
    /// Lua config text appended inside each VirtualHost section.
    pub extra_host: String,
    /// Lua config text appended to one server's global section: (host, text).
    pub extra_global_for: Vec<(String, String)>,
    /// A third server, `verona.lit`, with its own process and address (and the same
    /// options): a stranger, a third buddy.
    pub verona: bool,
    /// More VirtualHosts served by the montague server (same address and certificate), so
    /// tests can send from many distinct server domains.
    pub montague_extra_hosts: Vec<String>,
    /// More plugin folders, after the lab's own and the repository (e.g. a bench module).
    pub plugin_paths: Vec<PathBuf>,
    /// The Lua native module to load instead of the one built for this profile.
    pub native_module: Option<PathBuf>,
    /// Load mod_server_trust.lua from this folder (searched first; the repository is not
    /// searched) and its native module by the default name, `server_trust_lua.so` next to
    /// it, as an admin's installed layout does (e.g. `scripts/install.sh`'s).
    pub module_dir: Option<PathBuf>,
    /// Prosody prefixes for (montague, capulet): `None` runs Debian's Prosody 0.12; see
    /// [`prosody13`] for the Prosody 13 build.
    pub prefixes: [Option<PathBuf>; 2],
    /// Run both servers as this user (e.g. `prosody`), as Debian does, not as root; their
    /// folders are given to it.
    pub run_as: Option<String>,
}

/// The Prosody 13.0.1 build's prefix: `$SERVER_TRUST_PROSODY13`, else built once (about a
/// minute) by `scripts/prosody13.sh` from the vendored tarball. `None` when the tarball is
/// missing.
pub fn prosody13() -> Option<PathBuf> {
    static PREFIX: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("SERVER_TRUST_PROSODY13").filter(|p| !p.is_empty()) {
                return Some(PathBuf::from(p));
            }
            let script = crate::artifacts::workspace_dir().join("scripts/prosody13.sh");
            let out = run_with_timeout(
                {
                    let mut c = Command::new("bash");
                    c.arg(script);
                    c
                },
                Duration::from_secs(600),
            );
            let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !prefix.is_empty()).then(|| PathBuf::from(prefix))
        })
        .clone()
}

/// The (uid, gid) of a system user.
pub fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(!pw.is_null(), "no user {name} on this machine");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Gives `path` and everything under it to (uid, gid).
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), (uid, gid));
        }
    }
}

/// Copies what the servers load from the repository and the build (mod_lab.lua, and unless
/// the installed package is tested mod_server_trust.lua and its native module) into
/// `<dir>/modules`, readable by any user, and returns `opts` loading them from there.
fn copy_modules(dir: &Path, opts: &LabOptions) -> LabOptions {
    use std::os::unix::fs::PermissionsExt;
    let modules = dir.join("modules");
    fs::create_dir(&modules).unwrap();
    fs::set_permissions(&modules, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = modules.join(name);
        fs::copy(from, &to)
            .unwrap_or_else(|e| panic!("[lab] cannot copy {} to {}: {e}", from.display(), to.display()));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
    };
    copy(&crate::artifacts::lab_dir().join("prosody/mod_lab.lua"), "mod_lab.lua");
    let source = opts.module_dir.clone().unwrap_or_else(|| crate::artifacts::workspace_dir().to_path_buf());
    if opts.module_dir.is_some() || opts.native_module.is_some() || !crate::artifacts::installed() {
        copy(&source.join("mod_server_trust.lua"), "mod_server_trust.lua");
        let native = match (&opts.native_module, &opts.module_dir) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => d.join("server_trust_lua.so"),
            (None, None) => crate::artifacts::lua_module().to_path_buf(),
        };
        copy(&native, "server_trust_lua.so");
    }
    LabOptions { module_dir: Some(modules), native_module: None, ..opts.clone() }
}

/// Two running servers; dropping it stops them.
pub struct Lab {
    /// The lab's temp dir (certs/, hosts, montague/, capulet/). Deleted on drop unless the
    /// test panicked or `LAB_KEEP=1`.
    pub dir: PathBuf,
    pub montague: Server,
    pub capulet: Server,
    /// The third server, with [`LabOptions::verona`].
    pub verona: Option<Server>,
    tmp: Option<tempfile::TempDir>,
    _watchdog: Option<Watchdog>,
    _slot: Slot,
    _slot2: Option<Slot>,
}

impl Lab {
    /// Both servers with mod_server_trust and default options.
    pub fn server_trust() -> Lab {
        Lab::with_server_trust(LabOptions::default())
    }

    /// Both servers with mod_server_trust and `opts`.
    pub fn with_server_trust(opts: LabOptions) -> Lab {
        Lab::start(LabOptions { server_trust: true, ..opts })
    }

    /// Creates certs, hosts file and configs in a fresh temp dir, starts both servers and
    /// waits until both are ready. Panics (after stopping whatever was started) on failure.
    pub fn start(opts: LabOptions) -> Lab {
        let tmp = tempfile::Builder::new().prefix("server-trust-lab-").tempdir().expect("create lab tempdir");
        let dir = tmp.path().to_path_buf();
        let slot = Slot::reserve(&[5269, 5222]);

        let slot2 = opts.verona.then(|| Slot::reserve(&[5269, 5222]));
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).unwrap();
        thread::scope(|s| {
            s.spawn(|| crate::certs::self_signed(&certs, MONTAGUE));
            s.spawn(|| crate::certs::self_signed(&certs, CAPULET));
            if opts.verona {
                s.spawn(|| crate::certs::self_signed(&certs, VERONA));
            }
        });
        let hosts_file = dir.join("hosts");
        let extra: String = opts.montague_extra_hosts.iter().map(|h| format!("{} {h}\n", slot.a)).collect();
        let third = slot2.as_ref().map(|s2| format!("{} {VERONA}\n", s2.a)).unwrap_or_default();
        fs::write(&hosts_file, format!("{} {MONTAGUE}\n{} {CAPULET}\n{third}{extra}", slot.a, slot.b))
            .unwrap();

        let mut montague = Server::new(&dir, "montague", MONTAGUE, &slot.a);
        let mut capulet = Server::new(&dir, "capulet", CAPULET, &slot.b);
        let mut verona = slot2.as_ref().map(|s2| Server::new(&dir, "verona", VERONA, &s2.a));
        let run_as = opts.run_as.as_deref().map(user_ids);
        // SERVER_TRUST_LAB_PROSODY=13 runs every lab that does not pick its versions on the
        // Prosody 13 build: the whole suite against 13 (the test command does one such run).
        let mut prefixes = opts.prefixes.clone();
        if prefixes == [None, None] && std::env::var_os("SERVER_TRUST_LAB_PROSODY").is_some_and(|v| v == "13")
        {
            let p13 = prosody13().expect("SERVER_TRUST_LAB_PROSODY=13 but the Prosody 13 build is missing");
            prefixes = [Some(p13.clone()), Some(p13)];
        }
        // A server running as another user may not reach the repository or the build (a
        // checkout under a 0700 home, a `mktemp -d` CARGO_TARGET_DIR): it gets its own copies.
        let opts = if run_as.is_some() { copy_modules(&dir, &opts) } else { opts };
        let third_prefix = prefixes[1].clone();
        let mut all: Vec<(&mut Server, &Option<PathBuf>)> =
            vec![(&mut montague, &prefixes[0]), (&mut capulet, &prefixes[1])];
        if let Some(v) = verona.as_mut() {
            all.push((v, &third_prefix));
        }
        for (srv, prefix) in all {
            srv.prefix = prefix.clone();
            srv.run_as = run_as;
            fs::create_dir_all(&srv.data).unwrap();
            let mut text = config::config_text(srv, &opts, &certs, &hosts_file);
            for (h, extra) in &opts.extra_global_for {
                if *h == srv.host {
                    text.push_str(extra);
                    text.push('\n');
                }
            }
            fs::write(&srv.cfg, text).unwrap();
        }
        if let Some(ids) = run_as {
            // The unprivileged server must reach its folders and certificates.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            for p in [&certs, &montague.dir, &capulet.dir].into_iter().chain(verona.as_ref().map(|v| &v.dir))
            {
                chown_tree(p, ids);
            }
        }

        let mut pidfiles: Vec<&Path> = vec![&montague.pidfile, &capulet.pidfile];
        pidfiles.extend(verona.as_ref().map(|v| v.pidfile.as_path()));
        let watchdog = Watchdog::spawn(&pidfiles);
        let lab = Lab {
            dir,
            montague,
            capulet,
            verona,
            tmp: Some(tmp),
            _watchdog: watchdog,
            _slot: slot,
            _slot2: slot2,
        };
        // From here on `lab` is dropped on panic, which stops whatever was started.
        thread::scope(|s| {
            let mut started = vec![s.spawn(|| lab.montague.start()), s.spawn(|| lab.capulet.start())];
            if let Some(v) = &lab.verona {
                started.push(s.spawn(|| v.start()));
            }
            // Re-raise the original panic (message) rather than "a scoped thread panicked".
            for h in started {
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

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop both in parallel (a graceful s2s close takes a moment each); the watchdog and
        // the slot are released after this, as fields.
        thread::scope(|s| {
            s.spawn(|| self.montague.stop());
            s.spawn(|| self.capulet.stop());
            if let Some(v) = &self.verona {
                s.spawn(|| v.stop());
            }
        });
        crate::process::keep_lab_dir_if_failed(&mut self.tmp, false, "prosody lab");
    }
}
