//! Building from source, as a new admin does it (issue 17, "set up on the first try"): the
//! README's commands as written (a C program against `target/release`, `scripts/install.sh`
//! into a staging folder, then pkg-config, the installed CLI and a real Prosody lab on the
//! installed module), `scripts/setup.sh` without a usable Rust or with apt failing, and
//! Prosody running as its own user with its files in a private (0700) folder.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use server_trust_lab::admin::output_text;
use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, TrustAdmin, artifacts};

use crate::support::handshake;

// The commands of README.md's "Building from source", exactly as shown there (one test checks
// that the section shows these and nothing else).
const BUILD: &str = "cargo build --release --workspace";
const C_BUILD: &str =
    "cc -I include tests/c/handshake.c -L target/release -lserver_trust -o target/handshake";
const C_RUN: &str = r#"LD_LIBRARY_PATH=target/release target/handshake "$(mktemp -d)""#;
const INSTALL: &str = "bash scripts/install.sh";
const PC_BUILD: &str =
    "cc tests/c/handshake.c $(pkg-config --cflags --libs server-trust) -o target/handshake";
const README_COMMANDS: [&str; 5] = [BUILD, C_BUILD, C_RUN, INSTALL, PC_BUILD];

/// The README's C commands build `target/handshake`, then run it: two tests doing that at
/// once would run a file the other's compiler is still writing.
static HANDSHAKE_BINARY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with the cargo running these tests first.
fn path_with_cargo() -> String {
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut dirs: Vec<PathBuf> = cargo.parent().map(Path::to_path_buf).into_iter().collect();
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

/// Runs a README command with bash in the repository (`target/` follows CARGO_TARGET_DIR).
fn run_doc(cmd: &str, env: &[(&str, &str)]) -> Output {
    let target = artifacts::target_dir();
    let line = if target == repo().join("target") {
        cmd.to_string()
    } else {
        cmd.replace("target/", &format!("{}/", target.display()))
    };
    let out = Command::new("bash")
        .args(["-c", &line])
        .current_dir(repo())
        .env("PATH", path_with_cargo())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "`{line}` failed ({}):\n{}", out.status, output_text(&out));
    out
}

/// The README section's shell commands (comments and blank lines dropped).
fn readme_section_commands() -> Vec<String> {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let start =
        readme.find("\n## Building from source\n").expect("README has a Building from source section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut cmds = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh => {
                let l = l.split(" # ").next().unwrap().trim();
                if !l.is_empty() && !l.starts_with('#') {
                    cmds.push(l.to_string());
                }
            }
            _ => {}
        }
    }
    cmds
}

#[test]
fn the_readme_section_shows_exactly_the_commands_tested_here() {
    let shown = readme_section_commands();
    assert_eq!(shown, README_COMMANDS, "README's Building from source and this test drifted apart");
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let at = |s: &str| readme.find(s).unwrap_or_else(|| panic!("README lacks {s:?}"));
    assert!(at("## Installing (Debian package)") < at("## Building from source"));
    assert!(at("## Building from source") < at("## The store"));
    let want = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let want = want.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    assert!(readme.contains(&format!("Rust {want} or later")), "README must name rust-version {want}");
}

/// `cargo build` leaves the SONAME link and the Lua module's default name in the profile
/// folder, and a C program built and run as the README shows works against it.
#[test]
fn the_build_folder_serves_a_c_program_as_it_is() {
    run_doc(BUILD, &[]);
    let release = artifacts::target_dir().join("release");
    for (link, to) in
        [("libserver_trust.so.0", "libserver_trust.so"), ("server_trust_lua.so", "libserver_trust_lua.so")]
    {
        assert_eq!(fs::read_link(release.join(link)).ok(), Some(PathBuf::from(to)), "{link}");
        assert!(release.join(link).exists(), "{link} dangles");
    }
    // The profile this test binary runs in has the same links (made by the same build scripts).
    let own = artifacts::get().c_library.parent().unwrap();
    assert!(own.join("libserver_trust.so.0").exists() && own.join("server_trust_lua.so").exists());
    let _binary = HANDSHAKE_BINARY.lock().unwrap_or_else(|p| p.into_inner());
    run_doc(C_BUILD, &[]);
    let out = run_doc(C_RUN, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("C handshake OK"), "{}", output_text(&out));
}

