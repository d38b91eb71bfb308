//! Shared by the build scripts (`build.rs`, `crates/lua/build.rs`): the links that make a
//! build folder usable as it is.

use std::path::{Path, PathBuf};

/// Makes `<profile dir>/name` a symlink to `target` (a sibling). The profile folder is three
/// levels above OUT_DIR (`<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`), which
/// follows CARGO_TARGET_DIR and `--target`. The link dangles until the link step writes
/// `target`. A failure is a warning: the library itself is still built.
pub fn link_in_profile_dir(name: &str, target: &str) {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let Some(profile) = out.ancestors().nth(3) else { return };
    let link = profile.join(name);
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
