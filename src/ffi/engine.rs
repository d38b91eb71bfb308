//! `st_engine`: one served host's engine behind an opaque handle.

use std::ffi::c_char;
use std::path::Path;

use super::actions::{OwnedAction, st_actions};
use super::boundary::{opt_str_arg, str_arg};
use super::status::{fail, st_status};
use super::transition::{st_presence_type, st_subscription};
use crate::engine::{Action, Actor, Config, Engine, PresenceKind};

/// Engine settings for `st_engine_open`; start from `st_options_default()` and change what
/// you need. A plain value: copy it freely.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct st_options {
    /// Pending requests kept at most, 1 to 1000000 (default 1000).
    pub max_pending: u32,
    /// Pending requests kept at most from one registrable domain (default 10).
    pub max_pending_per_site: u32,
    /// New-request prompts per minute before the rest go into one digest (default 5).
    pub notify_burst: u32,
    /// After approving, subscribe back (default true).
    pub reciprocate: bool,
    /// `st_engine_request` pre-approves the peer's reciprocal request (default true).
    pub preapprove_on_request: bool,
    /// Seconds between file refreshes for a repeating pending peer, at most 86400 (default 60).
    pub repeat_window_secs: u32,
    /// Watch the store with inotify so `st_engine_poll` is free when idle (default true).
    pub watch: bool,
    /// Milliseconds a call may wait for the store lock held by another process (default 0:
    /// never; inbound stanzas are then deferred to the next poll and admin acts return
    /// `ST_STATUS_STORE_BUSY`). Keep 0 on an event loop.
    pub lock_wait_ms: u32,
}

/// An open engine for one served host. Opaque. Created by `st_engine_open`, owned by the
/// caller, released by `st_engine_free`. Thread-safe: any number of threads may call the
/// other functions on one handle at once; `st_engine_free` must not race with them.
pub struct st_engine {
    pub(super) engine: Engine,
}

impl st_engine {
    pub(super) fn run(
        &self,
        out: *mut *mut st_actions,
        f: impl FnOnce(&Engine) -> crate::Result<Vec<Action>>,
    ) -> st_status {
        try_out!(out);
        match f(&self.engine) {
            Ok(actions) => {
                let list = st_actions { items: actions.into_iter().map(OwnedAction::from).collect() };
                unsafe { *out = Box::into_raw(Box::new(list)) };
                st_status::Ok
            }
            Err(e) => fail(&e),
        }
    }
}

/// Default options: reciprocate, pre-approve on request, 1000 pending, 60 s repeat window, watch.
#[unsafe(no_mangle)]
pub extern "C" fn st_options_default() -> st_options {
    let c = Config::default();
    st_options {
        max_pending: c.max_pending as u32,
        max_pending_per_site: c.max_pending_per_site as u32,
        notify_burst: c.notify_burst as u32,
        reciprocate: c.reciprocate,
        preapprove_on_request: c.preapprove_on_request,
        repeat_window_secs: c.repeat_window.as_secs() as u32,
        watch: c.watch,
        lock_wait_ms: c.lock_wait.as_millis() as u32,
    }
}

pub(super) fn config(o: &st_options) -> crate::Result<Config> {
    Ok(Config {
        reciprocate: o.reciprocate,
        preapprove_on_request: o.preapprove_on_request,
        max_pending: Config::max_pending_from(o.max_pending.into())?,
        max_pending_per_site: Config::whole_number(
            "max_pending_per_site",
            o.max_pending_per_site.into(),
            1,
            1_000_000,
        )?,
        notify_burst: o.notify_burst as usize,
        repeat_window: Config::repeat_window_secs(o.repeat_window_secs.into())?,
        watch: o.watch,
        lock_wait: std::time::Duration::from_millis(o.lock_wait_ms.into()),
        // Not in `st_options` (a field more would change the struct's size, an ABI break):
        // C hosts get the defaults (federation: `st_engine_open_federated`).
        ..Config::default()
    })
}

