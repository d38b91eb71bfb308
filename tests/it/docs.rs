//! The README's commands, run as the README shows them (server paths replaced by the lab's),
//! and a check that every command the README shows is run by some test or script, so the docs
//! cannot drift from what is tested.

use std::fs;
use std::path::Path;
use std::process::Command;

use server_trust_lab::{CAPULET, Lab, MONTAGUE, Server, TrustAdmin, artifacts, presence_from};

use crate::support::WAIT;

const BACKUP: &str = "cp -a /var/lib/prosody/server_trust /var/backups/server_trust.backup";
const RESTORE: &str = "rm -rf /var/lib/prosody/server_trust.old && mv /var/lib/prosody/server_trust /var/lib/prosody/server_trust.old && cp -a /var/backups/server_trust.backup /var/lib/prosody/server_trust";
const LOG_LINES: &str = r#"grep -E "Server buddies|Server buddy|No admins set" /var/log/prosody/prosody.log"#;

/// `command` with Debian's paths replaced by the lab server's.
fn run_as_readme_says(command: &str, srv: &Server, backups: &Path) -> std::process::Output {
    let data = srv.store.parent().expect("the store is <data>/server_trust");
    let command = command
        .replace("/var/lib/prosody", &data.display().to_string())
        .replace("/var/backups", &backups.display().to_string())
        .replace("/var/log/prosody/prosody.log", &srv.console_log.display().to_string());
    Command::new("sh").arg("-c").arg(&command).output().unwrap()
}

#[test]
fn backup_and_restore_while_the_server_runs() {
    let lab = Lab::server_trust();
    let (m, c) = (&lab.montague, &lab.capulet);
    m.cli(&["request", CAPULET]);
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    c.cli(&["approve", MONTAGUE]);
    c.wait_state(MONTAGUE, "both", WAIT);

    let backups = tempfile::tempdir().unwrap();
    let out = run_as_readme_says(BACKUP, c, backups.path());
    assert!(out.status.success(), "{out:?}");

    // After the backup: capulet revokes, then restores the backup while running.
    c.cli(&["revoke", MONTAGUE]);
    c.wait_state(MONTAGUE, "absent", WAIT);
    m.wait_for("unsubscribed from capulet", WAIT, presence_from(CAPULET, "unsubscribed"));
    let out = run_as_readme_says(RESTORE, c, backups.path());
    assert!(out.status.success(), "{out:?}");

    // The running server adopts the restored roster, audits it and tells its admins.
    c.wait_state(MONTAGUE, "both", WAIT);
    let chat = c.wait_for("the admins are told", WAIT, |s| {
        s.name == "message" && s.body.as_deref().is_some_and(|b| b.contains("changed outside the server"))
    });
    assert!(chat.body.unwrap().contains(MONTAGUE));
    let log = c.cli_text(&["log", "--peer", MONTAGUE]);
    assert!(log.contains("changed outside the server"), "{log}");
    // The decisions after the backup are still readable in the old folder.
    let old = c.store.with_extension("old");
    let out = Command::new(artifacts::cli())
        .arg("--store")
        .arg(&old)
        .args(["log", "--peer", MONTAGUE])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoke"), "{out:?}");
}

#[test]
fn troubleshooting_grep_finds_the_module_lines() {
    let lab = Lab::server_trust();
    let backups = tempfile::tempdir().unwrap();
    let out = run_as_readme_says(LOG_LINES, &lab.capulet, backups.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("Server buddies on: store"), "{out:?}");
}

/// The shell commands in README.md's ```sh blocks, without comments.
fn readme_commands() -> Vec<String> {
    let readme = fs::read_to_string(artifacts::workspace_dir().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        let command = line.split(" #").next().unwrap().trim();
        if in_sh && !command.is_empty() && !command.starts_with('#') {
            out.push(command.to_string());
        }
    }
    out
}

/// Every file a test or the test command runs: tests, scripts, examples, CI.
fn test_sources(dir: &Path, out: &mut String) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["target", ".git", "fuzz", "node_modules"].contains(&name.as_str()) {
                test_sources(&path, out);
            }
        } else if (["rs", "sh", "py", "lua", "erl"].iter().any(|e| name.ends_with(&format!(".{e}")))
            || name == "run")
            && path
                .components()
                .any(|c| ["tests", "scripts", "examples", ".ci"].contains(&c.as_os_str().to_str().unwrap()))
            && !path.ends_with("tests/it/docs.rs")
        {
            // Code only: a command named in a comment is not run.
            let text = fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                let code = line.trim_start();
                if !["//", "#", "--", "%", "*"].iter().any(|c| code.starts_with(c)) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
}

/// Every `server-trust …` line the README shows, run as shown against a store with requests
/// from one site (the store and host from the environment, as the README says they may be).
#[test]
fn the_readme_cli_commands_run() {
    let store = tempfile::tempdir().unwrap();
    let e = crate::support::engine(store.path(), CAPULET, crate::support::cfg());
    for peer in ["a1.github.io", "a2.github.io", MONTAGUE] {
        e.inbound(peer, server_trust::PresenceKind::Subscribe, None).unwrap();
    }
    let commands: Vec<String> =
        readme_commands().into_iter().filter(|c| c.starts_with("server-trust ")).collect();
    assert!(commands.len() >= 3, "{commands:?}");
    for command in &commands {
        let out = Command::new(artifacts::cli())
            .args(command.split_whitespace().skip(1))
            .env("SERVER_TRUST_STORE", store.path())
            .env("SERVER_TRUST_HOST", CAPULET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        e.poll().unwrap(); // the running server carries out what was recorded (renew needs it)
    }
    assert!(e.entry(MONTAGUE).unwrap().unwrap().expires_at.is_some(), "approve --for gave no end");
    assert_eq!(
        e.state("a1.github.io").unwrap(),
        server_trust::Subscription::None,
        "deny --site did not deny"
    );
}

#[test]
fn every_readme_command_is_run_by_a_test() {
    let root = artifacts::workspace_dir();
    let mut sources = String::new();
    test_sources(root, &mut sources);
    let ours = [BACKUP, RESTORE, LOG_LINES];
    let commands: Vec<String> =
        readme_commands().into_iter().filter(|c| !c.starts_with("server-trust ")).collect(); // run below
    assert!(commands.len() >= 5, "{commands:?}");
    let untested: Vec<&String> =
        commands.iter().filter(|c| !ours.contains(&c.as_str()) && !sources.contains(c.as_str())).collect();
    assert!(
        untested.is_empty(),
        "README commands no test runs (run them in a test, verbatim): {untested:#?}"
    );
}
