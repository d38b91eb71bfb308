//! The main job, end to end: two real Prosody 0.12 servers (montague.lit, capulet.lit)
//! federating over s2s on loopback become XEP-0267 server buddies through the admin CLI.
//! Run with `bash scripts/demo.sh` (installs Prosody, builds, runs this); the lab builds the
//! CLI and the Lua module for the profile in use.

use std::path::Path;
use std::time::{Duration, Instant};

use server_trust_lab::{CAPULET, Lab, MONTAGUE, Server, TrustAdmin};

fn cli(srv: &Server, args: &[&str]) -> String {
    srv.cli_text(args)
}

fn show(who: &str, cmd: &str, out: &str) {
    println!("\n[{who}]$ server-trust {cmd}");
    for line in out.lines() {
        println!("    {line}");
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("  ... {what} ({} ms)", t0.elapsed().as_millis());
}

fn has(path: &Path) -> bool {
    path.exists()
}

fn main() {
    println!("Starting two Prosody servers on loopback with mod_server_trust ...");
    let lab = Lab::server_trust();
    let (m, c) = (&lab.montague, &lab.capulet);
    println!("  montague.lit on {}:5269, capulet.lit on {}:5269", m.ip, c.ip);

    show("montague admin", &format!("request {CAPULET}"), &cli(m, &["request", CAPULET]));
    let pending = c.pending_file(MONTAGUE);
    wait_until("capulet received montague's subscribe and prompted its admin", || has(&pending));
    // The prompt, as capulet's admin sees it: a chat message to each of the host's `admins`
    // (from the host JID) and a warn line in Prosody's log.
    let to_admin =
        |s: &server_trust_lab::Stanza| s.name == "message" && s.to.as_deref() == Some("admin@capulet.lit");
    wait_until("capulet's admin got the prompt", || c.received().iter().any(to_admin));
    let chat = c.received().into_iter().find(to_admin).and_then(|s| s.body).unwrap_or_default();
    println!("\nThe chat message admin@capulet.lit (in capulet's `admins`) received from capulet.lit:");
    for line in chat.lines() {
        println!("    {line}");
    }
    println!("\nThe warn line in capulet's log:");
    let console = std::fs::read_to_string(&c.console_log).unwrap_or_default();
    for line in console.lines().filter(|l| l.contains("warn") && l.contains("approve")).take(1) {
        println!("    {}", line.trim());
    }
    println!("\ncapulet's pending request file {}:", pending.display());
    for line in std::fs::read_to_string(&pending).unwrap().lines() {
        println!("    {line}");
    }
    show("capulet admin", "pending", &cli(c, &["pending"]));
    show("capulet admin", &format!("approve {MONTAGUE}"), &cli(c, &["approve", MONTAGUE]));
    let both =
        |s: &Server, peer: &str| cli(s, &["list"]).lines().any(|l| l.contains(peer) && l.contains("both"));
    wait_until("both servers reached subscription Both", || both(m, CAPULET) && both(c, MONTAGUE));

    show("montague admin", "list", &cli(m, &["list"]));
    show("capulet admin", "list", &cli(c, &["list"]));
    show("capulet admin", &format!("log --peer {MONTAGUE}"), &cli(c, &["log", "--peer", MONTAGUE]));

    println!("\nStanzas montague.lit received from capulet.lit over s2s:");
    for s in m.received().iter().filter(|s| s.via_s2s() && s.from.as_deref() == Some(CAPULET)) {
        println!("    {}", s.xml);
    }
    println!("\nStopping both servers.");
    drop(lab);
    println!("Done: montague.lit and capulet.lit are server buddies (state Both on each side).");
}
