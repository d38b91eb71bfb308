//! The `server-trust` admin command: reads the store, records decisions, queues acts.
//!
//! The CLI never sends presence itself: decisions are written where the running server
//! looks (`decision` in the pending file, `outbound/` for requests and revocations), so the
//! CLI works the same whether the server is Prosody, a C host or the sidecar.
//!
//! Exit codes: 0 success, 2 error (bad input, missing request, unreadable store).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use server_trust::store::{Decision, QueuedAct, RosterFile, Store};
use server_trust::{Actor, Config, Domain, Engine, Error, Result};

/// XEP-0267 server buddies: inspect and decide server trust requests.
#[derive(Parser, Debug)]
#[command(name = "server-trust", version, about, long_about = None)]
struct Cli {
    /// Store directory (holds one folder per served host).
    #[arg(long, env = "SERVER_TRUST_STORE", value_name = "DIR")]
    store: PathBuf,
    /// Served host; may be omitted when the store holds exactly one.
    #[arg(long, env = "SERVER_TRUST_HOST")]
    host: Option<String>,
    /// Machine-readable output (one JSON document).
    #[arg(long, global = true)]
    json: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Show the server roster.
    List,
    /// Show requests waiting for a decision.
    Pending,
    /// Show everything known about one peer.
    Show {
        /// Peer domain.
        peer: String,
    },
    /// Ask PEER to become a buddy (the server sends `subscribe`; PEER's reciprocal request
    /// is pre-approved).
    Request {
        /// Peer domain.
        peer: String,
    },
    /// Approve PEER's pending request.
    Approve {
        /// Peer domain.
        peer: String,
    },
    /// Deny PEER's pending request.
    Deny {
        /// Peer domain.
        peer: String,
    },
    /// Withdraw trust with PEER, both ways.
    Revoke {
        /// Peer domain.
        peer: String,
    },
    /// Show or replace PEER's groups (scopes such as `incidents`).
    Groups {
        /// Peer domain.
        peer: String,
        /// New comma-separated list (empty string clears).
        #[arg(long)]
        set: Option<String>,
    },
    /// Show the audit log.
    Log {
        /// Only this peer.
        #[arg(long)]
        peer: Option<String>,
        /// Only the last N records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server-trust: {e}");
            ExitCode::from(2)
        }
    }
}

fn open(cli: &Cli) -> Result<Store> {
    let host = match &cli.host {
        Some(h) => Domain::new(h)?,
        None => {
            let hosts = Store::hosts(&cli.store)?;
            match hosts.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::InvalidArgument(format!(
                        "no host folders in {}; pass --host",
                        cli.store.display()
                    )));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(Domain::as_str).collect();
                    return Err(Error::InvalidArgument(format!(
                        "the store holds several hosts ({}); pass --host",
                        names.join(", ")
                    )));
                }
            }
        }
    };
    if !cli.store.join(host.as_str()).is_dir() {
        return Err(Error::InvalidArgument(format!(
            "no store for {host} in {} (has the server run with this store? check --host)",
            cli.store.display()
        )));
    }
    Store::open(&cli.store, &host)
}

/// Runs one parsed command.
fn run(cli: &Cli) -> Result<()> {
    let store = open(cli)?;
    let peer_of = |p: &str| Domain::new(p);
    match &cli.command {
        Command::List => list(&store, cli.json),
        Command::Pending => pending(&store, cli.json),
        Command::Show { peer } => show(&store, &peer_of(peer)?, cli.json),
        Command::Request { peer } => {
            let peer = peer_of(peer)?;
            if &peer == store.host() {
                return Err(Error::InvalidArgument(format!("{peer} is this host")));
            }
            store.queue(&peer, QueuedAct::Request, "cli")?;
            done(cli.json, "request", &peer, "queued: the server sends `subscribe` at its next poll")
        }
        Command::Approve { peer } => decide(&store, &peer_of(peer)?, Decision::Approve, cli.json),
        Command::Deny { peer } => decide(&store, &peer_of(peer)?, Decision::Deny, cli.json),
        Command::Revoke { peer } => {
            let peer = peer_of(peer)?;
            let roster = store.load_roster()?;
            if !roster.peers.contains_key(&peer) {
                return Err(Error::InvalidArgument(format!("{peer} is not in the roster")));
            }
            store.queue(&peer, QueuedAct::Revoke, "cli")?;
            done(cli.json, "revoke", &peer, "queued: the server withdraws trust at its next poll")
        }
        Command::Groups { peer, set } => {
            groups(&cli.store, &store, &peer_of(peer)?, set.as_deref(), cli.json)
        }
        Command::Log { peer, limit } => log(&store, peer.as_deref(), *limit, cli.json),
    }
}

