//! Who owns the store, and acting as that user.
//!
//! Servers run as their own user (`prosody`, `ejabberd`); admins type `sudo server-trust …`.
//! A root tool that created files in the store would leave them unwritable by the server, so
//! tools switch to the store owner first, as `prosodyctl` does; and a server that cannot
//! write its store says so at start, with the command that fixes it.

use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The name of user `uid` (its number when it has none).
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out = std::ptr::null_mut();
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r == 0 && !out.is_null() {
        unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned()
    } else {
        uid.to_string()
    }
}

/// The owner (uid, gid) of `path`, or of its nearest existing ancestor.
fn owner(path: &Path) -> Option<(u32, u32)> {
    path.ancestors().find_map(|p| std::fs::metadata(p).ok()).map(|m| (m.uid(), m.gid()))
}

/// When running as root on a store owned by another user, becomes that user (its uid and
/// gid, no supplementary groups) before anything is touched. Returns the user switched to.
/// Irreversible for the process, which is the point.
pub fn become_store_owner(store: &Path) -> Result<Option<String>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Some((uid, gid)) = owner(store) else { return Ok(None) };
    if uid == 0 {
        return Ok(None);
    }
    let fail = |what: &str| Error::Permission {
        path: store.to_path_buf(),
        detail: format!(
            "cannot switch to the store owner {} ({what}: {})",
            user_name(uid),
            std::io::Error::last_os_error()
        ),
    };
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail("setuid"));
        }
        if libc::geteuid() != uid || libc::setuid(0) == 0 {
            return Err(fail("still root"));
        }
    }
    Ok(Some(user_name(uid)))
}

/// Checks that the user we run as can write `dir` (create and replace files in it); the
/// error names the owner, the mode, who we are and what to run.
pub fn check_writable(dir: &Path) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Permission { path: dir.to_path_buf(), detail: "path holds a NUL byte".into() })?;
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return Ok(());
    }
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let me = user_name(unsafe { libc::geteuid() });
    let owner = user_name(m.uid());
    Err(Error::Permission {
        path: dir.to_path_buf(),
        detail: format!(
            "owned by {owner} (mode {:o}), not writable by {me}; give it to the server's user: \
             chown -R {me}: {}",
            m.mode() & 0o7777,
            dir.parent().unwrap_or(dir).display()
        ),
    })
}
