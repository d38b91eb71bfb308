//! A REAL ejabberd 23.01 (`verona.lit`) with `mod_server_trust`, the real
//! `server-trust-sidecar` it talks to, and (optionally) a real Prosody 0.12 (`montague.lit` plus
//! more virtual hosts, all with mod_server_trust) federating with it over real s2s
//! (STARTTLS required + dialback, self-signed certificates) on a private pair of loopback
//! addresses.
//!
//! ```ignore
//! let lab = EjabberdLab::start(EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar")));
//! lab.prosody().admin(MONTAGUE).cli(&["request", VERONA]);
//! lab.sidecar.wait_pending(MONTAGUE, Duration::from_secs(20));
//! ```
//!
//! How it is wired (see `/work/shared/notes/*ejabberd*` for the measurements behind it):
//! * Slot address `a` = Prosody, `b` = ejabberd (s2s 5269, HTTP API 5280, Erlang distribution
//!   5270) and the sidecar (5267). Only 127.0.0.0/8 is used.
//! * ejabberd runs as `erl ... -s ejabberd` in the foreground (no `ejabberdctl start`, which
//!   returns before the node is up and leaves a shell between us and the VM), with a fixed
//!   distribution port on the slot address, `-start_epmd false` (no epmd), and a random
//!   cookie on the command line (no `~/.erlang.cookie`). `ejabberdctl` is used for commands.
//! * ejabberd resolves the Prosody domains without DNS: `-eval inet_db:add_rr(...)` puts
//!   `_xmpp-server._tcp.D SRV 0 0 5269 <a>` into the VM's resolver cache and the inetrc has no
//!   name server, so nothing else is looked up. Prosody reads a hosts file (lua-unbound).
//! * mod_server_trust is compiled with `erlc` from `ejabberd/mod_server_trust/src` into the
//!   lab. `mod_http_api` is locked to `send_stanza` + `send_message` for an OAuth token of
//!   `sidecar@verona.lit` from 127.0.0.1; the sidecar gets that token in a file. With
//!   [`EjabberdOptions::admin_commands`] the module also gets the sidecar's admin token
//!   (`admin_token_file`) and mod_http_api serves the commands tagged `server_trust` to an
//!   OAuth token of `admin@verona.lit` with scope `ejabberd:admin`.
//! * With [`EjabberdOptions::c2s`], real XMPP clients too: c2s on the node's address (5222,
//!   STARTTLS required), the `admin` ACL and `configure` rule of Debian's ejabberd.yml, and
//!   mod_adhoc; [`Ejabberd::register`] makes accounts, [`EjabberdLab::client`] logs in with
//!   slixmpp (`crate::xmpp_client`).
//!   With [`EjabberdOptions::webadmin`] the HTTP listener also serves the WebAdmin on `/admin`,
//!   whose access rule `configure` allows only [`WEBADMIN_ADMIN`] (accounts:
//!   [`Ejabberd::register`]).
//! * [`EjabberdCluster`]: two such nodes joined with `join_cluster` (node 2 on an address of a
//!   second slot, the same distribution port 5270 on each address, `-erl_epmd_port 5270`
//!   everywhere, one cookie) sharing one sidecar, for the cluster test.
//! * [`Ejabberd::eval`] runs Erlang expressions inside a node through a hidden client VM on
//!   the distribution port; [`Ejabberd::load_erl`] compiles and loads a helper module (the
//!   benchmarks' timing loops). [`sidecar_bin`] builds the sidecar for callers outside its
//!   package (the demo, `benches/ejabberd.rs`).
//! * Every process is spawned in its own process group, recorded, stopped by its pid on drop
//!   (also on panic) and SIGKILLed by a [`Watchdog`] if the test process dies first. On panic
//!   the lab folder is kept and its path printed (also with `LAB_KEEP=1`).
//!
//! (Over 400 lines: the instance, its configuration, OAuth, the sidecar, the Prosody peer and
//! the cluster share private start/stop and config helpers; splitting it is future work.)

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::admin::TrustAdmin;
use crate::artifacts;
use crate::lua::{lua_long_str, lua_str};
use crate::process::{Daemon, NotReady, Watchdog, run_with_timeout, tail};
use crate::prosody::MONTAGUE;
use crate::prosody::config;
use crate::slots::Slot;
use crate::stanza::{Stanza, read_records};

/// The ejabberd host of the lab.
pub const VERONA: &str = "verona.lit";
/// The WebAdmin's administrator (access rule `configure`) with [`EjabberdOptions::webadmin`].
pub const WEBADMIN_ADMIN: &str = "webmaster";
/// The sidecar's port on the ejabberd address.
pub const SIDECAR_PORT: u16 = 5267;
/// ejabberd's Erlang distribution port on its address (there is no epmd).
pub const DIST_PORT: u16 = 5270;
/// How long ejabberd may take to come up (first start creates the mnesia schema).
pub const EJABBERD_START_TIMEOUT: Duration = Duration::from_secs(40);
/// Timeout of one `ejabberdctl` command (each starts an Erlang VM, ~0.3-0.5 s).
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// Where Debian's ejabberd 23.01 keeps its code and headers.
const EJABBERD_LIBS: &str = "/usr/lib/x86_64-linux-gnu";
const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";

/// What the lab runs.
#[derive(Clone, Debug)]
pub struct EjabberdOptions {
    /// The `server-trust-sidecar` binary (tests of the sidecar package pass
    /// `env!("CARGO_BIN_EXE_server-trust-sidecar")`).
    pub sidecar_bin: PathBuf,
    /// Start the Prosody peer (montague.lit and `prosody_hosts`).
    pub prosody: bool,
    /// More virtual hosts on the Prosody peer (same address and certificate), each with
    /// mod_server_trust: distinct peer domains for tests sharing one lab.
    pub prosody_hosts: Vec<String>,
    /// mod_server_trust `queue_max` (presences kept while the sidecar is down).
    pub queue_max: u32,
    /// mod_server_trust `federation` ("all" or "buddies").
    pub federation: String,
    /// mod_server_trust `federation_group` (unset when `None`).
    pub federation_group: Option<String>,
    /// Extra TOML lines for the sidecar's `[[host]]` table (engine options, e.g.
    /// `max_pending = 5`).
    pub sidecar_host_toml: String,
    /// The module's admin commands (`server_trust_approve` ...): `admin_token_file` set to a
    /// copy of the sidecar's admin token, and mod_http_api open to the commands tagged
    /// `server_trust` for an OAuth token of `admin@verona.lit` with scope `ejabberd:admin`
    /// ([`Ejabberd::issue_admin_api_token`]).
    pub admin_commands: bool,
    /// c2s for real XMPP clients (the ad-hoc commands' tests): an `ejabberd_c2s` listener on
    /// the node's address, port 5222, STARTTLS required (the lab's verona.lit certificate);
    /// the `admin` ACL (`admin@verona.lit`) and the `configure` rule allowing it, as Debian's
    /// ejabberd.yml has them; `mod_adhoc`; and mod_server_trust's `access_adhoc: configure`.
    /// Accounts are made with [`Ejabberd::register`], clients with [`EjabberdLab::client`].
    pub c2s: bool,
    /// ejabberd's WebAdmin on `/admin` of the HTTP listener ([`Ejabberd::webadmin_url`]), with
    /// the access rule `configure` allowing [`WEBADMIN_ADMIN`] only; create the accounts with
    /// [`Ejabberd::register`].
    pub webadmin: bool,
    /// Both servers publish XEP-0157 contact addresses ([`contact_addresses`]) and answer
    /// XEP-0092 software version queries: each Prosody host with `server_contact_info`
    /// (`contact_info`) and `version`, verona.lit with mod_disco's `server_info` and
    /// mod_version. The evidence an admin sees with a request (issue 15).
    pub contact_info: bool,
}