/// Opens the engine of `host` over the store `store_root` (one directory per host inside).
/// A missing `store_root` is created, with any missing parents, mode 0750 (the umask may
/// narrow it). `options` may be NULL for defaults. On success writes a handle to `*out`; the caller
/// owns it and must release it with `st_engine_free`. On failure nothing is written and
/// `st_last_error` says why (e.g. a corrupt roster, named with its line, left untouched).
///
/// # Safety
/// Strings must be NUL-terminated; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_open(
    store_root: *const c_char,
    host: *const c_char,
    options: *const st_options,
    out: *mut *mut st_engine,
) -> st_status {
    ffi_boundary!({
        let root = try_arg!(unsafe { str_arg(store_root) });
        let host = try_arg!(unsafe { str_arg(host) });
        try_out!(out);
        let o = unsafe { options.as_ref() }.copied().unwrap_or_else(|| st_options_default());
        match config(&o).and_then(|c| Engine::open(Path::new(root), host, c)) {
            Ok(engine) => {
                unsafe { *out = Box::into_raw(Box::new(st_engine { engine })) };
                st_status::Ok
            }
            Err(e) => fail(&e),
        }
    })
}

/// Releases an engine. NULL is fine. Must not be called twice with the same value, nor
/// while another thread uses the engine.
///
/// # Safety
/// `engine` must come from `st_engine_open` or be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_free(engine: *mut st_engine) {
    ffi_boundary!({
        if !engine.is_null() {
            drop(unsafe { Box::from_raw(engine) });
        }
    })
}

/// Is `peer` trusted: did we approve it (state From or Both)? With a non-NULL `scope`, the
/// peer must also carry that group. Writes the answer to `*out`. Memory only, no disk.
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_is_trusted(
    engine: *const st_engine,
    peer: *const c_char,
    scope: *const c_char,
    out: *mut bool,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        if scope.is_null() && !peer.is_null() {
            // Every stanza's check: bytes straight to the lookup (see `is_trusted_bytes`).
            let bytes = unsafe { std::ffi::CStr::from_ptr(peer) }.to_bytes();
            let Some(trusted) = h.engine.is_trusted_bytes(bytes) else { return st_status::InvalidUtf8 };
            try_out!(out);
            unsafe { *out = trusted };
            return st_status::Ok;
        }
        let peer = try_arg!(unsafe { str_arg(peer) });
        let scope = try_arg!(unsafe { opt_str_arg(scope) });
        try_out!(out);
        unsafe { *out = h.engine.is_trusted(peer, scope) };
        st_status::Ok
    })
}

/// `st_is_trusted` for a name given with its length (no NUL needed, no `strlen`), without a
/// scope: the variant for hosts that check every stanza. `peer` need not be NUL-terminated;
/// `peer_len` bytes are read. Same answers and statuses as `st_is_trusted`, and
/// `ST_STATUS_OUT_OF_RANGE` for a length over `PTRDIFF_MAX`.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` readable for `peer_len` bytes; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_is_trusted_n(
    engine: *const st_engine,
    peer: *const c_char,
    peer_len: usize,
    out: *mut bool,
) -> st_status {
    // The panic boundary of every call, minus its bookkeeping on success: the last error is
    // only touched when the call fails (this one sits on every access-control decision).
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (Some(h), false, false) = (unsafe { engine.as_ref() }, peer.is_null(), out.is_null()) else {
            return st_status::NullParameter;
        };
        // A length no buffer can have (a negative number cast by the caller): refused before
        // it could make a slice.
        if peer_len > isize::MAX as usize {
            return st_status::OutOfRange;
        }
        let bytes = unsafe { std::slice::from_raw_parts(peer.cast::<u8>(), peer_len) };
        let Some(trusted) = h.engine.is_trusted_bytes(bytes) else { return st_status::InvalidUtf8 };
        unsafe { *out = trusted };
        st_status::Ok
    }))
    .unwrap_or(st_status::Panic);
    if status != st_status::Ok {
        super::status::begin_call();
        super::status::record_failure(status, None);
    }
    status
}

