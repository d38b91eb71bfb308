//! Links `server_trust_lua.so` (the name mod_server_trust.lua loads next to itself, and the
//! name Lua's `require "server_trust_lua"` looks for) to the `libserver_trust_lua.so` cargo
//! builds, in the profile folder: `target/<profile>/server_trust_lua.so` is usable as it is.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`: follows CARGO_TARGET_DIR and
    // `--target`. The link dangles until the link step writes the library.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let Some(profile) = out.ancestors().nth(3) else { return };
    let (link, target) = (profile.join("server_trust_lua.so"), "libserver_trust_lua.so");
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    match std::os::unix::fs::symlink(target, &link) {
        Ok(()) => {}
        // Another build made it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => println!("cargo:warning=cannot link {} to {target}: {e}", link.display()),
    }
}
