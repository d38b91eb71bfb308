//! The `server-trust` admin command: reads the store, records decisions, queues acts.
//!
//! The CLI never sends presence itself: decisions are written where the running server
//! looks (`decision` in the pending file, `outbound/` for requests and revocations), so the
//! CLI works the same whether the server is Prosody, a C host or the sidecar.
//!
//! Exit codes: 0 success, 2 error (bad input, missing request, unreadable store).

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

mod args;
use args::{Cli, Command};

use server_trust::admin::{self, Done, PeerView};
use server_trust::store::{Decision, QueuedAct, Store};
use server_trust::{Actor, Config, Domain, Engine, Error, Result};

fn main() -> ExitCode {
    // `server-trust log | head -1`: a closed pipe ends the program quietly, as for cat.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server-trust: {e}");
            if matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
            {
                eprintln!(
                    "server-trust: run it as root (it then acts as the store's owner) or as the server's user"
                );
            }
            ExitCode::from(2)
        }
    }
}

/// Runs one parsed command.
fn run(cli: &Cli) -> Result<()> {
    // `sudo server-trust …` acts as the store's owner (the server's user), as prosodyctl
    // does, so nothing it writes is left unwritable by the server.
    server_trust::owner::become_store_owner(&cli.store)?;
    let store = admin::open_store(&cli.store, cli.host.as_deref())?;
    let peer_of = |p: &str| Domain::new(p);
    let out = Out { json: cli.json };
    match &cli.command {
        Command::List => out.roster(&store, &admin::roster(&store)?),
        Command::Pending => pending(&store, out),
        Command::Show { peer } => show(&store, &peer_of(peer)?, out),
        Command::Request { peer } => {
            out.done(&admin::queue(&store, &peer_of(peer)?, QueuedAct::Request, Actor::Cli)?)
        }
        Command::Approve { peer } => {
            out.done(&admin::decide(&store, &peer_of(peer)?, Decision::Approve, Actor::Cli)?)
        }
        Command::Deny { peer: Some(peer), .. } => {
            out.done(&admin::decide(&store, &peer_of(peer)?, Decision::Deny, Actor::Cli)?)
        }
        Command::Deny { peer: None, site, all_pending, older_than } => {
            let sel = admin::Selection {
                site: site.as_deref().map(Domain::new).transpose()?,
                all_pending: *all_pending,
                older_than_secs: older_than.as_deref().map(admin::parse_age).transpose()?,
            };
            out.bulk(&admin::deny_pending(&store, &sel, Actor::Cli)?)
        }
        Command::Dropped => {
            let d = admin::dropped(&store)?;
            if !out.json(&d) {
                println!("{}", d.as_ref().map_or("none dropped at the cap".into(), admin::dropped_line));
            }
            Ok(())
        }
        Command::Revoke { peer } => {
            out.done(&admin::queue(&store, &peer_of(peer)?, QueuedAct::Revoke, Actor::Cli)?)
        }
        Command::Groups { peer, set } => groups(cli, &store, &peer_of(peer)?, set.as_deref(), out),
        Command::Log { peer, limit } => {
            let peer = peer.as_deref().map(Domain::new).transpose()?;
            out.log(&admin::log(&store, peer.as_ref(), *limit)?)
        }
    }
}

