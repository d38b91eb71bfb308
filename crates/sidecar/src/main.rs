//! `server-trust-sidecar`: drives the server-trust engine for XMPP servers that talk HTTP,
//! first of all ejabberd (its module calls the hook endpoints; the sidecar answers through
//! ejabberd's `mod_http_api`).
//!
//! It is its own binary, not a subcommand of `server-trust`: it is a long-running service
//! (run as the `ejabberd` user under systemd), and keeping the HTTP server and client here
//! keeps them out of the admin's `sudo server-trust` binary and out of both `.so` files, whose
//! dependency graphs stay small.
//!
//! One engine per served host on the shared store, so the CLI and hand edits work while it
//! runs: their decisions are picked up at once through each engine's wakeup fd. See
//! `README.md` and `openapi.yaml` beside this crate for the API.
//!
//! ```text
//! server-trust-sidecar --config /etc/server-trust/sidecar.toml [--check]
//! server-trust-sidecar gen-token [--out FILE [--owner USER]]
//! server-trust-sidecar save-token --out FILE [--owner USER] < token
//! ```
//! Exit status: 0 after a clean stop (SIGTERM, SIGINT) or a good `--check`, 2 for a bad
//! command line or configuration, 1 when the service cannot run (store, listener).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

mod bodies;
mod config;
mod guard;
mod host;
mod http;
mod logger;
mod outbound;
mod service;
mod views;

#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod strangers;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

const USAGE: &str = "usage: server-trust-sidecar --config FILE [--check]
       server-trust-sidecar gen-token [--out FILE [--owner USER]]
       server-trust-sidecar save-token --out FILE [--owner USER] < TOKEN
  --config FILE   the sidecar's TOML configuration
  --check         validate the configuration, its token files and the store folder (which
                  must exist and be writable by the user this runs as), then exit
  gen-token       print a new hook or admin token (256 bits from the OS, 64 hex digits);
                  --out FILE writes it to a new file of mode 0600 instead
  save-token      write the token read from stdin (e.g. ejabberd's API token) to a new
                  file of mode 0600; refuses empty input
  --owner USER    give the new file to USER and its group (as root; e.g. ejabberd)
  --version       print the version";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run { config: PathBuf, check: bool },
    GenToken { out: Option<PathBuf>, owner: Option<String> },
    SaveToken { out: PathBuf, owner: Option<String> },
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut check = false;
    let mut args = args.into_iter().peekable();
    if let Some(sub) = args.next_if(|a| a == "gen-token" || a == "save-token") {
        let (mut out, mut owner) = (None, None);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--out" | "-o" => out = Some(PathBuf::from(args.next().ok_or("--out needs a FILE")?)),
                s if s.starts_with("--out=") => out = Some(PathBuf::from(&s["--out=".len()..])),
                "--owner" => owner = Some(args.next().ok_or("--owner needs a USER")?),
                s if s.starts_with("--owner=") => owner = Some(s["--owner=".len()..].to_string()),
                other => return Err(format!("{sub}: unexpected argument {other:?}")),
            }
        }
        if owner.is_some() && out.is_none() {
            return Err(format!("{sub}: --owner needs --out FILE"));
        }
        if sub == "gen-token" {
            return Ok(Command::GenToken { out, owner });
        }
        let out = out.ok_or("save-token: --out FILE is required")?;
        return Ok(Command::SaveToken { out, owner });
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = Some(args.next().ok_or("--config needs a FILE")?),
            s if s.starts_with("--config=") => config = Some(s["--config=".len()..].to_string()),
            "--check" => check = true,
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let config = config.ok_or("--config FILE is required")?;
    Ok(Command::Run { config: PathBuf::from(config), check })
}

fn main() -> ExitCode {
    let (path, check) = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { config, check }) => (config, check),
        Ok(Command::GenToken { out, owner }) => return gen_token(out.as_deref(), owner.as_deref()),
        Ok(Command::SaveToken { out, owner }) => return save_token(&out, owner.as_deref()),
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("server-trust-sidecar {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("server-trust-sidecar: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    logger::init();
    let cfg = match config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("server-trust-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        if let Err(e) = cfg.check_store() {
            eprintln!("server-trust-sidecar: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        let names: Vec<&str> = cfg.hosts.iter().map(|h| h.name.as_str()).collect();
        println!("{}: OK (listen {}, hosts {})", path.display(), cfg.listen, names.join(", "));
        return ExitCode::SUCCESS;
    }
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Prints a new token, or writes it to `out` (see [`write_token`]).
fn gen_token(out: Option<&Path>, owner: Option<&str>) -> ExitCode {
    let token = match config::generate_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("server-trust-sidecar: {e}");
            return ExitCode::from(1);
        }
    };
    match out {
        None => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Some(path) => write_token(path, &token, owner, "a new 256-bit token"),
    }
}