/// Writes `peer`'s subscription state (`ST_SUBSCRIPTION_*`) to `*out`.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_state(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut st_subscription,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        try_out!(out);
        match h.engine.state(peer) {
            Ok(s) => {
                unsafe { *out = s as st_subscription };
                st_status::Ok
            }
            Err(e) => fail(&e),
        }
    })
}

/// Applies a presence stanza of type `type` (`ST_PRESENCE_TYPE_*`; read the attribute with
/// `st_presence_type_parse`) that `from` sent to the host JID; `id` may be NULL. On success
/// `*out` receives the actions to carry out (free them with `st_actions_free`). A `from`
/// that is not a bare domain fails with `ST_STATUS_INVALID_DOMAIN`: user and full JIDs never
/// enter the server roster.
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_inbound(
    engine: *const st_engine,
    from: *const c_char,
    r#type: st_presence_type,
    id: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let from = try_arg!(unsafe { str_arg(from) });
        let id = try_arg!(unsafe { opt_str_arg(id) });
        let Some(kind) = PresenceKind::from_index(r#type) else { return st_status::OutOfRange };
        h.run(out, |e| e.inbound(from, kind, id))
    })
}

/// Shared body of the admin acts (actor `api` in the audit log).
unsafe fn admin(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
    act: fn(&Engine, &str, Actor) -> crate::Result<Vec<Action>>,
) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        h.run(out, |e| act(e, peer, Actor::Api))
    })
}

/// Admin act: ask `peer` for a subscription (sends `subscribe`) and, unless disabled,
/// pre-approve its reciprocal request. Actions go to `*out`. `ST_STATUS_OWN_HOST` for our
/// own host.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_request(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    unsafe { admin(engine, peer, out, Engine::request) }
}

/// Admin act: approve `peer`'s pending request (`subscribed`, then `subscribe` back when
/// reciprocating). `ST_STATUS_NO_PENDING_REQUEST` if there is none.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_approve(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    unsafe { admin(engine, peer, out, Engine::approve) }
}

/// Admin act: deny `peer`'s pending request (`unsubscribed`).
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_deny(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    unsafe { admin(engine, peer, out, Engine::deny) }
}

/// Admin act: withdraw trust both ways (`unsubscribe` and `unsubscribed`).
/// `ST_STATUS_NOT_IN_ROSTER` for a peer the roster does not know.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_revoke(
    engine: *const st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    unsafe { admin(engine, peer, out, Engine::revoke) }
}

/// Picks up decisions made by other processes (edited pending files, the CLI) and returns
/// the actions they imply. Cheap when nothing changed: call it from a timer.
///
/// # Safety
/// `engine` from `st_engine_open`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_poll(engine: *const st_engine, out: *mut *mut st_actions) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        h.run(out, |e| e.poll())
    })
}

/// Writes to `*out` a file descriptor that becomes readable when another process (the CLI,
/// an editor) changed the store, or -1 when the engine does not watch the store. Put it in
/// your event loop and call `st_engine_poll` when it is readable (that also resets it); keep
/// a timer as well if you like. The engine owns the descriptor: do not read or close it.
///
/// # Safety
/// `engine` from `st_engine_open`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_wakeup_fd(engine: *const st_engine, out: *mut i32) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        try_out!(out);
        unsafe { *out = h.engine.wakeup_fd().unwrap_or(-1) };
        st_status::Ok
    })
}

/// Actions for server start: presence to approved peers, probes to peers that approved us.
///
/// # Safety
/// `engine` from `st_engine_open`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_startup(engine: *const st_engine, out: *mut *mut st_actions) -> st_status {
    ffi_boundary!({
        let h = try_ref!(engine);
        h.run(out, |e| Ok(e.startup_actions()))
    })
}

/// The library version, e.g. "0.1.0" (the header's `ST_VERSION_*` are the version compiled
/// against). Static, NUL-terminated.
#[unsafe(no_mangle)]
pub extern "C" fn st_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