/// Prints results as text for people or, with `--json`, as the shared vocabulary.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// With `--json`, prints `v` and returns true; the caller prints text otherwise.
    fn json<T: Serialize + ?Sized>(self, v: &T) -> bool {
        if self.json {
            println!("{}", serde_json::to_string(v).expect("views serialise"));
        }
        self.json
    }

    fn done(self, d: &Done) -> Result<()> {
        if !self.json(d) {
            println!("{} {}: {}", server_trust::vocab::name(&d.act), d.peer, d.detail);
        }
        Ok(())
    }

    /// A bulk act: the peers it was recorded for, one a line, then those skipped.
    fn bulk(self, d: &admin::BulkDone) -> Result<()> {
        if !self.json(d) {
            let act = server_trust::vocab::name(&d.act);
            println!("{act} ({}): {}", d.selection, d.detail);
            for p in &d.peers {
                println!("  {act} {p}");
            }
            for s in &d.skipped {
                println!("  skipped {}: {}", s.peer, s.reason);
            }
        }
        // Skipped requests (decided or removed meanwhile, unreadable) are listed, not an error:
        // the others were recorded.
        Ok(())
    }

    fn roster(self, store: &Store, peers: &[PeerView]) -> Result<()> {
        if self.json(peers) {
            return Ok(());
        }
        println!("roster of {} ({} peer(s))", store.host(), peers.len());
        for p in peers {
            let trust = if p.trusted { "trusted" } else { "-" };
            let seen = match (p.available, &p.since) {
                (Some(true), Some(t)) => format!("available since {t}"),
                (Some(false), Some(t)) => format!("last seen {t}"),
                _ => "-".to_string(),
            };
            let groups = p.groups.join(",");
            println!("  {:<32} {:<20} {trust:<8} {seen:<36} {groups}", p.peer.as_str(), p.state.as_str());
        }
        Ok(())
    }

    fn log(self, recs: &[server_trust::store::AuditRecord]) -> Result<()> {
        if self.json(recs) {
            return Ok(());
        }
        for r in recs {
            let change = match (r.from, r.to) {
                (Some(a), Some(b)) if a != b => format!(" ({a} -> {b})"),
                _ => String::new(),
            };
            println!("{} {:<24} {:<7} {}{change}", r.time, r.peer, r.actor.as_str(), r.event);
        }
        Ok(())
    }
}

fn pending(store: &Store, out: Out) -> Result<()> {
    let (reqs, bad) = admin::pending(store);
    for e in &bad {
        eprintln!("server-trust: {e}");
    }
    if !out.json(&reqs) {
        println!("{} pending request(s) for {}", reqs.len(), store.host());
        for r in &reqs {
            println!(
                "  {:<32} decision={:<8} first_seen={} times_seen={}",
                r.peer.as_str(),
                r.decision.as_str(),
                r.first_seen,
                r.times_seen
            );
            // What is known about the requester, and what is not (see `show` for all).
            for line in r.evidence.lines() {
                println!("      {line}");
            }
        }
        if let Ok(Some(d)) = admin::dropped(store) {
            println!("{}", admin::dropped_line(&d));
        }
    }
    if bad.is_empty() { Ok(()) } else { Err(Error::Unreadable { count: bad.len() }) }
}

fn show(store: &Store, peer: &Domain, out: Out) -> Result<()> {
    let report = admin::show(store, peer)?;
    if out.json(&report) {
        return Ok(());
    }
    match &report.entry {
        Some(e) => {
            println!("{peer}: {} ({})", e.state, if e.state.from() { "trusted" } else { "not trusted" });
            print!("{}", toml::to_string_pretty(e).expect("serialisable"));
        }
        None => println!("{peer}: not in the roster"),
    }
    if let Some(p) = &report.pending {
        println!("pending request: {}", store.pending_path(peer).display());
        for line in p.summary_lines() {
            println!("  {line}");
        }
        print!("{}", toml::to_string_pretty(p).expect("serialisable"));
    }
    for w in &report.waiting {
        println!("waiting for the XMPP server to accept it: {} (recorded {})", w.kind.as_str(), w.since);
    }
    for r in report.history.iter().rev().take(10).rev() {
        println!("  {} {:<8} {}", r.time, r.actor.as_str(), r.event);
    }
    Ok(())
}

/// The engine as an admin tool uses it: no watcher, waits for the lock like the other acts.
fn admin_config() -> Config {
    Config { watch: false, lock_wait: server_trust::store::ADMIN_LOCK_WAIT, ..Config::default() }
}

/// Through the engine, like every roster change: same lock, audit line and trust events.
fn groups(cli: &Cli, store: &Store, peer: &Domain, set: Option<&str>, out: Out) -> Result<()> {
    let groups = match set {
        None => {
            let roster = store.load_roster()?;
            roster.peers.get(peer).ok_or_else(|| Error::NotInRoster(peer.clone()))?.groups.clone()
        }
        Some(list) => {
            // The store's own root: `--store` may have named the host folder itself.
            let root = store.dir().parent().unwrap_or(&cli.store);
            let engine = Engine::open(root, store.host().as_str(), admin_config())?;
            let groups = admin::parse_groups(list);
            engine.set_groups(peer.as_str(), groups.clone(), Actor::Cli)?;
            groups
        }
    };
    if !out.json(&admin::GroupsView { peer: peer.clone(), groups: groups.clone() }) {
        println!("{peer}: {}", groups.join(","));
    }
    Ok(())
}
