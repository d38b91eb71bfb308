//! Links `server_trust_lua.so` (the name mod_server_trust.lua loads next to itself, and the
//! name Lua's `require "server_trust_lua"` looks for) to the `libserver_trust_lua.so` cargo
//! builds, in the profile folder: `target/<profile>/server_trust_lua.so` is usable as it is.

#[path = "../../build_support/profile_link.rs"]
mod profile_link;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build_support");
    profile_link::link_in_profile_dir("server_trust_lua.so", "libserver_trust_lua.so");
}
