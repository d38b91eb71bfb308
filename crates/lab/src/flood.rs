//! A flood of XEP-0267 requests over real s2s, for `benches/flood.rs`: the montague server of a
//! [`Lab`] serves many extra VirtualHosts (the attacker's domains), each of which sends
//! `<presence type='subscribe'/>` from its domain JID to capulet.lit over its own s2s stream
//! (STARTTLS + dialback back to that domain), while a c2s user of capulet pings its server.
//!
//! * [`flood_domains`]: the attacker's names, spread over several registrable domains so the
//!   per-site pending cap shows, all under `.lit` (the lab's resolver answers that zone
//!   locally; other names would wait for an upstream DNS server the lab does not have).
//! * [`flood_lab_options`]: what the target needs on top of the usual lab: a c2s user
//!   (SASL PLAIN without TLS, loopback only) and XEP-0199.
//! * [`RecordTail`]: reads a server's growing `lab-received.jsonl` incrementally.
//! * [`vm_rss_kib`]: a process's resident set from `/proc/<pid>/status`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lua::lua_str;
use crate::prosody::{LabOptions, Server};
use crate::stanza::Stanza;

/// The c2s user of the target that pings its server during the flood.
pub const FLOOD_USER: &str = "flood";
/// Its password (loopback lab only).
pub const FLOOD_PASSWORD: &str = "flood-secret";

/// `n` distinct attacker domains: 40% `xI.attacker.lit` (one registrable domain), 40% `xI.wJ.lit`
/// spread over `max(1, n / 50)` sites, 20% `sI.lit` (each a site of its own).
pub fn flood_domains(n: usize) -> Vec<String> {
    let wild = n * 2 / 5;
    let grouped = n * 2 / 5;
    let sites = (n / 50).max(1);
    let mut v = Vec::with_capacity(n);
    v.extend((0..wild).map(|i| format!("x{i}.attacker.lit")));
    v.extend((0..grouped).map(|i| format!("x{i}.w{}.lit", i % sites)));
    v.extend((0..n - wild - grouped).map(|i| format!("s{i}.lit")));
    v
}

/// Lab options for a flood from `domains` (served by montague) against capulet:
/// * capulet's c2s accepts SASL PLAIN without TLS (loopback only), with mod_saslauth (login
///   and resource binding) and mod_ping (XEP-0199) loaded;
/// * `s2s_timeout` is Prosody's default (90 s), not the lab's 10 s;
/// * both servers log at `info` to their console log only: the lab's debug log would write
///   every stanza of thousands of streams and cost the servers more than the flood itself
///   (set `debug_log` to keep it).
pub fn flood_lab_options(domains: &[String], debug_log: bool) -> LabOptions {
    // Prosody's own s2s_timeout (90 s) instead of the lab's 10 s: a stream that needs longer
    // than 10 s for STARTTLS and dialback while hundreds of others do the same is slow, not
    // dead, and its request would be lost.
    let mut extra_global = String::from(
        "c2s_require_encryption = false\nallow_unencrypted_plain_auth = true\ns2s_timeout = 90\n",
    );
    if !debug_log {
        extra_global.push_str("log = { { levels = { min = \"info\" }, to = \"console\" } }\n");
    }
    LabOptions {
        extra_global,
        // Replaces the lab's host line (same module plus the two the c2s user needs).
        extra_host: "\tmodules_enabled = { \"server_trust\"; \"saslauth\"; \"ping\" }".into(),
        montague_extra_hosts: domains.to_vec(),
        ..LabOptions::default()
    }
}

/// Creates the c2s user [`FLOOD_USER`] on `srv` (through the admin shell of the running server).
pub fn create_flood_user(srv: &Server) {
    let jid = format!("{FLOOD_USER}@{}", srv.host);
    let out = srv.shell_ok(&format!("user:create({}, {})", lua_str(&jid), lua_str(FLOOD_PASSWORD)));
    assert!(out.contains("OK") || out.contains("created"), "user:create {jid}: {out}");
}