/// The XEP-0157 addresses a lab server publishes with [`EjabberdOptions::contact_info`], as
/// (kind, address): an admin's JID, an abuse mailbox and a security mailbox.
pub fn contact_addresses(host: &str) -> [(&'static str, String); 3] {
    [
        ("admin", format!("xmpp:admin@{host}")),
        ("abuse", format!("mailto:abuse@{host}")),
        ("security", format!("mailto:security@{host}")),
    ]
}

impl EjabberdOptions {
    /// ejabberd + sidecar + Prosody (montague.lit only), module defaults.
    pub fn new(sidecar_bin: impl Into<PathBuf>) -> EjabberdOptions {
        EjabberdOptions {
            sidecar_bin: sidecar_bin.into(),
            prosody: true,
            prosody_hosts: Vec::new(),
            queue_max: 1000,
            federation: "all".into(),
            federation_group: None,
            sidecar_host_toml: String::new(),
            admin_commands: false,
            c2s: false,
            webadmin: false,
            contact_info: false,
        }
    }
}

/// The running lab; dropping it stops everything.
pub struct EjabberdLab {
    /// The lab's temp dir. Deleted on drop unless a test panicked or `LAB_KEEP=1`.
    pub dir: PathBuf,
    pub ejabberd: Ejabberd,
    pub sidecar: Sidecar,
    /// `None` when started without Prosody.
    pub montague: Option<ProsodyPeer>,
    keep: AtomicBool,
    tmp: Option<tempfile::TempDir>,
    _watchdog: Option<Watchdog>,
    _slot: Slot,
}

/// Panics with a clear message when ejabberd 23.01 is not installed (the tests must fail,
/// not skip): `bash scripts/ejabberd-setup.sh` (as root) installs it.
pub fn require_installed() {
    let missing: Vec<&str> = [
        (EJABBERDCTL, "/usr/sbin/ejabberdctl (package ejabberd)"),
        ("/usr/bin/erlc", "erlc (package erlang-base)"),
    ]
    .iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, what)| *what)
    .collect();
    let headers = ejabberd_lib_dir().is_some() && xmpp_include_dir().is_some();
    let oauth = glob_one("/usr/lib/erlang/lib", "p1_oauth2-").is_some();
    if !missing.is_empty() || !headers || !oauth {
        panic!(
            "ejabberd 23.01 is not installed (missing: {}{}{}). Run `bash scripts/ejabberd-setup.sh` \
             as root (apt: ejabberd erlang-p1-oauth2 erlang-dev), then run the tests again.",
            missing.join(", "),
            if headers { "" } else { " ejabberd/xmpp headers" },
            if oauth { "" } else { " erlang-p1-oauth2" },
        );
    }
}

fn glob_one(dir: &str, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    v.sort();
    v.pop()
}

fn ejabberd_lib_dir() -> Option<PathBuf> {
    glob_one(EJABBERD_LIBS, "ejabberd-").filter(|d| d.join("include/logger.hrl").exists())
}

fn xmpp_include_dir() -> Option<PathBuf> {
    glob_one("/usr/lib/erlang/lib", "p1_xmpp-").map(|d| d.join("include")).filter(|d| d.exists())
}

/// `ejabberd/mod_server_trust` in the repository.
pub fn module_source_dir() -> PathBuf {
    artifacts::workspace_dir().join("ejabberd").join("mod_server_trust")
}

/// Compiles mod_server_trust (all of `src/*.erl`) into `ebin` with the installed headers.
pub fn compile_module(ebin: &Path) {
    let mut srcs: Vec<PathBuf> = fs::read_dir(module_source_dir().join("src"))
        .expect("read ejabberd/mod_server_trust/src")
        .filter_map(|x| x.ok())
        .map(|x| x.path())
        .filter(|p| p.extension().is_some_and(|x| x == "erl"))
        .collect();
    srcs.sort();
    compile_erl(&srcs, ebin);
}

