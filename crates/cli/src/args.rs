//! The command line, on its own so `build.rs` can generate the man page and the shell
//! completions from the very same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Inspect and decide XEP-0267 server buddy requests.
///
/// server-trust shows the server roster and the pending requests of an XMPP server that runs
/// server-trust (Prosody's mod_server_trust, the sidecar for ejabberd, or a C host), and
/// records the admin's decisions in the store where the running server picks them up within
/// moments. It never talks XMPP itself, so it works the same with every server, while it runs.
///
/// Run as root, it first switches to the owner of the store (as prosodyctl does), so nothing
/// it writes is left unwritable by the server. It waits up to 10 s for the store's lock, then
/// says which process holds it.
#[derive(Parser, Debug)]
#[command(name = "server-trust", version)]
pub struct Cli {
    /// Store directory (holds one folder per served host).
    #[arg(long, env = "SERVER_TRUST_STORE", value_name = "DIR")]
    pub store: PathBuf,
    /// Served host; may be omitted when the store holds exactly one.
    #[arg(long, env = "SERVER_TRUST_HOST")]
    pub host: Option<String>,
    /// Machine-readable output (one JSON document).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the server roster.
    List,
    /// Show requests waiting for a decision, and how many the server dropped at the caps.
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
    /// Approve PEER's pending request; with `--for 90d`, for that long only (the server
    /// reminds its admins before the end, then withdraws trust as `revoke` does).
    Approve {
        /// Peer domain.
        peer: String,
        /// Trust PEER for this long only, from when the server carries the approval out
        /// (`90d`, `12h`, `2w`; at most 3650d).
        #[arg(long = "for", value_name = "DURATION")]
        for_: Option<String>,
    },
    /// Deny PEER's pending request, or many at once: `--site github.io` (its subdomains
    /// too), `--all-pending`, either with `--older-than 7d`. Lists the peers denied.
    Deny {
        /// Peer domain.
        #[arg(required_unless_present_any = ["site", "all_pending"])]
        peer: Option<String>,
        /// Deny every pending request from this domain and its subdomains.
        #[arg(long, value_name = "DOMAIN", conflicts_with = "peer")]
        site: Option<String>,
        /// Deny every pending request.
        #[arg(long, conflicts_with_all = ["peer", "site"])]
        all_pending: bool,
        /// Only requests first seen longer ago than AGE (`7d`, `12h`, `30m`, `2w`).
        #[arg(long, value_name = "AGE", conflicts_with = "peer")]
        older_than: Option<String>,
    },
    /// Show how many inbound requests the server dropped at the pending caps, since when.
    Dropped,
    /// Withdraw trust with PEER, both ways.
    Revoke {
        /// Peer domain.
        peer: String,
    },
    /// Set when the trust in PEER, a buddy we approved, ends: `--for 90d` from now,
    /// `--until` a time (one already past ends it at the server's next poll), or `--forever`.
    /// The admins are reminded again before the new end.
    Renew {
        /// Peer domain.
        peer: String,
        /// Trust PEER for this long from now (`90d`, `12h`, `2w`; at most 3650d).
        #[arg(long = "for", value_name = "DURATION", required_unless_present_any = ["until", "forever"])]
        for_: Option<String>,
        /// Trust PEER until this time (RFC 3339, UTC: `2027-03-08T12:00:00Z`).
        #[arg(long, value_name = "TIME", conflicts_with = "for_")]
        until: Option<String>,
        /// Trust PEER with no end.
        #[arg(long, conflicts_with_all = ["for_", "until"])]
        forever: bool,
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
