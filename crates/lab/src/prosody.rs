//! Two REAL Prosody 0.12 servers, `montague.lit` and `capulet.lit`, federating over real s2s
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

mod config;
mod server;

use std::fs;
use std::path::PathBuf;
use std::thread;

pub use server::{SHELL_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT, Server};

use crate::certs;
use crate::process::Watchdog;
use crate::slots::Slot;

pub const MONTAGUE: &str = "montague.lit";
pub const CAPULET: &str = "capulet.lit";

/// What the two servers are configured with.
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
    /// More plugin folders, after the lab's own and the repository (e.g. a bench module).
    pub plugin_paths: Vec<PathBuf>,
    /// The Lua native module to load instead of the one built for this profile.
    pub native_module: Option<PathBuf>,
}

/// Two running servers; dropping it stops them.
pub struct Lab {
    /// The lab's temp dir (certs/, hosts, montague/, capulet/). Deleted on drop unless the
    /// test panicked or `LAB_KEEP=1`.
    pub dir: PathBuf,
    pub montague: Server,
    pub capulet: Server,
    tmp: Option<tempfile::TempDir>,
    _watchdog: Option<Watchdog>,
    _slot: Slot,
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

        let certs = dir.join("certs");
        fs::create_dir_all(&certs).unwrap();
        thread::scope(|s| {
            s.spawn(|| certs::self_signed(&certs, MONTAGUE));
            s.spawn(|| certs::self_signed(&certs, CAPULET));
        });
        let hosts_file = dir.join("hosts");
        let extra: String = opts.montague_extra_hosts.iter().map(|h| format!("{} {h}\n", slot.a)).collect();
        fs::write(&hosts_file, format!("{} {MONTAGUE}\n{} {CAPULET}\n{extra}", slot.a, slot.b)).unwrap();

        let montague = Server::new(&dir, "montague", MONTAGUE, &slot.a);
        let capulet = Server::new(&dir, "capulet", CAPULET, &slot.b);
        for srv in [&montague, &capulet] {
            fs::create_dir_all(&srv.data).unwrap();
            fs::write(&srv.cfg, config::config_text(srv, &opts, &certs, &hosts_file)).unwrap();
        }

        let watchdog = Watchdog::spawn(&[&montague.pidfile, &capulet.pidfile]);
        let lab = Lab { dir, montague, capulet, tmp: Some(tmp), _watchdog: watchdog, _slot: slot };
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

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop both in parallel (a graceful s2s close takes a moment each); the watchdog and
        // the slot are released after this, as fields.
        thread::scope(|s| {
            s.spawn(|| self.montague.stop());
            s.spawn(|| self.capulet.stop());
        });
        let keep = thread::panicking() || std::env::var_os("LAB_KEEP").is_some_and(|v| v != "0");
        if keep && let Some(tmp) = self.tmp.take() {
            eprintln!("[prosody lab] kept lab directory {}", tmp.keep().display());
        }
    }
}