/// Writes the token on stdin (one line; what `ejabberdctl oauth_issue_token … | cut -f1`
/// prints) to `out`: so a failed command before the pipe leaves no empty token file behind.
fn save_token(out: &Path, owner: Option<&str>) -> ExitCode {
    use std::io::Read;
    let mut text = String::new();
    if let Err(e) = std::io::stdin().take(8192).read_to_string(&mut text) {
        eprintln!("server-trust-sidecar: save-token: stdin: {e}");
        return ExitCode::from(2);
    }
    let token = text.trim();
    if token.is_empty() {
        eprintln!(
            "server-trust-sidecar: save-token: no token on stdin (did the command before the pipe fail?); \
             {} not written",
            out.display()
        );
        return ExitCode::from(2);
    }
    if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        eprintln!(
            "server-trust-sidecar: save-token: a token is one line of printable ASCII without spaces \
             (at most 4096 bytes); {} not written",
            out.display()
        );
        return ExitCode::from(2);
    }
    write_token(out, token, owner, "the token")
}

/// Writes `token` to `path`: a new file (never an existing one), mode 0600 from the start,
/// given to `owner` and its primary group when asked (before the token is written, so the
/// file never holds it under the wrong owner), synced before we say it is there.
fn write_token(path: &Path, token: &str, owner: Option<&str>, what: &str) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let ids = match owner.map(user_ids).transpose() {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("server-trust-sidecar: {e}; {} not written", path.display());
            return ExitCode::from(2);
        }
    };
    let file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "server-trust-sidecar: {}: already exists; not replaced (remove it first)",
                path.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("server-trust-sidecar: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let written = (|| {
        let mut f = file;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()
    })();
    match written {
        Ok(()) => {
            let by = owner.map(|o| format!(", owner {o}")).unwrap_or_default();
            eprintln!("server-trust-sidecar: wrote {what} to {} (mode 0600{by})", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Not left half-made: a later run must not find an empty or wrongly owned file.
            let _ = std::fs::remove_file(path);
            eprintln!("server-trust-sidecar: {}: {e}; not written", path.display());
            ExitCode::from(1)
        }
    }
}

/// The uid and primary gid of the user `name`.
fn user_ids(name: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("--owner {name:?}: not a user name"))?;
    let mut buf = vec![0u8; 16384];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if r != 0 || found.is_null() {
        return Err(format!("--owner {name}: no such user"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Runs the service on a single-threaded reactor; engine calls that touch the disk go to a
/// small blocking pool.
fn serve(cfg: config::Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // Handlers first, so a signal during start-up is a clean stop too.
    let (mut term, mut int) = {
        let _rt = rt.enter();
        let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
        (term, int)
    };
    let stop = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log::info!("{name}: stopping (finishing requests in flight)");
    };
    let result = rt.block_on(service::run(cfg, stop, |_| {}));
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Command, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_line() {
        let run = |c: &str, check| Ok(Command::Run { config: c.into(), check });
        assert_eq!(args(&["--config", "a.toml"]), run("a.toml", false));
        assert_eq!(args(&["--check", "--config=b.toml"]), run("b.toml", true));
        assert_eq!(args(&["-h"]), Ok(Command::Help));
        assert!(args(&[]).unwrap_err().contains("required"));
        assert!(args(&["--config"]).unwrap_err().contains("needs a FILE"));
        assert!(args(&["--token", "x"]).unwrap_err().contains("unexpected"));
        assert_eq!(args(&["gen-token"]), Ok(Command::GenToken { out: None, owner: None }));
        assert_eq!(
            args(&["gen-token", "--out", "t"]),
            Ok(Command::GenToken { out: Some("t".into()), owner: None })
        );
        assert_eq!(
            args(&["gen-token", "--out", "t", "--owner", "ejabberd"]),
            Ok(Command::GenToken { out: Some("t".into()), owner: Some("ejabberd".into()) })
        );
        assert!(args(&["gen-token", "--owner", "ejabberd"]).unwrap_err().contains("needs --out"));
        assert!(args(&["gen-token", "--config", "a"]).unwrap_err().contains("unexpected"));
        assert_eq!(
            args(&["save-token", "--out=t", "--owner=ejabberd"]),
            Ok(Command::SaveToken { out: "t".into(), owner: Some("ejabberd".into()) })
        );
        assert!(args(&["save-token"]).unwrap_err().contains("--out FILE is required"));
    }
}
