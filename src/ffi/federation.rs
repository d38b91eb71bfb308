//! Buddies-only federation for C hosts: an engine opened with a federation mode (and an
//! optional group), and the per-stanza check `st_engine_federates_with`. Separate functions,
//! because `st_options` cannot grow a field without changing its size (an ABI break).

use std::ffi::c_char;
use std::path::Path;

use super::boundary::{opt_str_arg, str_arg};
use super::engine::{config, st_engine, st_options, st_options_default};
use super::status::{fail, st_status};
use crate::engine::{Config, Engine, Federation};

/// Who may exchange stanzas with the host over s2s, `ST_FEDERATION_*`.
pub type st_federation = u32;
/// Every server, as XMPP does by default (what `st_engine_open` gives).
pub const ST_FEDERATION_OPEN: st_federation = 0;
/// Only the peers we approved (in the group, when one is given); presence between the two
/// host JIDs always passes, so a stranger can still ask to become a buddy.
pub const ST_FEDERATION_BUDDIES: st_federation = 1;

/// `st_engine_open` with a federation mode: `ST_FEDERATION_OPEN` or `ST_FEDERATION_BUDDIES`,
/// and with buddies an optional `group` (NULL for none; 1 to 64 characters, no comma) a
/// buddy must carry, e.g. "federate". A group with `ST_FEDERATION_OPEN` is refused with
/// `ST_STATUS_INVALID_OPTION` (it says the admin meant to restrict federation); another
/// mode with `ST_STATUS_OUT_OF_RANGE`. Then ask `st_engine_federates_with` for every stanza
/// crossing s2s either way and refuse what it refuses (a policy-violation stanza error for
/// a message, an iq get/set or a subscription request; drop the rest).
///
/// # Safety
/// Strings must be NUL-terminated (`group` may be NULL); `options` NULL or readable; `out`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_open_federated(
    store_root: *const c_char,
    host: *const c_char,
    options: *const st_options,
    federation: st_federation,
    group: *const c_char,
    out: *mut *mut st_engine,
) -> st_status {
    ffi_boundary!({
        let root = try_arg!(unsafe { str_arg(store_root) });
        let host = try_arg!(unsafe { str_arg(host) });
        let group = try_arg!(unsafe { opt_str_arg(group) });
        try_out!(out);
        let mode = match federation {
            ST_FEDERATION_OPEN => "open",
            ST_FEDERATION_BUDDIES => "buddies",
            _ => return st_status::OutOfRange,
        };
        let o = unsafe { options.as_ref() }.copied().unwrap_or_else(|| st_options_default());
        let open = || {
            let c = Config { federation: Federation::from_options(Some(mode), group)?, ..config(&o)? };
            Engine::open(Path::new(root), host, c)
        };
        match open() {
            Ok(engine) => {
                unsafe { *out = Box::into_raw(Box::new(st_engine { engine })) };
                st_status::Ok
            }
            Err(e) => fail(&e),
        }
    })
}

/// May a stanza cross s2s between the host and `peer` (the remote domain, as the router
/// names it)? `host_presence`: the stanza goes from one host JID to the other and
/// `st_host_stanza` lets it through (presence: the XEP-0267 handshake and probes; the
/// evidence queries and iq replies), which buddies-only federation always allows for a
/// valid domain. Writes the answer to `*out`: always true for an engine opened with
/// `ST_FEDERATION_OPEN` (or by `st_engine_open`); otherwise true only for a peer we approved,
/// in the engine's group if it has one, and a `peer` that is not a domain is answered false
/// (fails closed), not an error. Memory only, no disk: call it for every stanza.
///
/// # Safety
/// `engine` from `st_engine_open*`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_federates_with(
    engine: *const st_engine,
    peer: *const c_char,
    host_presence: bool,
    out: *mut bool,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        try_out!(out);
        unsafe { *out = h.engine.federates_with(peer, host_presence) };
        st_status::Ok
    })
}

/// Whether a stanza between the two host JIDs passes buddies-only federation without trust
/// (pass the answer as `st_engine_federates_with`'s `host_presence`): `name` the element
/// (`presence`, `iq`, ...), `type` its type attribute and `ns` the namespace of its first
/// child, each NULL when absent. Presence, iq `result` and `error`, and iq `get` of the
/// evidence queries (`ST_ACTION_QUERY`) pass. NULL `name` or invalid UTF-8: false.
///
/// # Safety
/// Strings NUL-terminated or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_host_stanza(
    name: *const c_char,
    r#type: *const c_char,
    ns: *const c_char,
) -> bool {
    ffi_boundary!({
        let args = unsafe { (opt_str_arg(name), opt_str_arg(r#type), opt_str_arg(ns)) };
        let (Ok(Some(name)), Ok(ty), Ok(ns)) = args else {
            return false;
        };
        Federation::host_stanza(name, ty, ns)
    })
}