fn done(json: bool, act: &str, peer: &Domain, text: &str) -> Result<()> {
    if json {
        println!("{}", json!({"ok": true, "act": act, "peer": peer, "detail": text}));
    } else {
        println!("{act} {peer}: {text}");
    }
    Ok(())
}

fn decide(store: &Store, peer: &Domain, d: Decision, json: bool) -> Result<()> {
    store.set_decision(peer, d, "cli")?;
    let act = if d == Decision::Approve { "approve" } else { "deny" };
    done(json, act, peer, "recorded: the server answers at its next poll")
}

fn list(store: &Store, json: bool) -> Result<()> {
    let RosterFile { peers } = store.load_roster()?;
    if json {
        let v: Vec<_> = peers
            .iter()
            .map(|(d, e)| {
                json!({"peer": d, "state": e.state, "trusted": e.state.from(), "groups": e.groups,
                       "note": e.note, "approved_at": e.approved_at, "pre_approved": e.pre_approved})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!("roster of {} ({} peer(s))", store.host(), peers.len());
    for (d, e) in &peers {
        let trust = if e.state.from() { "trusted" } else { "-" };
        println!("  {:<32} {:<20} {trust:<8} {}", d.as_str(), e.state.as_str(), e.groups.join(","));
    }
    Ok(())
}

fn pending(store: &Store, json: bool) -> Result<()> {
    let (reqs, bad) = store.list_pending();
    for e in &bad {
        eprintln!("server-trust: {e}");
    }
    if json {
        println!("{}", serde_json::to_string(&reqs).expect("serialisable"));
    } else {
        println!("{} pending request(s) for {}", reqs.len(), store.host());
        for r in &reqs {
            println!(
                "  {:<32} decision={:<8} first_seen={} times_seen={}",
                r.peer.as_str(),
                format!("{:?}", r.decision).to_lowercase(),
                r.first_seen,
                r.times_seen
            );
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{} unreadable pending file(s)", bad.len())))
    }
}

fn show(store: &Store, peer: &Domain, json: bool) -> Result<()> {
    let roster = store.load_roster()?;
    let entry = roster.peers.get(peer);
    let pending = store.read_pending(peer)?;
    let history: Vec<_> = store.read_audit()?.into_iter().filter(|r| r.peer == peer.as_str()).collect();
    if json {
        println!("{}", json!({"peer": peer, "entry": entry, "pending": pending, "history": history}));
        return Ok(());
    }
    match entry {
        Some(e) => {
            println!("{peer}: {} ({})", e.state, if e.state.from() { "trusted" } else { "not trusted" });
            print!("{}", toml::to_string_pretty(e).expect("serialisable"));
        }
        None => println!("{peer}: not in the roster"),
    }
    if let Some(p) = pending {
        println!("pending request: {}", store.pending_path(peer).display());
        print!("{}", toml::to_string_pretty(&p).expect("serialisable"));
    }
    for r in history.iter().rev().take(10).rev() {
        println!("  {} {:<8} {}", r.time, r.actor, r.event);
    }
    Ok(())
}

/// Through the engine, like every roster change: same lock, audit line and trust events.
fn groups(root: &Path, store: &Store, peer: &Domain, set: Option<&str>, json: bool) -> Result<()> {
    let engine = Engine::open(root, store.host().as_str(), Config { watch: false, ..Config::default() })?;
    let entry = engine
        .entry(peer.as_str())?
        .ok_or_else(|| Error::InvalidArgument(format!("{peer} is not in the roster")))?;
    let Some(set) = set else { return groups_out(peer, &entry.groups, json) };
    let groups: Vec<String> =
        set.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
    engine.set_groups(peer.as_str(), groups.clone(), Actor::Cli)?;
    groups_out(peer, &groups, json)
}

fn groups_out(peer: &Domain, groups: &[String], json: bool) -> Result<()> {
    if json {
        println!("{}", json!({"peer": peer, "groups": groups}));
    } else {
        println!("{peer}: {}", groups.join(","));
    }
    Ok(())
}

fn log(store: &Store, peer: Option<&str>, limit: usize, json: bool) -> Result<()> {
    let peer = peer.map(Domain::new).transpose()?;
    let recs: Vec<_> = store
        .read_audit()?
        .into_iter()
        .filter(|r| peer.as_ref().is_none_or(|p| r.peer == p.as_str()))
        .collect();
    let recs = &recs[recs.len().saturating_sub(limit)..];
    if json {
        println!("{}", serde_json::to_string(recs).expect("serialisable"));
        return Ok(());
    }
    for r in recs {
        let change = match (r.from, r.to) {
            (Some(a), Some(b)) if a != b => format!(" ({a} -> {b})"),
            _ => String::new(),
        };
        println!("{} {:<24} {:<7} {}{change}", r.time, r.peer, r.actor, r.event);
    }
    Ok(())
}
