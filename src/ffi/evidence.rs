//! Evidence for new requests from C hosts: the facts of the stream a `subscribe` came by, and
//! the replies to the `ST_ACTION_QUERY` actions (see `server_trust::evidence`).

use std::ffi::c_char;

use super::actions::st_actions;
use super::boundary::{opt_str_arg, str_arg};
use super::engine::st_engine;
use super::status::{fail, st_status};

/// Before `st_engine_inbound` for a `subscribe`: how the s2s stream it came by was
/// authenticated (`auth`: `"certificate"`, `"dane"` or `"dialback"`) and the certificate the
/// peer presented, DER or PEM (`cert` NULL or `cert_len` 0: none). A new request's evidence
/// starts with them. An unknown `auth` fails with `ST_STATUS_UNKNOWN_NAME`; a certificate
/// that does not parse is shown as missing.
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated; `cert` readable for `cert_len`
/// bytes when not NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_session(
    engine: *const st_engine,
    peer: *const c_char,
    auth: *const c_char,
    cert: *const u8,
    cert_len: usize,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let auth = try_arg!(unsafe { str_arg(auth) });
        let cert =
            (!cert.is_null() && cert_len > 0).then(|| unsafe { std::slice::from_raw_parts(cert, cert_len) });
        match h.engine.session(peer, auth, cert) {
            Ok(()) => st_status::Ok,
            Err(e) => fail(&e),
        }
    })
}

/// The reply to an `ST_ACTION_QUERY` for `peer` whose namespace was `ns`: the whole iq
/// stanza as XML (`type='result'` or `'error'`), or NULL when none came within
/// `ST_ANSWER_TIMEOUT_SECS`. `*out` receives actions (a notice once every query is answered).
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated (`reply` may be NULL); `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_answer(
    engine: *const st_engine,
    peer: *const c_char,
    ns: *const c_char,
    reply: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let ns = try_arg!(unsafe { str_arg(ns) });
        let reply = try_arg!(unsafe { opt_str_arg(reply) });
        h.run(out, |e| e.answer(peer, ns, reply))
    })
}
