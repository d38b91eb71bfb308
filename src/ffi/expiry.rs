//! Trust for a time through the C ABI: approving for a number of seconds, and moving the end.

use std::ffi::c_char;
use std::time::Duration;

use super::actions::st_actions;
use super::boundary::str_arg;
use super::engine::st_engine;
use super::status::{fail, st_status};
use crate::engine::{Actor, Until};

/// Admin act: approve `peer`'s pending request for `seconds` only (1 to 315360000, ten
/// years), as `st_engine_approve` does otherwise. The engine's polls remind the admins
/// (an `ST_ACTION_NOTIFY`) 7 days before the end, then withdraw trust as `st_engine_revoke`
/// does: `unsubscribed` (and `unsubscribe` when we are subscribed), a trust action, audited
/// as the engine's. `ST_STATUS_INVALID_OPTION` for a time out of bounds (nothing approved).
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_approve_for(
    engine: *const st_engine,
    peer: *const c_char,
    seconds: u64,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        h.run(out, |e| e.approve_for(peer, Some(Duration::from_secs(seconds)), Actor::Api))
    })
}

/// Admin act: the trust in `peer`, a buddy we approved, ends `seconds` from now (1 to ten
/// years), or never when `seconds` is 0. The admins are reminded again before the new end.
/// `ST_STATUS_INVALID_OPTION` for a peer we do not trust or a time out of bounds.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_renew(
    engine: *const st_engine,
    peer: *const c_char,
    seconds: u64,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let until = if seconds == 0 { Until::Forever } else { Until::For(Duration::from_secs(seconds)) };
        match h.engine.renew(peer, &until, Actor::Api) {
            Ok(()) => st_status::Ok,
            Err(e) => fail(&e),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    use super::*;
    use crate::ffi::{st_actions_free, st_actions_len, st_engine_free, st_engine_open};

    #[test]
    fn approve_for_and_renew_from_c() {
        let dir = tempfile::tempdir().unwrap();
        let root = CString::new(dir.path().to_str().unwrap()).unwrap();
        let mut e = null_mut();
        unsafe {
            assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
            let engine = &(*e).engine;
            engine.inbound("b.lit", crate::PresenceKind::Subscribe, None).unwrap();
            let mut out = null_mut();
            assert_eq!(
                st_engine_approve_for(null(), c"b.lit".as_ptr(), 60, &mut out),
                st_status::NullParameter
            );
            assert_eq!(st_engine_approve_for(e, c"b.lit".as_ptr(), 0, &mut out), st_status::InvalidOption);
            assert!(out.is_null() && engine.state("b.lit").unwrap().pending_in(), "nothing approved");
            assert_eq!(st_engine_approve_for(e, c"b.lit".as_ptr(), 3600, &mut out), st_status::Ok);
            assert!(st_actions_len(out) >= 1, "subscribed goes out");
            st_actions_free(out);
            assert!(engine.is_trusted("b.lit", None));
            let end = engine.entry("b.lit").unwrap().unwrap().expires_at.expect("an end");
            let end = humantime::parse_rfc3339(&end).unwrap();
            let left = end.duration_since(std::time::SystemTime::now()).unwrap();
            assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "{left:?}");
            assert_eq!(st_engine_renew(e, c"b.lit".as_ptr(), 0), st_status::Ok);
            assert_eq!(engine.entry("b.lit").unwrap().unwrap().expires_at, None);
            assert_eq!(st_engine_renew(e, c"c.lit".as_ptr(), 60), st_status::InvalidOption, "not a buddy");
            assert_eq!(st_engine_renew(e, null(), 60), st_status::NullParameter);
            st_engine_free(e);
        }
    }
}