/// Makes each of `hosts` (VirtualHosts of `srv`) post `<presence type='subscribe'/>` to `to`
/// from its domain JID, with id `<id_prefix>-<host>`, through one raw-Lua admin-shell line;
/// returns how many were posted. Every host whose s2s stream to `to` is not up yet starts one
/// at once.
pub fn subscribe_from(srv: &Server, hosts: &[String], to: &str, id_prefix: &str) -> usize {
    post_from(srv, hosts, to, id_prefix, "st.presence({ from = h, to = to, type = 'subscribe', id = id })")
}

/// Like [`subscribe_from`], with `<message type='headline'/>` instead: the same s2s streams
/// and stanza count, but nothing mod_server_trust (or any other module) acts on.
pub fn headline_from(srv: &Server, hosts: &[String], to: &str, id_prefix: &str) -> usize {
    post_from(srv, hosts, to, id_prefix, "st.message({ from = h, to = to, type = 'headline', id = id })")
}

/// Posts the stanza built by `ctor` (Lua, with `st`, `h`, `to` and `id` in scope) from each of
/// `hosts`.
fn post_from(srv: &Server, hosts: &[String], to: &str, id_prefix: &str, ctor: &str) -> usize {
    let list = hosts.iter().map(|h| lua_str(h)).collect::<Vec<_>>().join(",");
    let line = format!(
        ">local st = require'util.stanza' local to, n = {to}, 0 \
         for _, h in ipairs({{{list}}}) do n = n + 1 local id = {prefix}..'-'..h \
         prosody.core_post_stanza(prosody.hosts[h], {ctor}) end return 'posted '..n",
        to = lua_str(to),
        prefix = lua_str(id_prefix),
    );
    let out = srv.shell_ok(&line);
    out.split_whitespace()
        .skip_while(|w| *w != "posted")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"))
}

/// Reads a JSON-lines record file as it grows, parsing only what is new.
pub struct RecordTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl RecordTail {
    /// Starts at the current end of `path` (records already there are skipped).
    pub fn from_end(path: &Path) -> RecordTail {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        RecordTail { path: path.to_path_buf(), offset, partial: Vec::new() }
    }

    /// Starts at the beginning of `path`.
    pub fn from_start(path: &Path) -> RecordTail {
        RecordTail { path: path.to_path_buf(), offset: 0, partial: Vec::new() }
    }

    /// The complete records written since the last call.
    pub fn read_new(&mut self) -> Vec<Stanza> {
        let Ok(mut f) = File::open(&self.path) else { return Vec::new() };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(n) = f.read_to_end(&mut bytes) else { return Vec::new() };
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial.drain(..=last_nl).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Stanza::from_json(&v))
            .collect()
    }
}

/// `VmRSS` of process `pid` in KiB (`None` once it is gone).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Lua heap of `srv` in KiB (`collectgarbage("count")` through the admin shell), after a full
/// collection when `collect` is set.
pub fn lua_heap_kib(srv: &Server, collect: bool) -> f64 {
    let gc = if collect { "collectgarbage('collect') " } else { "" };
    let out = srv.shell_ok(&format!(">{gc}return 'heap '..collectgarbage('count')"));
    out.split_whitespace()
        .skip_while(|w| *w != "heap")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no heap size in {out}"))
}

/// How long the flood bench lets a server with thousands of VirtualHosts take to start.
pub const FLOOD_START_TIMEOUT: Duration = Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_distinct_and_spread_over_sites() {
        let d = flood_domains(1000);
        let mut u = d.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 1000);
        assert_eq!(d.iter().filter(|h| h.ends_with(".attacker.lit")).count(), 400);
        assert_eq!(d.iter().filter(|h| h.starts_with('s')).count(), 200);
        assert_eq!(flood_domains(50).len(), 50);
    }
}
