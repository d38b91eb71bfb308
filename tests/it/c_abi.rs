//! The C ABI as a C program sees it: the committed header, the system C compiler, the
//! built cdylib (from the lab, for this profile).

use std::path::Path;
use std::process::Command;

use server_trust_lab::artifacts;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles tests/c/handshake.c with `extra` flags, runs it, and checks its verdict.
fn build_and_run_handshake(extra: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let bin = out.path().join("handshake");
    let lib = artifacts::get().c_library.parent().unwrap();
    assert!(lib.join("libserver_trust.so").exists(), "cdylib missing in {}", lib.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(extra)
        .arg("-o")
        .arg(&bin)
        .arg(repo().join("tests/c/handshake.c"))
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lserver_trust")
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "C compile failed ({extra:?})");
    let store = out.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let run = Command::new(&bin).arg(&store).env("LD_LIBRARY_PATH", lib).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "C handshake failed ({extra:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("C handshake OK"), "{stdout}");
    assert!(stdout.contains("state 8 trusted 1"), "{stdout}");
}

#[test]
fn c_program_runs_the_whole_handshake() {
    build_and_run_handshake(&[]);
}

/// Same program under AddressSanitizer (with leak checking) and UBSan: every handle and
/// action list the C side gets is freed exactly once, and no call reads out of bounds.
#[test]
fn c_handshake_is_clean_under_asan_and_ubsan() {
    build_and_run_handshake(&["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]);
}

/// Compiles tests/c/federation.c with `extra` flags and runs it against a fresh store: buddies-only
/// federation through `st_engine_open_federated` and `st_engine_federates_with`.
fn build_and_run_federation(extra: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let bin = out.path().join("federation");
    let lib = artifacts::get().c_library.parent().unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(extra)
        .arg("-o")
        .arg(&bin)
        .arg(repo().join("tests/c/federation.c"))
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lserver_trust")
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "C compile failed ({extra:?})");
    let store = out.path().join("store");
    let run = Command::new(&bin).arg(&store).env("LD_LIBRARY_PATH", lib).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "C federation failed ({extra:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("C federation OK"), "{stdout}");
}

#[test]
fn c_program_federates_with_buddies_only() {
    build_and_run_federation(&[]);
}

#[test]
fn c_federation_is_clean_under_asan_and_ubsan() {
    build_and_run_federation(&["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]);
}

#[test]
fn header_compiles_as_cpp_too() {
    let out = tempfile::tempdir().unwrap();
    let src = out.path().join("h.cpp");
    std::fs::write(&src, "#include \"server_trust.h\"\nint main() { return st_status_str(0) ? 0 : 1; }\n")
        .unwrap();
    let status = Command::new("g++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(&src)
        .status();
    match status {
        Ok(s) => assert!(s.success(), "header does not compile as C++"),
        Err(e) => panic!("g++ not available: {e}"),
    }
}

/// build.rs regenerates the header on every build; a difference from the committed file
/// means someone changed the ABI without committing the header.
#[test]
fn committed_header_is_current() {
    let out = Command::new("git")
        .args(["diff", "--exit-code", "HEAD", "--", "include/server_trust.h"])
        .current_dir(repo())
        .output()
        .expect("git is needed to check the committed header");
    assert!(
        out.status.success(),
        "include/server_trust.h differs from the committed one; commit it:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
