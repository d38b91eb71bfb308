//! The Lua 5.4 module (`server_trust_lua.so`, built by the lab for this profile) loaded into the
//! system's `lua5.4`, the same interpreter Prosody runs on: results, `nil, message` errors, and
//! Lua errors for bad calls. Then mod_server_trust's Lua mirror of the trusted set inside a
//! real Prosody, checked against the engine after each kind of change.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use server_trust_lab::lua::{lua_path, lua_str};
use server_trust_lab::{CAPULET, MONTAGUE, Server, TrustAdmin, artifacts};

use crate::support::{WAIT, requested};

/// Runs `tests/lua/<script>` with plain Lua 5.4 on the real native module and a fresh
/// store; it must succeed and print `done`.
fn run_lua_script(script: &str, done: &str) {
    let lib = artifacts::lua_module();
    assert!(lib.exists(), "{} missing", lib.display());
    let store = tempfile::tempdir().unwrap();
    let out = Command::new("lua5.4")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lua").join(script))
        .arg(lib)
        .arg(store.path())
        .output()
        .expect("lua5.4 is needed (scripts/setup.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(done), "{text}");
}

#[test]
fn lua_bridge_behaves_as_prosody_expects() {
    run_lua_script("bridge.lua", "lua bridge OK");
}

/// Spellings the mirror check asks about: normal, uppercase, fully qualified, A-label, strangers.
const PROBES: &str = "montague.lit,Montague.LIT,MONTAGUE.LIT.,montague.lit.,bücher.de,BÜCHER.de,xn--bcher-kva.de,\
                      XN--BCHER-KVA.DE,xn--bcher-kva.de.,stranger.example,Stranger.Example,xn--stranger.example";

/// Runs tests/lua/mirror.lua in capulet until its trusted set and groups are `trusted` and
/// `groups`; every run on the way must agree with the engine ("mirror OK").
fn mirror_reaches(c: &Server, trusted: &str, groups: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lua/mirror.lua");
    let line = format!(">return dofile({})({}, {})", lua_path(&script), lua_str(CAPULET), lua_str(PROBES));
    let want = format!("trusted={trusted} (groups: {groups})");
    let t0 = Instant::now();
    loop {
        let out = c.shell_ok(&line);
        assert!(out.contains("mirror OK"), "{out}");
        if out.contains(&want) {
            return;
        }
        assert!(t0.elapsed() < WAIT, "mirror never reached {want}: {out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Replaces roster.toml as an editor would (write a copy, rename it over the original).
fn edit_roster(c: &Server, edit: impl FnOnce(String) -> String) {
    let path = c.store.join(CAPULET).join("roster.toml");
    let text = edit(fs::read_to_string(&path).unwrap());
    let tmp = path.with_extension("toml.edit");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, &path).unwrap();
}

#[test]
fn prosody_mirror_follows_approve_groups_hand_edits_and_revoke() {
    let lab = requested();
    let c = &lab.capulet;
    mirror_reaches(c, "", "");

    c.cli(&["approve", MONTAGUE]);
    mirror_reaches(c, MONTAGUE, "");

    // set_groups by the CLI: another process, picked up by the module's poll.
    c.cli(&["groups", MONTAGUE, "--set", "incidents"]);
    mirror_reaches(c, MONTAGUE, "montague.lit=incidents");

    // A hand edit adds an internationalised peer: found under both its U-label and A-label.
    edit_roster(c, |t| {
        t + "\n[peers.\"bücher.de\"]\nstate = \"both\"\ngroups = [\"incidents\", \"muc-limits\"]\n"
    });
    mirror_reaches(
        c,
        "bücher.de,montague.lit,xn--bcher-kva.de",
        "bücher.de=incidents+muc-limits,montague.lit=incidents",
    );

    // The engine never writes over a roster.toml another program wrote less than 2 s ago
    // (it may be a copy still in progress), so the CLI waits that out first.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    c.cli(&["revoke", MONTAGUE]);
    mirror_reaches(c, "bücher.de,xn--bcher-kva.de", "bücher.de=incidents+muc-limits");

    // A hand edit takes trust away: both spellings go.
    edit_roster(c, |t| {
        let (head, tail) = t.split_once("[peers.\"bücher.de\"]").expect("bücher.de in roster.toml");
        format!("{head}[peers.\"bücher.de\"]{}", tail.replacen("state = \"both\"", "state = \"none\"", 1))
    });
    mirror_reaches(c, "", "");
}

/// The outbox through the real native module, as mod_server_trust drives it: subscription
/// stanzas confirmed as Prosody sends them, put back by a bounce, resent after the backoff
/// and after a restart.
#[test]
fn lua_outbox_resends_a_bounced_subscribed() {
    run_lua_script("outbox.lua", "lua outbox OK");
}