/// `scripts/install.sh` into a staging folder: every file where it says, a C program built
/// with pkg-config against the staged tree runs, the installed CLI runs, and a real Prosody
/// loads the installed module and its native library by the default name.
#[test]
fn install_sh_stages_a_tree_that_works() {
    let stage = tempfile::tempdir().unwrap();
    let dest = stage.path().to_str().unwrap();
    let out = run_doc(INSTALL, &[("DESTDIR", dest)]);
    let said = output_text(&out);
    let usr = stage.path().join("usr/local");
    for f in [
        "bin/server-trust",
        "bin/server-trust-sidecar",
        "lib/prosody/modules/mod_server_trust.lua",
        "lib/prosody/modules/server_trust_lua.so",
        "lib/libserver_trust.so.0",
        "lib/libserver_trust.so",
        "lib/pkgconfig/server-trust.pc",
        "include/server_trust.h",
        "share/man/man1/server-trust.1",
        "share/server-trust/ejabberd/mod_server_trust/src/mod_server_trust.erl",
    ] {
        assert!(usr.join(f).exists(), "{f} not installed:\n{said}");
        assert!(said.contains(&format!("install: {}", usr.join(f).display())), "{f} not reported:\n{said}");
    }
    assert_eq!(fs::read_link(usr.join("lib/libserver_trust.so")).unwrap(), Path::new("libserver_trust.so.0"));
    assert!(said.contains(r#"plugin_paths = { "/usr/local/lib/prosody/modules" }"#), "{said}");

    // C: pkg-config against the staged tree.
    let pc_dir = usr.join("lib/pkgconfig");
    let pc_env = [("PKG_CONFIG_PATH", pc_dir.to_str().unwrap()), ("PKG_CONFIG_SYSROOT_DIR", dest)];
    let flags = run_doc("pkg-config --cflags --libs server-trust", &pc_env);
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    assert!(flags.contains(&format!("-L{}", usr.join("lib").display())), "{flags}");
    let _binary = HANDSHAKE_BINARY.lock().unwrap_or_else(|p| p.into_inner());
    run_doc(PC_BUILD, &pc_env);
    let lib = usr.join("lib");
    let out = run_doc(r#"target/handshake "$(mktemp -d)""#, &[("LD_LIBRARY_PATH", lib.to_str().unwrap())]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("C handshake OK"), "{}", output_text(&out));

    // The installed CLI.
    let cli = usr.join("bin/server-trust");
    let v = Command::new(&cli).arg("--version").output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));

    // Prosody on the installed module files; capulet's admin approves with the installed CLI.
    let modules = usr.join("lib/prosody/modules");
    let lab =
        Lab::with_server_trust(LabOptions { module_dir: Some(modules.clone()), ..LabOptions::default() });
    for srv in lab.servers() {
        let cfg = fs::read_to_string(&srv.cfg).unwrap();
        assert!(!cfg.contains("server_trust_native_path"), "the default name must do:\n{cfg}");
        // The last plugin_paths wins in Prosody's config: the installed folder first, no repository.
        let plugins = cfg.lines().rfind(|l| l.starts_with("plugin_paths")).unwrap();
        assert!(plugins.starts_with(&format!("plugin_paths = {{ \"{}\"", modules.display())), "{plugins}");
        assert!(
            !plugins.contains(&format!("\"{}\"", repo().display())),
            "the repository is searched: {plugins}"
        );
    }
    handshake(&lab, || {
        let out = Command::new(&cli)
            .arg("--store")
            .arg(lab.capulet.store_root())
            .args(["--host", CAPULET, "approve", MONTAGUE])
            .output()
            .unwrap();
        assert!(out.status.success(), "installed CLI approve: {}", output_text(&out));
    });
}

/// A fake command: a bash script named `name` in `dir`.
fn fake(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fake apt-get (records each call in `calls`, fails) and dpkg-query (every package missing)
/// in `bin`; `home` is an empty HOME (no ~/.cargo).
struct FakeBin {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    home: PathBuf,
    calls: PathBuf,
}

fn fake_bin() -> FakeBin {
    let tmp = tempfile::tempdir().unwrap();
    let (bin, home, calls) = (tmp.path().join("bin"), tmp.path().join("home"), tmp.path().join("apt-calls"));
    fs::create_dir(&bin).unwrap();
    fs::create_dir(&home).unwrap();
    fake(&bin, "apt-get", &format!("echo \"apt-get $*\" >> {}\nexit 100", calls.display()));
    // Every package missing, so reaching the install step calls apt-get.
    fake(&bin, "dpkg-query", "exit 1");
    FakeBin { _tmp: tmp, bin, home, calls }
}

/// Runs `bash scripts/setup.sh` with the fakes first on PATH, then the system folders (which
/// hold no cargo here), and with `with_cargo` the cargo running these tests before those,
/// in a private mount namespace whose /usr/sbin is an empty tmpfs
/// (the machine's policy-rc.d is never touched), after `before` there; prints /usr/sbin's
/// listing after a marker line.
fn run_setup(fb: &FakeBin, with_cargo: bool, before: &str) -> (Output, String) {
    let script = format!(
        "mount -t tmpfs tmpfs /usr/sbin && {before} bash scripts/setup.sh; rc=$?; echo '--- sbin'; ls -A /usr/sbin; exit $rc"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .current_dir(repo())
        .env(
            "PATH",
            if with_cargo {
                format!("{}:{}", fb.bin.display(), path_with_cargo())
            } else {
                format!("{}:/usr/bin:/bin", fb.bin.display())
            },
        )
        .env("HOME", &fb.home)
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sbin =
        stdout.split("--- sbin\n").nth(1).unwrap_or_else(|| panic!("no listing: {}", output_text(&out)));
    (out.clone(), sbin.to_string())
}

/// No cargo at all, then an old cargo/rustc (Debian 12's 1.63): setup.sh says how to get Rust
/// and exits 2 before installing anything.
#[test]
fn setup_sh_refuses_first_without_a_recent_enough_rust() {
    for old in [None, Some("1.63.0")] {
        let fb = fake_bin();
        if let Some(v) = old {
            fake(&fb.bin, "cargo", &format!("echo 'cargo {v}'"));
            fake(&fb.bin, "rustc", &format!("echo 'rustc {v} (90c541806 2023-05-31)'"));
        }
        let (out, sbin) = run_setup(&fb, false, "");
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{old:?}: {text}");
        for want in [
            "needs Rust 1.89 or later",
            "nothing was installed",
            "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y",
            ". \"$HOME/.cargo/env\"",
        ] {
            assert!(text.contains(want), "{old:?}: missing {want:?} in:\n{text}");
        }
        if let Some(v) = old {
            assert!(text.contains(&format!("found: {v}")), "{text}");
        } else if !Path::new("/usr/bin/cargo").exists() {
            assert!(text.contains("found: no cargo/rustc on PATH"), "{text}");
        }
        assert!(
            !fb.calls.exists(),
            "{old:?}: apt-get was called: {}",
            fs::read_to_string(&fb.calls).unwrap()
        );
        assert!(sbin.trim().is_empty(), "{old:?}: left in /usr/sbin: {sbin}");
    }
}

/// apt failing leaves no policy-rc.d behind (it blocks every service start on the machine),
/// and one the script did not make is kept.
#[test]
fn setup_sh_removes_its_policy_rc_d_when_apt_fails() {
    let fb = fake_bin();
    let (out, sbin) = run_setup(&fb, true, "");
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(fs::read_to_string(&fb.calls).unwrap().contains("apt-get update"), "apt-get not reached");
    assert!(sbin.trim().is_empty(), "policy-rc.d left behind: {sbin}\n{}", output_text(&out));

    let fb = fake_bin();
    let (out, sbin) = run_setup(&fb, true, "printf '#!/bin/sh\\nexit 0\\n' > /usr/sbin/policy-rc.d &&");
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sbin.trim(), "policy-rc.d", "the admin's policy-rc.d was removed");
}

/// install.sh without cargo refuses with the reason and installs nothing.
#[test]
fn install_sh_refuses_without_cargo() {
    let fb = fake_bin();
    let stage = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("scripts/install.sh")
        .current_dir(repo())
        .env("PATH", format!("{}:/usr/bin:/bin", fb.bin.display()))
        .env("HOME", &fb.home)
        .env("DESTDIR", stage.path())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("cargo is not on PATH") && text.contains("nothing was installed"), "{text}");
    assert!(text.contains("sudo env \"PATH=$PATH\" bash scripts/install.sh"), "{text}");
    assert_eq!(fs::read_dir(stage.path()).unwrap().count(), 0);
}

/// A file a Debian package owns (dpkg -S) is never overwritten: install.sh refuses before
/// writing anything.
/// (It builds the release workspace first, as the README's build does: the same build.)
#[test]
fn install_sh_never_overwrites_a_packaged_file() {
    let fb = fake_bin();
    let prefix = tempfile::tempdir().unwrap();
    let owned = prefix.path().join("include/server_trust.h");
    fake(
        &fb.bin,
        "dpkg-query",
        &format!("[ \"$1 $2\" = \"-S {}\" ] && echo \"server-trust: $2\" && exit 0; exit 1", owned.display()),
    );
    let out = Command::new("bash")
        .arg("scripts/install.sh")
        .current_dir(repo())
        .env("PATH", format!("{}:{}", fb.bin.display(), path_with_cargo()))
        .env("PREFIX", prefix.path())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("server-trust: {}", owned.display()))
            && text.contains("nothing was installed"),
        "{text}"
    );
    assert_eq!(fs::read_dir(prefix.path()).unwrap().count(), 0, "something was installed:\n{text}");
}

/// Prosody running as `prosody` loads a native module that sits in a private (0700) folder,
/// as a build tree under /root or a `mktemp -d` CARGO_TARGET_DIR is: the lab gives the server
/// its own copy. (Before, the module failed to load and the handshake never started.)
#[test]
fn prosody_as_its_own_user_runs_from_a_private_build_folder() {
    let private = tempfile::tempdir().unwrap();
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let native = private.path().join("libserver_trust_lua.so");
    fs::copy(artifacts::lua_module(), &native).unwrap();
    let lab = Lab::with_server_trust(LabOptions {
        run_as: Some("prosody".into()),
        native_module: Some(native),
        ..LabOptions::default()
    });
    handshake(&lab, || {
        lab.capulet.cli(&["approve", MONTAGUE]);
    });
}