/// Compiles Erlang sources into `ebin` against ejabberd's and xmpp's headers (`-Werror`,
/// `+debug_info`), the way the module is compiled. Panics with erlc's output on failure.
pub fn compile_erl(srcs: &[PathBuf], ebin: &Path) {
    require_installed();
    let e = ejabberd_lib_dir().unwrap();
    fs::create_dir_all(ebin).unwrap();
    let mut cmd = Command::new("erlc");
    cmd.arg("-Werror").arg("-o").arg(ebin).arg("-pa").arg(e.join("ebin"));
    cmd.arg("-I").arg(e.join("include")).arg("-I").arg(xmpp_include_dir().unwrap());
    cmd.arg("+debug_info").args(srcs);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "erlc {srcs:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `server-trust-sidecar` binary for the lab's profile, built by `cargo build -p
/// server-trust-sidecar` once per process (a no-op when it is current). For callers outside
/// the sidecar package (examples, workspace benches), which have no `CARGO_BIN_EXE_` for it.
pub fn sidecar_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target = artifacts::target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--quiet", "-p", "server-trust-sidecar", "--manifest-path"])
            .arg(artifacts::workspace_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .current_dir(artifacts::workspace_dir());
        if artifacts::profile() == "release" {
            cmd.arg("--release");
        }
        eprintln!("[lab] building the sidecar: {cmd:?}");
        let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        let bin = target.join(artifacts::profile()).join("server-trust-sidecar");
        if bin.exists() { Ok(bin) } else { Err(format!("{} missing after the build", bin.display())) }
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A random-enough secret for cookies and tokens (a test lab, not production).
fn secret(tag: &str) -> String {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut x = (n as u64)
        ^ ((std::process::id() as u64) << 32)
        ^ (tag.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = String::from(tag);
    // 40 characters: the sidecar refuses hook and admin tokens under 32.
    for _ in 0..40 {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        s.push(char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(v % 36) as usize]));
    }
    s
}

fn write_secret(path: &Path, value: &str) {
    fs::write(path, format!("{value}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl EjabberdLab {
    /// Writes configs and certs into a fresh temp dir, compiles the module, starts ejabberd,
    /// issues the API token, starts the sidecar and Prosody, and waits until all are ready and
    /// the module has reached the sidecar. Panics (after stopping what was started) on failure.
    pub fn start(opts: EjabberdOptions) -> EjabberdLab {
        require_installed();
        assert!(
            opts.sidecar_bin.exists(),
            "sidecar binary {} does not exist (build server-trust-sidecar)",
            opts.sidecar_bin.display()
        );
        let tmp =
            tempfile::Builder::new().prefix("server-trust-ejabberd-lab-").tempdir().expect("lab tempdir");
        let dir = tmp.path().to_path_buf();
        let slot = Slot::reserve(&[5269, 5222, 5280, SIDECAR_PORT, DIST_PORT]);
        let certs = lab_certs(&dir);
        let prosody_hosts = opts.prosody_host_list();
        let ejabberd = Ejabberd::new(
            &dir,
            "ejabberd",
            &slot.b,
            &slot.b,
            &prosody_hosts.iter().map(|h| (h.clone(), slot.a.clone())).collect::<Vec<_>>(),
            &secret("c"),
        );
        ejabberd.write_config(&opts, &certs);
        compile_module(&ejabberd.ebin);
        let sidecar = Sidecar::new(&dir, &slot.b, &opts.sidecar_bin, &ejabberd);
        sidecar.write_config(&opts);
        if opts.admin_commands {
            write_secret(&ejabberd.admin_token_file, &sidecar.admin_token);
        }
        let montague = opts.prosody.then(|| {
            let p = ProsodyPeer::new(&dir, &slot.a, prosody_hosts.clone());
            p.write_config(&certs, &slot.b, opts.contact_info);
            p
        });

        let mut pidfiles: Vec<&Path> = vec![&ejabberd.pidfile, &sidecar.pidfile];
        if let Some(p) = &montague {
            pidfiles.push(&p.pidfile);
        }
        let watchdog = Watchdog::spawn(&pidfiles);
        let lab = EjabberdLab {
            dir,
            ejabberd,
            sidecar,
            montague,
            keep: AtomicBool::new(false),
            tmp: Some(tmp),
            _watchdog: watchdog,
            _slot: slot,
        };
        // From here on a panic drops `lab`, which stops whatever was started.
        thread::scope(|s| {
            let p = lab.montague.as_ref().map(|p| s.spawn(|| p.start()));
            lab.ejabberd.start();
            lab.ejabberd.issue_api_token(&lab.sidecar.api_token_file);
            lab.sidecar.start();
            if let Some(h) = p
                && let Err(e) = h.join()
            {
                std::panic::resume_unwind(e);
            }
        });
        lab.ejabberd.wait_status("module polling the sidecar", Duration::from_secs(20), |s| {
            s.get("sidecar").is_some_and(|v| v == "up")
        });
        lab
    }

    /// The Prosody peer; panics when the lab was started without it.
    pub fn prosody(&self) -> &ProsodyPeer {
        self.montague.as_ref().expect("this lab was started without Prosody")
    }

    /// Keep the lab folder when dropped (a test sharing this lab failed).
    pub fn keep_dir(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Logs of all parts, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("--- lab {} ---\n", self.dir.display());
        s.push_str(&self.ejabberd.diagnostics());
        s.push_str(&self.sidecar.diagnostics());
        if let Some(p) = &self.montague {
            s.push_str(&format!("--- prosody console (tail) ---\n{}\n", tail(&p.console_log, 30)));
        }
        s
    }

    /// A real XMPP client (slixmpp) logged in over c2s as `user@verona.lit`, verifying the
    /// server against the lab's verona.lit certificate ([`EjabberdOptions::c2s`]).
    pub fn client(&self, user: &str, password: &str) -> Result<crate::xmpp_client::XmppClient, String> {
        let ca = self.dir.join("certs").join(format!("{VERONA}.crt"));
        crate::xmpp_client::XmppClient::connect(
            &format!("{user}@{VERONA}"),
            password,
            &self.ejabberd.ip,
            5222,
            &ca,
            Duration::from_secs(10),
        )
    }
}

impl Drop for EjabberdLab {
    fn drop(&mut self) {
        thread::scope(|s| {
            if let Some(p) = &self.montague {
                s.spawn(|| p.stop());
            }
            s.spawn(|| self.ejabberd.stop());
            s.spawn(|| self.sidecar.stop());
        });
        let also = self.keep.load(Ordering::Relaxed);
        crate::process::keep_lab_dir_if_failed(&mut self.tmp, also, "ejabberd lab");
    }
}

/// `<dir>/certs` with self-signed certificates for montague.lit and verona.lit, and the
/// `verona.lit.pem` (certificate + key) ejabberd loads.
fn lab_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    thread::scope(|s| {
        s.spawn(|| crate::certs::self_signed(&certs, MONTAGUE));
        s.spawn(|| crate::certs::self_signed(&certs, VERONA));
    });
    let pem = format!(
        "{}{}",
        fs::read_to_string(certs.join(format!("{VERONA}.crt"))).unwrap(),
        fs::read_to_string(certs.join(format!("{VERONA}.key"))).unwrap()
    );
    fs::write(certs.join(format!("{VERONA}.pem")), pem).unwrap();
    certs
}

impl EjabberdOptions {
    /// The Prosody peer's hosts: montague.lit and the extra ones, none without a Prosody.
    fn prosody_host_list(&self) -> Vec<String> {
        if !self.prosody {
            return Vec::new();
        }
        std::iter::once(MONTAGUE.to_string()).chain(self.prosody_hosts.iter().cloned()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster of two ejabberd nodes

/// Two ejabberd nodes serving `verona.lit` as one cluster (`join_cluster`), ONE sidecar that
/// both nodes' modules long-poll, and (optionally) the Prosody peer. Node 1 has slot address
/// `b` of the first slot (with the sidecar, whose `api_url` is node 1's API; Prosody finds
/// verona.lit there), node 2 address `a` of a second slot. Both distribution ports are 5270,
/// each on its own address, no epmd (`-erl_epmd_port 5270` everywhere), one cookie.
pub struct EjabberdCluster {
    pub dir: PathBuf,
    /// node 1, node 2
    pub nodes: Vec<Ejabberd>,
    pub sidecar: Sidecar,
    pub montague: Option<ProsodyPeer>,
    keep: AtomicBool,
    tmp: Option<tempfile::TempDir>,
    _watchdog: Option<Watchdog>,
    _slots: Vec<Slot>,
}

impl EjabberdCluster {
    /// Starts node 1, issues the API token, starts the sidecar (and Prosody), starts node 2
    /// and joins it to node 1, and waits until both nodes' modules poll the sidecar.
    pub fn start(opts: EjabberdOptions) -> EjabberdCluster {
        require_installed();
        assert!(opts.sidecar_bin.exists(), "sidecar binary {} does not exist", opts.sidecar_bin.display());
        let tmp =
            tempfile::Builder::new().prefix("server-trust-ejabberd-cluster-").tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let ports = [5269, 5222, 5280, SIDECAR_PORT, DIST_PORT];
        let slots = vec![Slot::reserve(&ports), Slot::reserve(&ports)];
        let (prosody_ip, ip1, ip2) = (slots[0].a.clone(), slots[0].b.clone(), slots[1].a.clone());
        let certs = lab_certs(&dir);
        let prosody_hosts = opts.prosody_host_list();
        let srv: Vec<(String, String)> =
            prosody_hosts.iter().map(|h| (h.clone(), prosody_ip.clone())).collect();
        let cookie = secret("c");
        let nodes = vec![
            Ejabberd::new(&dir, "node1", &ip1, &ip1, &srv, &cookie),
            Ejabberd::new(&dir, "node2", &ip2, &ip1, &srv, &cookie),
        ];
        for n in &nodes {
            n.write_config(&opts, &certs);
            compile_module(&n.ebin);
        }
        // Both modules read the sidecar's hook token from their own copy.
        let sidecar = Sidecar::new(&dir, &ip1, &opts.sidecar_bin, &nodes[0]);
        sidecar.write_config(&opts);
        write_secret(&nodes[1].hook_token_file, &sidecar.hook_token);
        if opts.admin_commands {
            for n in &nodes {
                write_secret(&n.admin_token_file, &sidecar.admin_token);
            }
        }
        let montague = opts.prosody.then(|| {
            let p = ProsodyPeer::new(&dir, &prosody_ip, prosody_hosts.clone());
            p.write_config(&certs, &ip1, opts.contact_info);
            p
        });
        let mut pidfiles: Vec<&Path> = vec![&nodes[0].pidfile, &nodes[1].pidfile, &sidecar.pidfile];
        if let Some(p) = &montague {
            pidfiles.push(&p.pidfile);
        }
        let watchdog = Watchdog::spawn(&pidfiles);
        let c = EjabberdCluster {
            dir,
            nodes,
            sidecar,
            montague,
            keep: AtomicBool::new(false),
            tmp: Some(tmp),
            _watchdog: watchdog,
            _slots: slots,
        };
        thread::scope(|s| {
            let p = c.montague.as_ref().map(|p| s.spawn(|| p.start()));
            let n2 = s.spawn(|| c.nodes[1].start());
            c.nodes[0].start();
            c.nodes[0].issue_api_token(&c.sidecar.api_token_file);
            c.sidecar.start();
            for h in p.into_iter().chain([n2]) {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
        let joined = c.nodes[1].ctl_ok(&["join_cluster", &c.nodes[0].node]);
        eprintln!("[ejabberd cluster] join_cluster: {joined}");
        for n in &c.nodes {
            n.wait_status("module polling the sidecar", Duration::from_secs(40), |s| {
                s.get("sidecar").is_some_and(|v| v == "up")
            });
        }
        c
    }

    /// The Prosody peer; panics when started without it.
    pub fn prosody(&self) -> &ProsodyPeer {
        self.montague.as_ref().expect("this cluster was started without Prosody")
    }

    /// `ejabberdctl list_cluster` on `node` (0 or 1): the node names, one per line.
    pub fn list_cluster(&self, node: usize) -> Vec<String> {
        self.nodes[node]
            .ctl_ok(&["list_cluster"])
            .lines()
            .map(|l| l.trim().trim_matches('\'').to_string())
            .collect()
    }

    /// Keep the folder when dropped.
    pub fn keep_dir(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Logs of all parts, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("--- cluster {} ---\n", self.dir.display());
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!("=== node{} {} ===\n{}", i + 1, n.node, n.diagnostics()));
        }
        s.push_str(&self.sidecar.diagnostics());
        if let Some(p) = &self.montague {
            s.push_str(&format!("--- prosody console (tail) ---\n{}\n", tail(&p.console_log, 30)));
        }
        s
    }
}

impl Drop for EjabberdCluster {
    fn drop(&mut self) {
        thread::scope(|s| {
            if let Some(p) = &self.montague {
                s.spawn(|| p.stop());
            }
            for n in &self.nodes {
                s.spawn(|| n.stop());
            }
            s.spawn(|| self.sidecar.stop());
        });
        let also = self.keep.load(Ordering::Relaxed);
        crate::process::keep_lab_dir_if_failed(&mut self.tmp, also, "ejabberd cluster");
    }
}

// ---------------------------------------------------------------------------------------------
// ejabberd

/// The ejabberd node serving `verona.lit`.
pub struct Ejabberd {
    pub host: String,
    /// Address of s2s (5269), the HTTP API (5280) and the distribution port (5270).
    pub ip: String,
    /// `st@<ip>` (long name: the host part is the address, nothing to resolve).
    pub node: String,
    cookie: String,
    /// `<lab>/ejabberd`
    pub dir: PathBuf,
    pub etc: PathBuf,
    pub ebin: PathBuf,
    pub spool: PathBuf,
    pub logs: PathBuf,
    /// `logs/ejabberd.log` (info level: API calls, s2s, our module's lines)
    pub log: PathBuf,
    /// stdout/stderr of the VM
    pub console_log: PathBuf,
    /// Written by ejabberd itself (the VM's OS pid).
    pub pidfile: PathBuf,
    /// `http://<ip>:5280/api`
    pub api_url: String,
    /// The hook token the module sends (a copy of the sidecar's `hook_token_file`).
    pub hook_token_file: PathBuf,
    /// The module's `admin_token_file` (a copy of the sidecar's admin token), written only
    /// with [`EjabberdOptions::admin_commands`].
    pub admin_token_file: PathBuf,
    /// Address of the sidecar (port 5267) the module talks to.
    pub sidecar_ip: String,
    /// Domains resolved by the VM's resolver cache: (domain, address), port 5269.
    srv: Vec<(String, String)>,
    process: Daemon,
}

impl Ejabberd {
    /// A node in `<lab>/<name>` listening on `ip`, its module pointed at the sidecar on
    /// `sidecar_ip`; nodes of one cluster share `cookie`.
    fn new(
        lab: &Path,
        name: &str,
        ip: &str,
        sidecar_ip: &str,
        srv: &[(String, String)],
        cookie: &str,
    ) -> Ejabberd {
        let dir = lab.join(name);
        let logs = dir.join("logs");
        Ejabberd {
            host: VERONA.into(),
            ip: ip.into(),
            sidecar_ip: sidecar_ip.into(),
            node: format!("st@{ip}"),
            cookie: cookie.into(),
            etc: dir.join("etc"),
            ebin: dir.join("ebin"),
            spool: dir.join("spool"),
            log: logs.join("ejabberd.log"),
            console_log: logs.join("console.log"),
            logs,
            pidfile: dir.join("run").join("ejabberd.pid"),
            api_url: format!("http://{ip}:5280/api"),
            hook_token_file: dir.join("etc").join("hook.token"),
            admin_token_file: dir.join("etc").join("admin.token"),
            srv: srv.to_vec(),
            process: Daemon::new(&format!("ejabberd verona.lit ({name})")),
            dir,
        }
    }

    fn write_config(&self, opts: &EjabberdOptions, certs: &Path) {
        for d in
            [&self.etc, &self.ebin, &self.spool, &self.logs, &self.dir.join("run"), &self.dir.join("contrib")]
        {
            fs::create_dir_all(d).unwrap();
        }
        let ip = &self.ip;
        let pem = certs.join(format!("{VERONA}.pem"));
        let cafile = certs.join(format!("{MONTAGUE}.crt"));
        let yml = format!(
            r#"## Generated by the server-trust lab (crates/lab/src/ejabberd.rs). Do not edit.
hosts:
  - {VERONA}
loglevel: info
certfiles:
  - "{pem}"
acme:
  auto: false

listen:
  - port: 5269
    ip: {ip}
    module: ejabberd_s2s_in
  - port: 5280
    ip: {ip}
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api{webadmin_handler}{c2s_listener}

## Prosody requires TLS on s2s; 23.01 defaults to false. Identity: dialback.
s2s_use_starttls: required
outgoing_s2s_families: [ipv4]
outgoing_s2s_ipv4_address: {ip}
## Only the peer's cert: the default (system bundle) costs ~100 ms on the first s2s TLS.
s2s_cafile: "{cafile}"
s2s_dns_timeout: 3
s2s_dns_retries: 1
s2s_max_retry_delay: 5

## mod_http_api: only send_stanza and send_message, only for the sidecar's OAuth token
## (owner sidecar@{VERONA}, scopes send_stanza;send_message) and only from 127.0.0.1.
acl:
  sidecar_ip:
    ip: 127.0.0.1/32{admin_acl}{webadmin_acl}
access_rules:{configure_rule}
  sidecar_api:
    allow:
      - user: "sidecar@{VERONA}"
      - acl: sidecar_ip
  sidecar_oauth:{oauth_users}
oauth_access: sidecar_oauth
api_permissions:
  "console commands":
    from: ejabberd_ctl
    who: all
    what: "*"
  "sidecar":
    from: mod_http_api
    who:
      oauth:
        scope: [send_stanza, send_message]
        access: sidecar_api
    what: [send_stanza, send_message]{admin_permissions}

modules:
  mod_admin_extra: {{}}
  mod_http_api: {{}}
  mod_s2s_dialback: {{}}
  mod_disco:{disco_options}{adhoc_module}
  mod_server_trust:
    sidecar_url: "http://{sidecar_ip}:{SIDECAR_PORT}"
    token_file: "{token}"
    queue_max: {queue_max}
    federation: {federation}{federation_group}{admin_option}{access_adhoc}
"#,
            pem = pem.display(),
            cafile = cafile.display(),
            sidecar_ip = self.sidecar_ip,
            token = self.hook_token_file.display(),
            queue_max = opts.queue_max,
            federation = opts.federation,
            federation_group = match &opts.federation_group {
                Some(g) => format!("\n    federation_group: \"{g}\""),
                None => String::new(),
            },
            // With the admin commands, admin@ may be issued a token too, and has its own rule.
            oauth_users = if opts.admin_commands {
                // One rule per user: the conditions inside one rule must all match.
                format!(
                    "\n    - allow:\n        user: \"sidecar@{VERONA}\"\n    - allow:\n        \
                     user: \"admin@{VERONA}\"\n  trust_admins:\n    allow:\n      user: \"admin@{VERONA}\""
                )
            } else {
                format!("\n    allow:\n      user: \"sidecar@{VERONA}\"")
            },
            admin_permissions = if opts.admin_commands {
                "\n  \"server-trust admins\":\n    from: mod_http_api\n    who:\n      oauth:\n        \
                 scope: \"ejabberd:admin\"\n        access: trust_admins\n    what: \"[tag:server_trust]\""
            } else {
                ""
            },
            c2s_listener = if opts.c2s {
                format!(
                    "\n  - port: 5222\n    ip: {ip}\n    module: ejabberd_c2s\n    starttls_required: true"
                )
            } else {
                String::new()
            },
            admin_acl =
                if opts.c2s { format!("\n  admin:\n    user: \"admin@{VERONA}\"") } else { String::new() },
            // One `configure` rule for both: the ad-hoc tests' admin and the WebAdmin's.
            configure_rule = match (opts.c2s, opts.webadmin) {
                (false, false) => "",
                (true, false) => "\n  configure:\n    allow: admin",
                (false, true) => "\n  configure:\n    allow: webadmins",
                (true, true) => "\n  configure:\n    - allow: admin\n    - allow: webadmins",
            },
            adhoc_module = if opts.c2s { "\n  mod_adhoc: {}" } else { "" },
            // XEP-0157 in disco#info of the host (mod_disco's server_info) and XEP-0092.
            disco_options = if opts.contact_info {
                let mut o = "\n    server_info:".to_string();
                for (kind, addr) in contact_addresses(VERONA) {
                    o.push_str(&format!(
                        "\n      -\n        modules: all\n        name: \"{kind}-addresses\"\n        urls: [\"{addr}\"]"
                    ));
                }
                o + "\n  mod_version: {}"
            } else {
                " {}".to_string()
            },
            access_adhoc = if opts.c2s { "\n    access_adhoc: configure" } else { "" },
            webadmin_handler = if opts.webadmin { "\n      /admin: ejabberd_web_admin" } else { "" },
            // 23.01's WebAdmin: GET of a host's pages needs `configure` or `webadmin_view` of
            // that host, POST needs `configure` (ejabberd_web_admin:get_acl_rule/2).
            webadmin_acl = if opts.webadmin {
                format!("\n  webadmins:\n    user: \"{WEBADMIN_ADMIN}@{VERONA}\"")
            } else {
                String::new()
            },
            admin_option = if opts.admin_commands {
                format!("\n    admin_token_file: \"{}\"", self.admin_token_file.display())
            } else {
                String::new()
            },
        );
        fs::write(self.etc.join("ejabberd.yml"), yml).unwrap();
        // Sourced by /usr/sbin/ejabberdctl for commands (the node itself is started by start()).
        let cfg = format!(
            "## Generated by the server-trust lab. Do not edit.\nERLANG_NODE={node}\n\
             ## run as the calling user, not `su ejabberd`\nEXEC_CMD=as_current_user\n\
             ## no epmd: fixed distribution port (ctl clients get -dist_listen false)\nERL_DIST_PORT={DIST_PORT}\n\
             ERL_OPTIONS=\"-setcookie {cookie}\"\nCONTRIB_MODULES_PATH={contrib}\nEJABBERD_BYPASS_WARNINGS=true\n\
             EJABBERD_PID_PATH={pid}\n",
            node = self.node,
            cookie = self.cookie,
            contrib = self.dir.join("contrib").display(),
            pid = self.pidfile.display(),
        );
        fs::write(self.etc.join("ejabberdctl.cfg"), cfg).unwrap();
        // "localhost" only; no resolv.conf, no name server: every lookup not answered by the
        // resolver cache fails at once, nothing leaves the box.
        fs::write(
            self.etc.join("inetrc"),
            "{lookup, [\"file\"]}.\n{hosts_file, \"\"}.\n{host, {127,0,0,1}, [\"localhost\"]}.\n{resolv_conf, \"\"}.\n",
        )
        .unwrap();
    }

    fn erl_command(&self) -> Command {
        let e = ejabberd_lib_dir().expect("ejabberd installed");
        let ip_tuple = format!("{{{}}}", self.ip.replace('.', ","));
        let rrs: Vec<String> = self
            .srv
            .iter()
            .map(|(d, a)| format!("ok = inet_db:add_rr(\"_xmpp-server._tcp.{d}\", in, srv, 315360000, {{0, 0, 5269, \"{a}\"}})"))
            .collect();
        let mut cmd = Command::new("erl");
        cmd.args(["-name", &self.node, "-setcookie", &self.cookie])
            .arg("-pa")
            .arg(&self.ebin)
            .args(["-kernel", "inet_dist_use_interface", &ip_tuple])
            .args(["-erl_epmd_port", &DIST_PORT.to_string(), "-start_epmd", "false"])
            .args(["+K", "true", "+P", "250000"])
            .args(["-mnesia", "dir", &format!("\"{}\"", self.spool.display())]);
        if !rrs.is_empty() {
            cmd.args(["-eval", &format!("{}.", rrs.join(", "))]);
        }
        cmd.args(["-s", "ejabberd", "-noshell", "-noinput"])
            .env("EJABBERD_CONFIG_PATH", self.etc.join("ejabberd.yml"))
            .env("EJABBERD_LOG_PATH", &self.log)
            .env("EJABBERD_PID_PATH", &self.pidfile)
            .env("ERL_INETRC", self.etc.join("inetrc"))
            .env("ERL_LIBS", e.parent().unwrap())
            // code:priv_dir(ejabberd) does not find Debian's versioned app folder
            .env("EJABBERD_MSGS_PATH", e.join("priv").join("msgs"))
            // the same for the WebAdmin's style sheet, images and script
            .env("EJABBERD_CSS_PATH", e.join("priv").join("css"))
            .env("EJABBERD_IMG_PATH", e.join("priv").join("img"))
            .env("EJABBERD_JS_PATH", e.join("priv").join("js"))
            .env("CONTRIB_MODULES_PATH", self.dir.join("contrib"))
            .env("ERL_CRASH_DUMP", self.logs.join("erl_crash.dump"))
            .env("HOME", &self.dir)
            .current_dir(&self.spool);
        cmd
    }

    fn log_len(&self) -> usize {
        fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// The log from byte `from` on.
    fn log_since(&self, from: usize) -> String {
        let b = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&b[from.min(b.len())..]).into_owned()
    }

    /// Starts the node and waits until the HTTP API listens and mod_server_trust started.
    pub fn start(&self) {
        let from = self.log_len();
        let _ = fs::remove_file(&self.pidfile);
        self.process.spawn(self.erl_command(), &self.console_log);
        // erl execs the VM, so this is its pid; ejabberd writes the same later. Written now so
        // the watchdog finds it even if the test dies during the boot.
        if let Some(pid) = self.process.pid() {
            fs::write(&self.pidfile, pid.to_string()).unwrap();
        }
        let want = format!("Start accepting TCP connections at {}:5280", self.ip);
        match self.process.wait_ready(EJABBERD_START_TIMEOUT, || self.log_since(from).contains(&want)) {
            Ok(()) => {}
            Err(NotReady::Exited(st)) => {
                panic!("ejabberd exited during startup ({st})\n{}", self.diagnostics())
            }
            Err(NotReady::TimedOut) => {
                panic!("ejabberd not ready after {EJABBERD_START_TIMEOUT:?}\n{}", self.diagnostics())
            }
        }
        if !self.log_since(from).contains("mod_server_trust (verona.lit): presence to the host JID goes to") {
            panic!("mod_server_trust did not start\n{}", self.diagnostics());
        }
    }

    /// Graceful stop (SIGTERM to the VM: ejabberd's own shutdown, ~1 s), SIGKILL after 15 s.
    pub fn stop(&self) {
        self.process.stop(STOP_TIMEOUT);
        let _ = fs::remove_file(&self.pidfile);
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// `ejabberdctl ARGS` against this node (killed after 30 s).
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(EJABBERDCTL);
        cmd.arg("--config-dir")
            .arg(&self.etc)
            .arg("--config")
            .arg(self.etc.join("ejabberd.yml"))
            .arg("--ctl-config")
            .arg(self.etc.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(&self.spool)
            .arg("--logs")
            .arg(&self.logs)
            .args(args)
            .env("HOME", &self.dir);
        run_with_timeout(cmd, CTL_TIMEOUT)
    }

    /// `ctl` that must succeed; its stdout, trimmed.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "ejabberdctl {args:?} failed ({}): {text} {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        text
    }

    /// Evaluates the Erlang expressions `exprs` (`"A = 1, A + 1."`) inside the node with
    /// `erl_eval` (calls into compiled modules run compiled) and returns the value: a string
    /// as is, any other term printed on one line. A hidden client VM connects to the fixed
    /// distribution port (no epmd) and halts. Panics on a parse error, an exception or
    /// `badrpc`, with the error and the diagnostics.
    pub fn eval(&self, exprs: &str) -> String {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let client =
            format!("stev{}x{}@{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed), self.ip);
        let code = r#"[Node, Src] = init:get_plain_arguments(),
R = try
  {ok, Ts, _} = erl_scan:string(Src),
  {ok, Es} = erl_parse:parse_exprs(Ts),
  case rpc:call(list_to_atom(Node), erl_eval, exprs, [Es, []], 900000) of
    {value, V, _} -> {ok, V};
    Other -> {error, Other}
  end
catch C:E -> {error, {C, E}} end,
case R of
  {ok, Val} ->
    case io_lib:printable_unicode_list(Val) of
      true -> io:format("~ts~n", [Val]);
      false -> io:format("~ts~n", [io_lib:print(Val, 1, 1000000, -1)])
    end,
    halt(0);
  {error, Why} -> io:format("~ts~n", [io_lib:print(Why, 1, 1000000, -1)]), halt(1)
end."#;
        let mut cmd = Command::new("erl");
        cmd.args(["-name", &client, "-setcookie", &self.cookie, "-hidden"])
            .args(["-erl_epmd_port", &DIST_PORT.to_string(), "-start_epmd", "false", "-dist_listen", "false"])
            .args(["-noshell", "-noinput", "-eval", code, "-extra", &self.node, exprs])
            .env("HOME", &self.dir);
        let out = run_with_timeout(cmd, Duration::from_secs(900));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "eval on {} failed ({}): {text} {}\n{}",
            self.node,
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        text
    }

    /// Compiles `src` (an `.erl` file) into this node's code path and loads it in the
    /// running node (e.g. a benchmark helper).
    pub fn load_erl(&self, src: &Path) {
        compile_erl(&[src.to_path_buf()], &self.ebin);
        let m = src.file_stem().and_then(|s| s.to_str()).expect("module file name");
        let r = self.eval(&format!("code:purge({m}), code:load_file({m})."));
        assert_eq!(r, format!("{{module,{m}}}"), "loading {m}");
    }

    /// `mod_server_trust:is_trusted/2,3` inside the node (the `server_trust_is_trusted`
    /// command the module registers; it reads the module's ETS table).
    pub fn is_trusted(&self, peer: &str, scope: Option<&str>) -> bool {
        match self.ctl_ok(&["server_trust_is_trusted", VERONA, peer, scope.unwrap_or("")]).as_str() {
            "true" => true,
            "false" => false,
            other => panic!("server_trust_is_trusted printed {other:?}"),
        }
    }

    /// The module's `server_trust_status` line as key=value pairs (sidecar, generation,
    /// queued, delivered, lost, trusted).
    pub fn module_status(&self) -> HashMap<String, String> {
        self.ctl_ok(&["server_trust_status", VERONA])
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }

    /// Waits (polling) until `pred(module_status)` holds; panics with diagnostics after `timeout`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let t0 = Instant::now();
        loop {
            let s = self.module_status();
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; status {s:?}\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Issues the sidecar's OAuth token (stored in mnesia, 10 years) into `file`.
    pub fn issue_api_token(&self, file: &Path) {
        let out = self.ctl_ok(&[
            "oauth_issue_token",
            &format!("sidecar@{VERONA}"),
            "315360000",
            "send_stanza;send_message",
        ]);
        let token = out.split('\t').next().unwrap_or("").trim().to_string();
        assert!(token.len() >= 16, "oauth_issue_token printed {out:?}");
        write_secret(file, &token);
    }

    /// Issues an OAuth token for `admin@verona.lit` with scope `ejabberd:admin` (an hour), for
    /// mod_http_api calls of the admin commands ([`EjabberdOptions::admin_commands`]).
    pub fn issue_admin_api_token(&self) -> String {
        let out = self.ctl_ok(&["oauth_issue_token", &format!("admin@{VERONA}"), "3600", "ejabberd:admin"]);
        let token = out.split('\t').next().unwrap_or("").trim().to_string();
        assert!(token.len() >= 16, "oauth_issue_token printed {out:?}");
        token
    }

    /// `POST /api/<command>` on this node's mod_http_api with `Authorization: Bearer <token>`
    /// and the JSON `body`.
    pub fn api(&self, command: &str, token: &str, body: &str) -> HttpReply {
        let auth = format!("Bearer {token}");
        http_request(
            &format!("{}:5280", self.ip),
            "POST",
            &format!("/api/{command}"),
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// Registers `user@verona.lit` with `password` (`ejabberdctl register`).
    pub fn register(&self, user: &str, password: &str) {
        self.ctl_ok(&["register", user, VERONA, password]);
    }

    /// `http://<ip>:5280/admin/`, the WebAdmin ([`EjabberdOptions::webadmin`]).
    pub fn webadmin_url(&self) -> String {
        format!("http://{}:5280/admin/", self.ip)
    }

    /// The whole info log so far.
    pub fn log_text(&self) -> String {
        self.log_since(0)
    }

    /// The log's entries: a line starting with a timestamp plus its continuation lines
    /// (API calls print their arguments over several lines).
    pub fn log_entries(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in self.log_text().lines() {
            let starts_entry = line.len() > 4 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit);
            match out.last_mut() {
                Some(last) if !starts_entry => {
                    last.push('\n');
                    last.push_str(line);
                }
                _ => out.push(line.to_string()),
            }
        }
        out
    }

    /// Waits until some log entry satisfies `pred`; returns it.
    pub fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.log_entries().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out after {timeout:?} waiting for ejabberd log: {what}\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- ejabberd.log (tail) ---\n{}\n--- ejabberd error.log (tail) ---\n{}\n--- ejabberd console (tail) ---\n{}\n",
            tail(&self.log, 40),
            tail(&self.logs.join("error.log"), 20),
            tail(&self.console_log, 20)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The sidecar

/// The real `server-trust-sidecar` serving verona.lit.
pub struct Sidecar {
    /// `<ip>:5267`
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The shared store (`server-trust --store`): `<store>/verona.lit/{roster.toml,pending/,audit.log}`.
    pub store: PathBuf,
    pub hook_token: String,
    pub admin_token: String,
    pub hook_token_file: PathBuf,
    pub admin_token_file: PathBuf,
    /// ejabberd's OAuth token for send_stanza/send_message (issued at start).
    pub api_token_file: PathBuf,
    pub api_url: String,
    pub console_log: PathBuf,
    pub pidfile: PathBuf,
    bin: PathBuf,
    process: Daemon,
}

/// One HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

impl Sidecar {
    fn new(lab: &Path, ip: &str, bin: &Path, ejabberd: &Ejabberd) -> Sidecar {
        let dir = lab.join("sidecar");
        Sidecar {
            addr: format!("{ip}:{SIDECAR_PORT}"),
            config: dir.join("sidecar.toml"),
            store: dir.join("store"),
            hook_token: secret("h"),
            admin_token: secret("a"),
            hook_token_file: ejabberd.hook_token_file.clone(),
            admin_token_file: dir.join("admin.token"),
            api_token_file: dir.join("ejabberd-api.token"),
            api_url: ejabberd.api_url.clone(),
            console_log: dir.join("console.log"),
            pidfile: dir.join("sidecar.pid"),
            bin: bin.to_path_buf(),
            process: Daemon::new("server-trust-sidecar"),
            dir,
        }
    }

    fn write_config(&self, opts: &EjabberdOptions) {
        fs::create_dir_all(&self.store).unwrap();
        write_secret(&self.hook_token_file, &self.hook_token);
        write_secret(&self.admin_token_file, &self.admin_token);
        let toml = format!(
            "# Generated by the server-trust lab. Do not edit.\nlisten = {listen:?}\nstore = {store:?}\n\
             hook_token_file = {hook:?}\nadmin_token_file = {admin:?}\n\n[[host]]\nname = {VERONA:?}\n\
             api_url = {api:?}\napi_token_file = {apitok:?}\nadmins = [\"admin@{VERONA}\"]\n{extra}\n",
            listen = self.addr,
            store = self.store.display().to_string(),
            hook = self.hook_token_file.display().to_string(),
            admin = self.admin_token_file.display().to_string(),
            api = self.api_url,
            apitok = self.api_token_file.display().to_string(),
            extra = opts.sidecar_host_toml,
        );
        fs::write(&self.config, toml).unwrap();
    }

    /// Starts the sidecar and waits until it accepts connections.
    pub fn start(&self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).current_dir(&self.dir);
        if std::env::var_os("SERVER_TRUST_LOG").is_none() {
            cmd.env("SERVER_TRUST_LOG", "info");
        }
        self.process.spawn(cmd, &self.console_log);
        if let Some(pid) = self.process.pid() {
            fs::write(&self.pidfile, pid.to_string()).unwrap();
        }
        let addr = self.addr.to_socket_addrs().unwrap().next().unwrap();
        let ready = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        match self.process.wait_ready(START_TIMEOUT, ready) {
            Ok(()) => {}
            Err(e) => panic!("sidecar not ready ({e:?})\n{}", self.diagnostics()),
        }
    }

    pub fn stop(&self) {
        self.process.stop(STOP_TIMEOUT);
        let _ = fs::remove_file(&self.pidfile);
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// A raw HTTP/1.1 request to the sidecar (`Connection: close`).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
        http_request(&self.addr, method, path, headers, body)
    }

    /// `method path` with the hook token and a JSON body.
    pub fn hook(&self, method: &str, path: &str, json: &str) -> HttpReply {
        let auth = format!("Bearer {}", self.hook_token);
        self.http(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            json.as_bytes(),
        )
    }

    /// `method path` with the admin token and a JSON body.
    pub fn admin_api(&self, method: &str, path: &str, json: &str) -> HttpReply {
        let auth = format!("Bearer {}", self.admin_token);
        self.http(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            json.as_bytes(),
        )
    }

    /// `<store>/verona.lit/audit.log`
    pub fn audit_log(&self) -> PathBuf {
        self.store.join(VERONA).join("audit.log")
    }

    /// Waits until `peer`'s pending-request file exists in the store; returns its text.
    pub fn wait_pending(&self, peer: &str, timeout: Duration) -> String {
        let f = self.pending_file(peer);
        let t0 = Instant::now();
        loop {
            if let Ok(t) = fs::read_to_string(&f)
                && t.contains("decision")
            {
                return t;
            }
            assert!(
                t0.elapsed() < timeout,
                "no pending request from {peer} after {timeout:?}\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file under the store with its content (for "nothing changed" checks).
    pub fn store_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(rd) = fs::read_dir(d) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.store, &mut v);
        v.sort();
        v
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- sidecar console (tail) ---\n{}\n--- audit.log (tail) ---\n{}\n",
            tail(&self.console_log, 40),
            tail(&self.audit_log(), 20)
        )
    }
}

impl TrustAdmin for Sidecar {
    fn store_root(&self) -> &Path {
        &self.store
    }
    fn trust_host(&self) -> &str {
        VERONA
    }
    fn diagnostics(&self) -> String {
        Sidecar::diagnostics(self)
    }
}

/// A minimal HTTP/1.1 client (the tests must send malformed and oversized requests a real
/// client library would refuse to). Reads the reply until the server closes; 30 s timeouts.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let sock = addr.to_socket_addrs().unwrap().next().unwrap();
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // A server may answer (413) and close before reading a big body: keep what it said.
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("read reply from {addr} {method} {path}: {e}"),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in reply to {method} {path}: {text:?}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    HttpReply { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The Prosody peer

/// One Prosody 0.12 process serving montague.lit and more virtual hosts, all with
/// mod_server_trust, recording what they receive (`crates/lab/prosody/mod_lab.lua`).
pub struct ProsodyPeer {
    /// montague.lit first, then the extra hosts.
    pub hosts: Vec<String>,
    pub ip: String,
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub data: PathBuf,
    /// `server_trust_store` of every host.
    pub store: PathBuf,
    pub log: PathBuf,
    pub console_log: PathBuf,
    pub pidfile: PathBuf,
    /// `<data>/lab-received.jsonl`
    pub record: PathBuf,
    process: Daemon,
}

/// The `server-trust` CLI on one of the Prosody peer's hosts.
pub struct PeerAdmin<'a> {
    peer: &'a ProsodyPeer,
    host: String,
}

impl TrustAdmin for PeerAdmin<'_> {
    fn store_root(&self) -> &Path {
        &self.peer.store
    }
    fn trust_host(&self) -> &str {
        &self.host
    }
    fn diagnostics(&self) -> String {
        format!("--- prosody console (tail) ---\n{}\n", tail(&self.peer.console_log, 30))
    }
}

impl ProsodyPeer {
    fn new(lab: &Path, ip: &str, hosts: Vec<String>) -> ProsodyPeer {
        let dir = lab.join("prosody");
        let data = dir.join("data");
        ProsodyPeer {
            hosts,
            ip: ip.into(),
            cfg: dir.join("prosody.cfg.lua"),
            store: data.join("server_trust"),
            log: dir.join("prosody.log"),
            console_log: dir.join("console.log"),
            pidfile: dir.join("prosody.pid"),
            record: data.join("lab-received.jsonl"),
            data,
            process: Daemon::new("prosody (montague.lit)"),
            dir,
        }
    }

    fn write_config(&self, certs: &Path, ejabberd_ip: &str, contact_info: bool) {
        fs::create_dir_all(&self.data).unwrap();
        let hosts_file = self.dir.join("hosts");
        let mut h = format!("{ejabberd_ip} {VERONA}\n");
        for host in &self.hosts {
            h.push_str(&format!("{} {host}\n", self.ip));
        }
        fs::write(&hosts_file, h).unwrap();
        // The same settings as the Prosody lab's servers (one place: prosody/config.rs), plus:
        // no c2s, TCP_NODELAY, and each host with its own admin.
        let mut c = config::globals(&config::Globals {
            generated_for: "the ejabberd lab's Prosody peer (crates/lab/src/ejabberd.rs)",
            pidfile: &self.pidfile,
            data: &self.data,
            plugin_paths: &[],
            certs,
            log: &self.log,
            ip: &self.ip,
            hosts_file: &hosts_file,
            admin: None,
            // The lab's globals publish contact addresses and the version, as Debian does;
            // without `contact_info` this peer publishes and answers neither.
            extra: if contact_info {
                "modules_disabled = { \"c2s\" }\n"
            } else {
                "modules_disabled = { \"c2s\", \"version\", \"server_contact_info\" }\n"
            },
            no_nagle: true,
        });
        c.push_str(&config::server_trust_options(&self.store, None));
        for host in &self.hosts {
            c.push_str(&config::virtual_host(host, MONTAGUE, certs));
            c.push_str(&format!("\tadmins = {{ {} }}\n", lua_str(&format!("admin@{host}"))));
            if contact_info {
                // XEP-0157 (core module in 0.12) and XEP-0092.
                let kinds: Vec<String> = contact_addresses(host)
                    .iter()
                    .map(|(kind, addr)| format!("{kind} = {{ {} }}", lua_str(addr)))
                    .collect();
                c.push_str(&format!(
                    "\tmodules_enabled = {{ \"server_trust\", \"server_contact_info\", \"version\" }}\n\
                     \tcontact_info = {{ {} }}\n",
                    kinds.join("; ")
                ));
            } else {
                c.push_str("\tmodules_enabled = { \"server_trust\" }\n");
            }
        }
        fs::write(&self.cfg, c).unwrap();
    }

    /// Starts Prosody (`prosody --config CFG -F`) and waits until it is ready.
    pub fn start(&self) {
        let _ = fs::remove_file(self.data.join("lab-ready"));
        let mut cmd = Command::new("prosody");
        cmd.arg("--config").arg(&self.cfg).arg("-F").current_dir(&self.dir);
        self.process.spawn(cmd, &self.console_log);
        let ready = || self.data.join("lab-ready").exists() && self.data.join("prosody.sock").exists();
        if let Err(e) = self.process.wait_ready(START_TIMEOUT, ready) {
            panic!("prosody not ready ({e:?})\n--- console ---\n{}", tail(&self.console_log, 40));
        }
        let console = fs::read_to_string(&self.console_log).unwrap_or_default();
        if console.contains("Unable to load module") || console.contains("Error initializing module") {
            self.stop();
            panic!("prosody: a module failed to load\n{}", tail(&self.console_log, 40));
        }
    }

    pub fn stop(&self) {
        self.process.stop(STOP_TIMEOUT);
    }

    /// The CLI on `host`'s store.
    pub fn admin(&self, host: &str) -> PeerAdmin<'_> {
        assert!(self.hosts.iter().any(|h| h == host), "{host} is not served by the Prosody peer");
        PeerAdmin { peer: self, host: host.into() }
    }

    /// `prosodyctl --config CFG shell CMD`, killed after 20 s.
    pub fn shell(&self, cmd: &str) -> Output {
        let mut c = Command::new("prosodyctl");
        c.arg("--config").arg(&self.cfg).arg("shell").arg(cmd).current_dir(&self.dir);
        run_with_timeout(c, Duration::from_secs(20))
    }

    /// Makes a local host (or a JID at one) send `xml` (`lab:send`); panics on failure.
    pub fn inject(&self, xml: &str) {
        let out = self.shell(&format!("lab:send({})", lua_long_str(xml)));
        assert!(
            out.status.success(),
            "lab:send failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every record so far.
    pub fn received(&self) -> Vec<Stanza> {
        read_records(&self.record)
    }

    /// Waits until a record matches `pred`; panics with a dump after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Stanza) -> bool) -> Stanza {
        let t0 = Instant::now();
        loop {
            let all = self.received();
            if let Some(s) = all.iter().find(|s| pred(s)) {
                return s.clone();
            }
            assert!(
                t0.elapsed() < timeout,
                "prosody: timed out after {timeout:?} waiting for {what}\n{}",
                self.dump(&all)
            );
            thread::sleep(POLL);
        }
    }

    /// Records and log tails, for failure messages.
    pub fn dump(&self, records: &[Stanza]) -> String {
        let mut s = format!("--- prosody records ({}) ---\n", records.len());
        for r in records.iter().rev().take(60).rev() {
            s.push_str("  ");
            s.push_str(&r.summary());
            s.push('\n');
        }
        s.push_str(&format!("--- prosody console (tail) ---\n{}\n", tail(&self.console_log, 20)));
        s
    }
}
