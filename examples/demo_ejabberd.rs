//! The second demo: a real ejabberd 23.01 (`verona.lit`, with mod_server_trust and the
//! server-trust sidecar) and a real Prosody 0.12 (`montague.lit`, with mod_server_trust)
//! federating over s2s on loopback become XEP-0267 server buddies through the admin CLI.
//! Run with `bash scripts/demo-ejabberd.sh` (installs Prosody and ejabberd, builds, runs this);
//! the lab (`crates/lab/src/ejabberd.rs`) builds the CLI, the Lua module and the sidecar for
//! the profile in use and compiles the Erlang module with `erlc`.

use std::time::{Duration, Instant};

use server_trust_lab::ejabberd::{self, EjabberdLab, EjabberdOptions, VERONA};
use server_trust_lab::{MONTAGUE, TrustAdmin};

fn show(who: &str, cmd: &str, out: &str) {
    println!("\n[{who}]$ {cmd}");
    for line in out.lines() {
        println!("    {line}");
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("  ... {what} ({} ms)", t0.elapsed().as_millis());
}

fn main() {
    let t_start = Instant::now();
    println!(
        "Starting ejabberd (verona.lit, mod_server_trust + sidecar) and Prosody (montague.lit) on loopback ..."
    );
    let sidecar = ejabberd::sidecar_bin();
    server_trust_lab::artifacts::get();
    println!("  built the sidecar, the CLI and the Lua module in {} ms", t_start.elapsed().as_millis());
    let t_up = Instant::now();
    let lab = EjabberdLab::start(EjabberdOptions::new(sidecar));
    let (e, sc, p) = (&lab.ejabberd, &lab.sidecar, lab.prosody());
    let m = p.admin(MONTAGUE);
    println!("  verona.lit: ejabberd 23.01 on {}:5269 (API :5280), node {}", e.ip, e.node);
    println!("  sidecar:    http://{} (store {})", sc.addr, sc.store.display());
    println!("  montague.lit: Prosody 0.12 on {}:5269", p.ip);
    println!(
        "  all up in {} ms (erlc of the module, ejabberd boot, API token, sidecar, Prosody)",
        t_up.elapsed().as_millis()
    );

    show("montague admin", &format!("server-trust request {VERONA}"), &m.cli_text(&["request", VERONA]));
    let pending = sc.pending_file(MONTAGUE);
    wait_until("ejabberd received montague's subscribe, the sidecar prompted verona's admin", || {
        pending.exists()
    });
    println!("\nverona's pending request file {}:", pending.display());
    for line in std::fs::read_to_string(&pending).unwrap().lines() {
        println!("    {line}");
    }
    show("verona admin", "server-trust pending", &sc.cli_text(&["pending"]));
    show(
        "verona admin",
        &format!("ejabberdctl server_trust_is_trusted {VERONA} {MONTAGUE} \"\""),
        &e.ctl_ok(&["server_trust_is_trusted", VERONA, MONTAGUE, ""]),
    );

    let t_approve = Instant::now();
    show("verona admin", &format!("server-trust approve {MONTAGUE}"), &sc.cli_text(&["approve", MONTAGUE]));
    let subscribed = |s: &server_trust_lab::Stanza| {
        s.host == MONTAGUE && s.via_s2s() && s.is_type("subscribed") && s.from.as_deref() == Some(VERONA)
    };
    wait_until("montague received `subscribed` from verona over s2s", || p.received().iter().any(subscribed));
    let both = |a: &dyn TrustAdmin, peer: &str| a.state(peer) == "both";
    wait_until("both servers reached subscription Both", || both(sc, MONTAGUE) && both(&m, VERONA));
    println!("  (approve -> Both on both sides: {} ms)", t_approve.elapsed().as_millis());
    wait_until("is_trusted inside ejabberd follows (the module's long poll)", || {
        e.ctl_ok(&["server_trust_is_trusted", VERONA, MONTAGUE, ""]) == "true"
    });

    show("montague admin", "server-trust list", &m.cli_text(&["list"]));
    show("verona admin", "server-trust list", &sc.cli_text(&["list"]));
    show(
        "verona admin",
        &format!("ejabberdctl server_trust_is_trusted {VERONA} {MONTAGUE} \"\""),
        &e.ctl_ok(&["server_trust_is_trusted", VERONA, MONTAGUE, ""]),
    );
    show(
        "verona admin",
        &format!("ejabberdctl server_trust_status {VERONA}"),
        &e.ctl_ok(&["server_trust_status", VERONA]),
    );
    show(
        "verona admin",
        &format!("server-trust log --peer {MONTAGUE}"),
        &sc.cli_text(&["log", "--peer", MONTAGUE]),
    );

    println!("\nStanzas montague.lit received from verona.lit over s2s (recorded by Prosody):");
    for s in
        p.received().iter().filter(|s| s.host == MONTAGUE && s.via_s2s() && s.from.as_deref() == Some(VERONA))
    {
        println!("    {}", s.xml);
    }
    println!(
        "\nWhat verona.lit sent: the sidecar's mod_http_api send_stanza calls, as ejabberd logged them:"
    );
    for entry in e.log_entries().iter().filter(|l| l.contains("API call send_stanza")) {
        let flat: String = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        let field = |k: &str| {
            let key = format!("{{<<\"{k}\">>,");
            let (_, rest) = flat.split_once(&key)?;
            let (v, _) = rest.trim_start().strip_prefix("<<\"")?.split_once("\">>")?;
            Some(v.to_string())
        };
        match (field("from"), field("to"), field("stanza")) {
            (Some(f), Some(t), Some(st)) => println!("    from={f} to={t} {st}"),
            _ => println!("    {flat}"),
        }
    }
    println!("\nWhat the sidecar did with the presence mod_server_trust handed it (its log):");
    for line in std::fs::read_to_string(&sc.console_log).unwrap_or_default().lines() {
        if line.contains(MONTAGUE) {
            println!("    {line}");
        }
    }

    println!("\nStopping ejabberd, the sidecar and Prosody.");
    let t_stop = Instant::now();
    drop(lab);
    println!("  stopped in {} ms", t_stop.elapsed().as_millis());
    println!(
        "Done in {:.1} s: verona.lit (ejabberd) and montague.lit (Prosody) are server buddies (state Both on each side).",
        t_start.elapsed().as_secs_f64()
    );
}
