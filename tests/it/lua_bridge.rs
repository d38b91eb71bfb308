//! The Lua 5.4 module (`server_trust_lua.so`, built by the lab for this profile) loaded into the
//! system's `lua5.4`, the same interpreter Prosody runs on: results, `nil, message` errors, and
//! Lua errors for bad calls.

use std::path::Path;
use std::process::Command;

use server_trust_lab::artifacts;

#[test]
fn lua_bridge_behaves_as_prosody_expects() {
    let lib = artifacts::lua_module();
    assert!(lib.exists(), "{} missing", lib.display());
    let store = tempfile::tempdir().unwrap();
    let out = Command::new("lua5.4")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lua/bridge.lua"))
        .arg(lib)
        .arg(store.path())
        .output()
        .expect("lua5.4 is needed (scripts/setup.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("lua bridge OK"), "{text}");
}
