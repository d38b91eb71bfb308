//! server-trust(1) as built for the package: the sections an admin looks for, no reference to
//! a page nobody installs, and every command under EXAMPLES run against a real store.

use std::path::Path;
use std::process::Command;

use server_trust::{Config, Engine, PresenceKind};

const PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/doc/server-trust.1"));

/// Roff text back to what a reader sees (the escapes `man.rs` writes).
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
}

#[test]
fn has_the_sections_an_admin_looks_for() {
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "STATES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        let heading_plain = format!(".SH {section}\n");
        let heading_quoted = format!(".SH \"{section}\"\n");
        assert!(
            PAGE.contains(&heading_plain) || PAGE.contains(&heading_quoted),
            "no {section} section:\n{PAGE}"
        );
    }
    // NAME is "server-trust \- what it does", not the name twice.
    let name = PAGE.split(".SH NAME\n").nth(1).and_then(|s| s.lines().next()).unwrap();
    assert_eq!(plain(name).matches("server-trust").count(), 1, "{name}");
    // Every command is on this page, with its arguments.
    for cmd in [
        "list", "pending", "show", "request", "approve", "deny", "dropped", "revoke", "renew", "groups",
        "log",
    ] {
        assert!(PAGE.contains(&format!(".TP\n\\fB{}\\fR", cmd.replace('-', "\\-"))), "{cmd} missing");
    }
    assert!(plain(PAGE).contains("[\\fB--site\\fR \\fIDOMAIN\\fR]"), "deny's options lack their values");
    // The glossary names each state exactly as the CLI and the store spell it.
    for state in [
        "none",
        "none+pending-out",
        "none+pending-in",
        "none+pending-out-in",
        "to",
        "to+pending-in",
        "from",
        "from+pending-out",
        "both",
    ] {
        let json = serde_json::to_string(
            &serde_json::from_str::<server_trust::Subscription>(&format!("{state:?}")).unwrap(),
        )
        .unwrap();
        assert_eq!(json, format!("{state:?}"));
        assert!(plain(PAGE).contains(&format!(".B {state}\n")), "state {state} not explained");
    }
}

#[test]
fn refers_only_to_pages_that_are_installed() {
    // clap_mangen's default lists server-trust-list(1) and friends, which nobody installs.
    let text = plain(PAGE);
    let mut refs = Vec::new();
    for (i, _) in text.match_indices('(') {
        let before = text[..i].trim_end();
        let word = before.rsplit(|c: char| c.is_whitespace() || c == '>').next().unwrap_or("");
        let section = &text[i + 1..];
        if section.starts_with(|c: char| c.is_ascii_digit()) && section[1..].starts_with(')') {
            refs.push(format!(
                "{}({})",
                word.trim_start_matches("\\fB").trim_end_matches("\\fR"),
                &section[..1]
            ));
        }
    }
    let shipped = ["server-trust-sidecar(8)"]; // packaging/server-trust-sidecar.8
    for r in &refs {
        assert!(shipped.contains(&r.as_str()), "the page refers to {r}, which the package does not install");
    }
    let sidecar_page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/server-trust-sidecar.8");
    assert!(sidecar_page.exists());
}

#[test]
fn every_example_runs() {
    let examples: Vec<String> =
        PAGE.split(".EX\n").skip(1).map(|s| plain(s.split("\n.EE").next().unwrap())).collect();
    assert!(examples.len() >= 5, "{examples:?}");

    let store = tempfile::tempdir().unwrap();
    let e = Engine::open(store.path(), "capulet.lit", Config { watch: false, ..Config::default() }).unwrap();
    for peer in ["montague.lit", "paris.lit", "a1.github.io", "a2.github.io"] {
        e.inbound(peer, PresenceKind::Subscribe, None).unwrap();
    }
    for example in &examples {
        let example = example
            .replace("/var/lib/prosody/server_trust", &store.path().display().to_string())
            .replace("/var/lib/ejabberd/server_trust", &store.path().display().to_string());
        let mut words = example.split_whitespace();
        assert_eq!(words.next(), Some("sudo"), "{example}");
        assert_eq!(words.next(), Some("server-trust"), "{example}");
        let out = Command::new(env!("CARGO_BIN_EXE_server-trust")).args(words).output().unwrap();
        assert!(
            out.status.success(),
            "{example}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        e.poll().unwrap(); // the server carries out what was recorded
    }
    assert!(e.is_trusted("montague.lit", None), "the approve example did not approve");
    assert!(e.is_trusted("paris.lit", None), "the approve --for example did not approve");
    assert!(e.entry("paris.lit").unwrap().unwrap().expires_at.is_some(), "approve --for gave no end");
    assert!(e.state("a1.github.io").is_err() || !e.is_trusted("a1.github.io", None));
    assert_eq!(e.state("verona.lit").unwrap(), server_trust::Subscription::NonePendingOut);
}
