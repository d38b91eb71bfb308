//! The admin's view of a lab server: the `server-trust` CLI on the store the server uses.
//! Any lab server (Prosody, ejabberd with the sidecar, ...) gets these by naming its store and
//! host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::artifacts;

/// Runs `server-trust --store STORE ARGS` (the CLI of the profile in use) with no host or store
/// from the environment; returns its output whatever the exit status.
pub fn run_cli(store: &Path, args: &[&str]) -> Output {
    let cli = artifacts::cli();
    Command::new(cli)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("SERVER_TRUST_HOST")
        .env_remove("SERVER_TRUST_STORE")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", cli.display()))
}

/// stdout followed by stderr, for assertions and messages.
pub fn output_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The CLI on a server's store. Implementors name the store and host; the rest is provided.
pub trait TrustAdmin {
    /// The store folder the server was configured with (`--store`).
    fn store_root(&self) -> &Path;
    /// The host the server serves (`--host`).
    fn trust_host(&self) -> &str;
    /// What to print when a wait fails (e.g. the tail of the server's log).
    fn diagnostics(&self) -> String;

    /// Runs `server-trust --store <store> --host <host> ARGS`; panics unless it succeeds.
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--host", self.trust_host()];
        all.extend_from_slice(args);
        let out = run_cli(self.store_root(), &all);
        assert!(
            out.status.success(),
            "server-trust {args:?} on {} failed: {}",
            self.trust_host(),
            output_text(&out)
        );
        out
    }

    /// The CLI's stdout (it must succeed).
    fn cli_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.cli(args).stdout).expect("the CLI prints UTF-8")
    }

    /// `peer`'s subscription state per `server-trust --json list` ("absent" when not listed).
    fn state(&self, peer: &str) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.cli(&["--json", "list"]).stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["peer"] == peer)
            .map_or("absent".into(), |e| e["state"].as_str().unwrap().to_string())
    }

    /// Waits until `peer` is in state `want`; panics with the diagnostics after `timeout`.
    fn wait_state(&self, peer: &str, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let now = self.state(peer);
            if now == want {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "{}: {peer} stayed {now}, expected {want}\n{}",
                self.trust_host(),
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pending-request file `peer` would have in this server's store.
    fn pending_file(&self, peer: &str) -> PathBuf {
        self.store_root().join(self.trust_host()).join("pending").join(format!("{peer}.toml"))
    }
}
