//! The built parts a lab runs (the C library, the Lua module Prosody loads, the `server-trust`
//! CLI, helper binaries), for the profile the lab itself was compiled in: a `cargo test
//! --release` gets release parts, and no earlier `cargo build` is needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Packages whose binaries and libraries the lab runs. The core is listed for its cdylib:
/// `cargo test` builds it only into `deps/`, as a dependency.
const PACKAGES: [&str; 4] = ["server-trust", "server-trust-lua", "server-trust-cli", "server-trust-lab"];

/// Paths of the built parts, under `<target>/<profile>/`.
#[derive(Debug)]
pub struct Artifacts {
    /// `libserver_trust.so`: the C ABI (`include/server_trust.h`).
    pub c_library: PathBuf,
    /// `libserver_trust_lua.so`: mod_server_trust's native module.
    pub lua_module: PathBuf,
    /// The `server-trust` admin CLI.
    pub cli: PathBuf,
    /// `st-lab-store-writer STORE_ROOT`: writes requests into a store until killed.
    pub store_writer: PathBuf,
}

/// The parts for this profile, built by one `cargo build` per process (cargo makes it a no-op
/// when they are current). Panics with cargo's output if the build fails.
/// With `SERVER_TRUST_INSTALLED=1`, the CLI, the Prosody module and the C library are the
/// ones the Debian package installed, not the build tree's (the package test).
pub fn get() -> &'static Artifacts {
    static BUILT: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    match BUILT.get_or_init(|| if installed() { find_installed() } else { build() }) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// Shorthand for `get().lua_module`.
pub fn lua_module() -> &'static Path {
    &get().lua_module
}

/// Shorthand for `get().cli`.
pub fn cli() -> &'static Path {
    &get().cli
}

/// Whether the lab runs the installed package (`SERVER_TRUST_INSTALLED=1`).
pub fn installed() -> bool {
    std::env::var_os("SERVER_TRUST_INSTALLED").is_some_and(|v| v == "1")
}

/// The package's files; the lab's own helper binary still comes from the build.
fn find_installed() -> Result<Artifacts, String> {
    let built = build()?;
    let multiarch = Command::new("dpkg-architecture")
        .arg("-qDEB_HOST_MULTIARCH")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    let a = Artifacts {
        c_library: PathBuf::from(format!("/usr/lib/{multiarch}/libserver_trust.so.0")),
        lua_module: PathBuf::from("/usr/lib/prosody/modules/server_trust_lua.so"),
        cli: PathBuf::from("/usr/bin/server-trust"),
        store_writer: built.store_writer,
    };
    for p in [&a.c_library, &a.lua_module, &a.cli, Path::new("/usr/lib/prosody/modules/mod_server_trust.lua")]
    {
        if !p.exists() {
            return Err(format!("[lab] SERVER_TRUST_INSTALLED=1 but {} is not installed", p.display()));
        }
    }
    Ok(a)
}

/// The workspace root (the repository).
pub fn workspace_dir() -> &'static Path {
    lab_dir().parent().and_then(Path::parent).expect("the lab crate lives in <workspace>/crates/lab")
}

/// This crate's folder (holds `prosody/mod_lab.lua`).
pub fn lab_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `$CARGO_TARGET_DIR` (relative to the workspace when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_dir().join(d),
        _ => workspace_dir().join("target"),
    }
}

/// "debug" or "release": the profile this crate was compiled in (`cargo bench` counts as
/// release).
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

fn build() -> Result<Artifacts, String> {
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--manifest-path"])
        .arg(workspace_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace_dir());
    if profile() == "release" {
        cmd.arg("--release");
    }
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    eprintln!("[lab] building the {} parts: {cmd:?}", profile());
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "[lab] {cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = target.join(profile());
    let a = Artifacts {
        c_library: dir.join("libserver_trust.so"),
        lua_module: dir.join("libserver_trust_lua.so"),
        cli: dir.join("server-trust"),
        store_writer: dir.join("st-lab-store-writer"),
    };
    // The SONAME link C programs run against and the Lua module's default name: both made
    // by the build scripts (build.rs, crates/lua/build.rs).
    let links = [dir.join("libserver_trust.so.0"), dir.join("server_trust_lua.so")];
    for p in [&a.c_library, &a.lua_module, &a.cli, &a.store_writer].into_iter().chain(&links) {
        if !p.exists() {
            return Err(format!(
                "[lab] cargo build succeeded but {} is missing (links are made by the build \
                 scripts: `touch build.rs crates/lua/build.rs` and build again)",
                p.display()
            ));
        }
    }
    Ok(a)
}
