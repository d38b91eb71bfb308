//! Regenerates `include/server_trust.h` from `src/ffi/` with cbindgen.
//!
//! The header is committed; the C ABI test fails when the committed file differs from what
//! this produces, so CI catches a stale header. Regenerate with plain `cargo build`.
//!
//! Also links `libserver_trust.so.MAJOR` (the SONAME) to `libserver_trust.so` in the profile
//! folder, so a C program built with `-L target/<profile> -lserver_trust` runs with
//! `LD_LIBRARY_PATH=target/<profile>` straight after `cargo build`.
use std::path::PathBuf;

#[path = "build_support/profile_link.rs"]
mod profile_link;
use profile_link::link_in_profile_dir;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // C hosts link against libserver_trust.so.MAJOR: a proper SONAME lets an incompatible
    // release live beside this one (only st_* symbols are exported: rustc's own version
    // script for cdylibs hides the rest).
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libserver_trust.so.{major}");
    link_in_profile_dir(&format!("libserver_trust.so.{major}"), "libserver_trust.so");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=build_support");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    // The version compiled against, for `#if ST_VERSION_MAJOR ...` in C hosts.
    let v = |part: &str| std::env::var(format!("CARGO_PKG_VERSION_{part}")).expect("set by cargo");
    config.after_includes = Some(format!(
        "\n#define ST_VERSION_MAJOR {}\n#define ST_VERSION_MINOR {}\n#define ST_VERSION_PATCH {}\n",
        v("MAJOR"),
        v("MINOR"),
        v("PATCH")
    ));
    match cbindgen::Builder::new().with_crate(&dir).with_config(config).generate() {
        // write_to_file only touches the file when the content changed.
        Ok(bindings) => {
            bindings.write_to_file(dir.join("include/server_trust.h"));
        }
        // Let rustc report the syntax error with a proper span instead.
        Err(e) => println!("cargo:warning=cbindgen: {e}"),
    }
}
