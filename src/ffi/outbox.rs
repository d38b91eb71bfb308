//! The engine's outbox for C hosts: subscription stanzas are recorded with the change that
//! caused them and kept until the host says its server accepted them (see
//! `server_trust::engine::outbox`).

use std::ffi::c_char;

use super::actions::st_actions;
use super::boundary::{opt_str_arg, str_arg};
use super::engine::st_engine;
use super::status::{fail, st_status};
use super::transition::st_presence_type;
use crate::domain::Domain;
use crate::engine::PresenceKind;

fn peer_and_kind(peer: &str, r#type: st_presence_type) -> Result<(Domain, PresenceKind), st_status> {
    let kind = PresenceKind::from_index(r#type).ok_or(st_status::OutOfRange)?;
    let peer = Domain::new(peer).map_err(|e| fail(&e))?;
    Ok((peer, kind))
}

/// Your server accepted this subscription stanza (one an `ST_ACTION_SEND` gave, with the
/// same `id`, NULL for none): it leaves the outbox. Any other stanza (a probe answer) is
/// ignored. `*out` receives actions, as every change returns (usually none).
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated (`id` may be NULL); `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_delivered(
    engine: *const st_engine,
    peer: *const c_char,
    r#type: st_presence_type,
    id: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let id = try_arg!(unsafe { opt_str_arg(id) });
        let (peer, kind) = try_arg!(peer_and_kind(peer, r#type));
        h.run(out, |e| e.delivered(&peer, kind, id))
    })
}

/// Your server did not accept this subscription stanza: it is given again by
/// `st_engine_outbox_due` after a backoff (1 s doubling to 8 s).
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_undelivered(
    engine: *const st_engine,
    peer: *const c_char,
    r#type: st_presence_type,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let (peer, kind) = try_arg!(peer_and_kind(peer, r#type));
        h.engine.undelivered(&peer, kind);
        st_status::Ok
    })
}

/// The subscription stanzas due for a (re)send now, as `ST_ACTION_SEND` actions: those a
/// crash left unsent, failed tries and bounces past their backoff. Call it from a timer;
/// confirm each with `st_engine_delivered` or `st_engine_undelivered`.
///
/// # Safety
/// `engine` from `st_engine_open`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_outbox_due(
    engine: *const st_engine,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        h.run(out, |e| Ok(e.outbox_due()))
    })
}

/// An error presence from `peer` to the host JID (a bounce; `condition` such as
/// `remote-server-not-found`, may be NULL): what was delivered to it in the last 5 minutes
/// goes back in the outbox, sent again with backoff. `*out` receives a log action.
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated (`condition` may be NULL); `out`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_bounced(
    engine: *const st_engine,
    peer: *const c_char,
    condition: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let condition = try_arg!(unsafe { opt_str_arg(condition) }).unwrap_or("");
        h.run(out, |e| e.bounced(peer, condition))
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    use super::super::*;

    #[test]
    fn a_c_host_confirms_what_its_server_accepted_and_gets_the_rest_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = CString::new(dir.path().to_str().unwrap()).unwrap();
        let mut e = null_mut();
        let mut out = null_mut();
        unsafe {
            let opts = st_options { watch: false, ..st_options_default() };
            assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), &opts, &mut e), st_status::Ok);
            let b = c"b.lit".as_ptr();
            assert_eq!(
                st_engine_inbound(e, b, ST_PRESENCE_TYPE_SUBSCRIBE, c"x1".as_ptr(), &mut out),
                st_status::Ok
            );
            st_actions_free(out);
            assert_eq!(st_engine_approve(e, b, &mut out), st_status::Ok);
            st_actions_free(out);
            // Nothing confirmed yet: both subscription stanzas are due.
            assert_eq!(st_engine_outbox_due(e, &mut out), st_status::Ok);
            assert_eq!(st_actions_len(out), 2);
            st_actions_free(out);
            assert_eq!(st_engine_undelivered(e, b, ST_PRESENCE_TYPE_SUBSCRIBE), st_status::Ok);
            assert_eq!(
                st_engine_delivered(e, b, ST_PRESENCE_TYPE_SUBSCRIBED, c"x1".as_ptr(), &mut out),
                st_status::Ok
            );
            st_actions_free(out);
            assert_eq!(st_engine_delivered(e, b, 9, null(), &mut out), st_status::OutOfRange);
            assert_eq!(
                st_engine_delivered(e, c"bob@b.lit".as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
                st_status::InvalidDomain
            );
            assert_eq!(st_engine_outbox_due(e, &mut out), st_status::Ok);
            assert_eq!(st_actions_len(out), 0, "subscribe waits for its backoff");
            st_actions_free(out);
            // A bounce puts the delivered subscribed back.
            assert_eq!(st_engine_bounced(e, b, c"remote-server-not-found".as_ptr(), &mut out), st_status::Ok);
            st_actions_free(out);
            assert_eq!(st_engine_bounced(e, b, null(), null_mut()), st_status::NullParameter);
            st_engine_free(e);
        }
        let report = crate::admin::show(
            &crate::Store::open(dir.path(), &crate::Domain::new("a.lit").unwrap()).unwrap(),
            &crate::Domain::new("b.lit").unwrap(),
        )
        .unwrap();
        let kinds: Vec<_> = report.waiting.iter().map(|w| w.kind.as_str()).collect();
        assert_eq!(kinds, ["subscribe", "subscribed"]);
    }
}
