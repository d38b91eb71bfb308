//! The C ABI (`include/server_trust.h`), in rustls-ffi style.
//!
//! Opaque handles, one status enum, a panic boundary around every `extern "C" fn`, NULL and
//! invalid UTF-8 answered with a status, never UB. Enumerations coming *from* C are taken as
//! plain `uint32_t` (an out-of-range Rust enum would be UB) and checked here.
//!
//! Ownership: `st_engine_open` gives an `st_engine *` freed by `st_engine_free`; every call
//! that returns actions gives an `st_actions *` freed by `st_actions_free`. Strings inside an
//! `st_action` live as long as their `st_actions`. An engine may be used from several
//! threads at once; `st_engine_free` must not race with other calls on the same engine.
#![allow(non_camel_case_types)]

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::{Action, Actor, Config, Engine, PresenceKind};
use crate::error::Error;
use crate::subscription::{Direction, Subscription, SubscriptionType, transition};

/// RFC 6121 subscription state, `ST_SUBSCRIPTION_*`.
pub type st_subscription = u32;
/// None.
pub const ST_SUBSCRIPTION_NONE: st_subscription = 0;
/// None + Pending Out.
pub const ST_SUBSCRIPTION_NONE_PENDING_OUT: st_subscription = 1;
/// None + Pending In.
pub const ST_SUBSCRIPTION_NONE_PENDING_IN: st_subscription = 2;
/// None + Pending Out/In.
pub const ST_SUBSCRIPTION_NONE_PENDING_OUT_IN: st_subscription = 3;
/// To.
pub const ST_SUBSCRIPTION_TO: st_subscription = 4;
/// To + Pending In.
pub const ST_SUBSCRIPTION_TO_PENDING_IN: st_subscription = 5;
/// From.
pub const ST_SUBSCRIPTION_FROM: st_subscription = 6;
/// From + Pending Out.
pub const ST_SUBSCRIPTION_FROM_PENDING_OUT: st_subscription = 7;
/// Both.
pub const ST_SUBSCRIPTION_BOTH: st_subscription = 8;

/// Direction of a subscription stanza, `ST_DIRECTION_*`.
pub type st_direction = u32;
/// Received from the peer.
pub const ST_DIRECTION_INBOUND: st_direction = 0;
/// Sent to the peer.
pub const ST_DIRECTION_OUTBOUND: st_direction = 1;

/// Subscription presence type, `ST_PRESENCE_TYPE_*`.
pub type st_presence_type = u32;
/// `subscribe`
pub const ST_PRESENCE_TYPE_SUBSCRIBE: st_presence_type = 0;
/// `subscribed`
pub const ST_PRESENCE_TYPE_SUBSCRIBED: st_presence_type = 1;
/// `unsubscribe`
pub const ST_PRESENCE_TYPE_UNSUBSCRIBE: st_presence_type = 2;
/// `unsubscribed`
pub const ST_PRESENCE_TYPE_UNSUBSCRIBED: st_presence_type = 3;

/// What to do with the stanza, `ST_DISPOSITION_*`.
pub type st_disposition = u32;
/// Inbound: hand to the admin queue / record it. Outbound: route it.
pub const ST_DISPOSITION_DELIVER: st_disposition = 0;
/// Inbound `subscribe` already approved: answer `subscribed`.
pub const ST_DISPOSITION_AUTO_REPLY: st_disposition = 1;
/// Inbound: do not deliver. Outbound: do not route.
pub const ST_DISPOSITION_DROP: st_disposition = 2;

/// Kind of an `st_action`, `ST_ACTION_*`.
pub type st_action_kind = u32;
/// Send `<presence from=host to=peer type=presence_type id=id/>`.
pub const ST_ACTION_SEND: st_action_kind = 0;
/// Tell the admins `text` about `peer`.
pub const ST_ACTION_NOTIFY: st_action_kind = 1;
/// `st_is_trusted(peer)` is now `trusted`.
pub const ST_ACTION_TRUST_CHANGED: st_action_kind = 2;
/// Log `text` at `level`.
pub const ST_ACTION_LOG: st_action_kind = 3;

/// Result of every fallible call. `st_status_str` describes each value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum st_status {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL.
    NullParameter = 1,
    /// A string was not valid UTF-8.
    InvalidUtf8 = 2,
    /// A string was not a bare server domain.
    InvalidDomain = 3,
    /// A number or name was out of range.
    InvalidArgument = 4,
    /// There is no pending request to decide.
    NoPendingRequest = 5,
    /// A store file does not parse (see `st_engine_last_error`).
    StoreCorrupt = 6,
    /// The file system refused an operation.
    StoreIo = 7,
    /// A bug: Rust panicked; the call had no effect that can be relied upon.
    Panic = 8,
}

impl From<&Error> for st_status {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidDomain { .. } => st_status::InvalidDomain,
            Error::InvalidArgument(_) => st_status::InvalidArgument,
            Error::NoPendingRequest(_) => st_status::NoPendingRequest,
            Error::Corrupt { .. } => st_status::StoreCorrupt,
            Error::Io { .. } => st_status::StoreIo,
        }
    }
}

/// Engine settings for `st_engine_open`; get defaults from `st_options_default`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct st_options {
    /// Pending requests kept at most (default 1000).
    pub max_pending: u32,
    /// Non-zero: after approving, subscribe back (default 1).
    pub reciprocate: u32,
    /// Non-zero: `st_engine_request` pre-approves the peer's reciprocal request (default 1).
    pub preapprove_on_request: u32,
    /// Seconds between file refreshes for a repeating pending peer (default 60).
    pub repeat_window_secs: u32,
    /// Non-zero: watch the store with inotify so `st_engine_poll` is free when idle (default 1).
    pub watch: u32,
}

/// One action, borrowed from its `st_actions`. Absent strings are NULL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct st_action {
    /// `ST_ACTION_*`.
    pub kind: st_action_kind,
    /// The peer domain concerned (never NULL).
    pub peer: *const c_char,
    /// For `ST_ACTION_SEND`: `subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`,
    /// `probe`, `unavailable`, or `available` (send no `type` attribute).
    pub presence_type: *const c_char,
    /// For `ST_ACTION_SEND`: the stanza id to echo, or NULL.
    pub id: *const c_char,
    /// For `ST_ACTION_NOTIFY` / `ST_ACTION_LOG`: the text.
    pub text: *const c_char,
    /// For `ST_ACTION_LOG`: `info`, `warn` or `error`.
    pub level: *const c_char,
    /// For `ST_ACTION_TRUST_CHANGED`: 1 trusted, 0 not.
    pub trusted: u32,
}

/// An open engine for one host. Opaque.
pub struct st_engine {
    engine: Engine,
    last_error: Mutex<CString>,
}

/// A list of actions. Opaque; read with `st_actions_len` / `st_actions_get`.
pub struct st_actions {
    items: Vec<OwnedAction>,
}

struct OwnedAction {
    kind: st_action_kind,
    peer: CString,
    presence_type: Option<&'static CStr>,
    id: Option<CString>,
    text: Option<CString>,
    level: Option<&'static CStr>,
    trusted: u32,
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).expect("NULs replaced")
}

fn static_cstr(s: &'static str) -> &'static CStr {
    match s {
        "subscribe" => c"subscribe",
        "subscribed" => c"subscribed",
        "unsubscribe" => c"unsubscribe",
        "unsubscribed" => c"unsubscribed",
        "probe" => c"probe",
        "available" => c"available",
        "unavailable" => c"unavailable",
        "info" => c"info",
        "warn" => c"warn",
        _ => c"error",
    }
}

impl From<Action> for OwnedAction {
    fn from(a: Action) -> Self {
        let blank = |kind, peer: &str| OwnedAction {
            kind,
            peer: cstring(peer),
            presence_type: None,
            id: None,
            text: None,
            level: None,
            trusted: 0,
        };
        match a {
            Action::Send { to, kind, id } => OwnedAction {
                presence_type: Some(static_cstr(kind.as_str())),
                id: id.as_deref().map(cstring),
                ..blank(ST_ACTION_SEND, to.as_str())
            },
            Action::Notify { peer, text } => {
                OwnedAction { text: Some(cstring(&text)), ..blank(ST_ACTION_NOTIFY, peer.as_str()) }
            }
            Action::TrustChanged { peer, trusted } => {
                OwnedAction { trusted: trusted as u32, ..blank(ST_ACTION_TRUST_CHANGED, peer.as_str()) }
            }
            Action::Log { level, text } => OwnedAction {
                text: Some(cstring(&text)),
                level: Some(static_cstr(level.as_str())),
                ..blank(ST_ACTION_LOG, "")
            },
        }
    }
}

/// Runs `body`, turning a panic into `$on_panic`. Every `extern "C" fn` starts with it.
macro_rules! ffi_boundary {
    ($on_panic:expr, $body:block) => {
        match catch_unwind(AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => $on_panic,
        }
    };
}

/// Borrows a required C string as UTF-8.
unsafe fn str_arg<'a>(p: *const c_char) -> Result<&'a str, st_status> {
    if p.is_null() {
        return Err(st_status::NullParameter);
    }
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| st_status::InvalidUtf8)
}

/// Borrows an optional C string (NULL is `None`).
unsafe fn opt_str_arg<'a>(p: *const c_char) -> Result<Option<&'a str>, st_status> {
    if p.is_null() { Ok(None) } else { unsafe { str_arg(p) }.map(Some) }
}

macro_rules! try_arg {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return status,
        }
    };
}

macro_rules! try_ref {
    ($p:expr) => {
        match unsafe { $p.as_ref() } {
            Some(v) => v,
            None => return st_status::NullParameter,
        }
    };
}

impl st_engine {
    /// Records `e` for `st_engine_last_error` and returns its status.
    fn fail(&self, e: &Error) -> st_status {
        *self.last_error.lock() = cstring(&e.to_string());
        st_status::from(e)
    }

    fn run(
        &self,
        out: *mut *mut st_actions,
        f: impl FnOnce(&Engine) -> crate::Result<Vec<Action>>,
    ) -> st_status {
        if out.is_null() {
            return st_status::NullParameter;
        }
        match f(&self.engine) {
            Ok(actions) => {
                let list = st_actions { items: actions.into_iter().map(OwnedAction::from).collect() };
                unsafe { *out = Box::into_raw(Box::new(list)) };
                st_status::Ok
            }
            Err(e) => self.fail(&e),
        }
    }
}

/// Default options: reciprocate, pre-approve on request, 1000 pending, 60 s repeat window, watch.
#[unsafe(no_mangle)]
pub extern "C" fn st_options_default() -> st_options {
    let c = Config::default();
    st_options {
        max_pending: c.max_pending as u32,
        reciprocate: 1,
        preapprove_on_request: 1,
        repeat_window_secs: c.repeat_window.as_secs() as u32,
        watch: 1,
    }
}

/// Opens the engine of `host` over the store `store_root` (one directory per host inside).
/// `options` may be NULL for defaults. On success writes a handle to `*out`; the caller
/// owns it and must release it with `st_engine_free`. A corrupt roster fails with
/// `ST_STATUS_STORE_CORRUPT` and leaves the file untouched.
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
    ffi_boundary!(st_status::Panic, {
        let root = try_arg!(unsafe { str_arg(store_root) });
        let host = try_arg!(unsafe { str_arg(host) });
        if out.is_null() {
            return st_status::NullParameter;
        }
        let o = unsafe { options.as_ref() }.copied().unwrap_or_else(|| st_options_default());
        let config = Config {
            reciprocate: o.reciprocate != 0,
            preapprove_on_request: o.preapprove_on_request != 0,
            max_pending: o.max_pending as usize,
            repeat_window: Duration::from_secs(o.repeat_window_secs.into()),
            watch: o.watch != 0,
        };
        match Engine::open(Path::new(root), host, config) {
            Ok(engine) => {
                let h = st_engine { engine, last_error: Mutex::new(CString::default()) };
                unsafe { *out = Box::into_raw(Box::new(h)) };
                st_status::Ok
            }
            Err(e) => st_status::from(&e),
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
    ffi_boundary!((), {
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
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        let scope = try_arg!(unsafe { opt_str_arg(scope) });
        if out.is_null() {
            return st_status::NullParameter;
        }
        unsafe { *out = h.engine.is_trusted(peer, scope) };
        st_status::Ok
    })
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
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine);
        let peer = try_arg!(unsafe { str_arg(peer) });
        if out.is_null() {
            return st_status::NullParameter;
        }
        match h.engine.state(peer) {
            Ok(s) => {
                unsafe { *out = s as st_subscription };
                st_status::Ok
            }
            Err(e) => h.fail(&e),
        }
    })
}

/// Applies a presence stanza that `from` sent to the host JID. `type` is the stanza's
/// `type` attribute (`subscribe`, ..., `probe`, `unavailable`; NULL or "" = available);
/// `id` may be NULL. On success `*out` receives the actions to carry out (free them with
/// `st_actions_free`). A `from` that is not a bare domain fails with
/// `ST_STATUS_INVALID_DOMAIN`: user and full JIDs never enter the server roster.
///
/// # Safety
/// `engine` from `st_engine_open`; strings NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_inbound(
    engine: *mut st_engine,
    from: *const c_char,
    r#type: *const c_char,
    id: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine.cast_const());
        let from = try_arg!(unsafe { str_arg(from) });
        let ty = try_arg!(unsafe { opt_str_arg(r#type) }).unwrap_or("");
        let id = try_arg!(unsafe { opt_str_arg(id) });
        let kind: PresenceKind = match ty.parse() {
            Ok(k) => k,
            Err(e) => return h.fail(&e),
        };
        h.run(out, |e| e.inbound(from, kind, id))
    })
}

/// Shared body of the admin acts (actor `api` in the audit log).
unsafe fn admin(
    engine: *mut st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
    act: fn(&Engine, &str, Actor) -> crate::Result<Vec<Action>>,
) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine.cast_const());
        let peer = try_arg!(unsafe { str_arg(peer) });
        h.run(out, |e| act(e, peer, Actor::Api))
    })
}

/// Admin act: ask `peer` for a subscription (sends `subscribe`) and, unless disabled,
/// pre-approve its reciprocal request. Actions go to `*out`.
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_request(
    engine: *mut st_engine,
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
    engine: *mut st_engine,
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
    engine: *mut st_engine,
    peer: *const c_char,
    out: *mut *mut st_actions,
) -> st_status {
    unsafe { admin(engine, peer, out, Engine::deny) }
}

/// Admin act: withdraw trust both ways (`unsubscribe` and `unsubscribed`).
///
/// # Safety
/// `engine` from `st_engine_open`; `peer` NUL-terminated; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_revoke(
    engine: *mut st_engine,
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
pub unsafe extern "C" fn st_engine_poll(engine: *mut st_engine, out: *mut *mut st_actions) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine.cast_const());
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
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine);
        if out.is_null() {
            return st_status::NullParameter;
        }
        unsafe { *out = h.engine.wakeup_fd().unwrap_or(-1) };
        st_status::Ok
    })
}

/// Actions for server start: presence to approved peers, probes to peers that approved us.
///
/// # Safety
/// `engine` from `st_engine_open`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_startup(engine: *mut st_engine, out: *mut *mut st_actions) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine.cast_const());
        h.run(out, |e| Ok(e.startup_actions()))
    })
}

/// Copies the message of the engine's last failure (NUL-terminated, truncated to fit) into
/// `buf` of `len` bytes and writes the untruncated length to `*out_n` (may be NULL).
///
/// # Safety
/// `engine` from `st_engine_open`; `buf` writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_engine_last_error(
    engine: *const st_engine,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let h = try_ref!(engine);
        if buf.is_null() && len > 0 {
            return st_status::NullParameter;
        }
        let msg = h.last_error.lock();
        let bytes = msg.as_bytes();
        if len > 0 {
            let n = bytes.len().min(len - 1);
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                *buf.add(n) = 0;
            }
        }
        if !out_n.is_null() {
            unsafe { *out_n = bytes.len() };
        }
        st_status::Ok
    })
}

/// Number of actions in `actions` (0 for NULL).
///
/// # Safety
/// `actions` from this library or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_len(actions: *const st_actions) -> usize {
    ffi_boundary!(0, { unsafe { actions.as_ref() }.map_or(0, |a| a.items.len()) })
}

/// Writes action `index` to `*out`. Its strings stay valid until `st_actions_free`.
///
/// # Safety
/// `actions` from this library; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_get(
    actions: *const st_actions,
    index: usize,
    out: *mut st_action,
) -> st_status {
    ffi_boundary!(st_status::Panic, {
        let list = try_ref!(actions);
        if out.is_null() {
            return st_status::NullParameter;
        }
        let Some(a) = list.items.get(index) else { return st_status::InvalidArgument };
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        let view = st_action {
            kind: a.kind,
            peer: a.peer.as_ptr(),
            presence_type: ptr(a.presence_type),
            id: ptr(a.id.as_deref()),
            text: ptr(a.text.as_deref()),
            level: ptr(a.level),
            trusted: a.trusted,
        };
        unsafe { *out = view };
        st_status::Ok
    })
}

/// Releases an action list. NULL is fine; not twice.
///
/// # Safety
/// `actions` from this library or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_free(actions: *mut st_actions) {
    ffi_boundary!((), {
        if !actions.is_null() {
            drop(unsafe { Box::from_raw(actions) });
        }
    })
}

/// The RFC 6121 Appendix A transition, for C hosts that keep their own storage: from
/// `state` (0–8), a `type` (0–3) stanza travelling `dir` (0 inbound, 1 outbound) leads to
/// `*next`, and `*disposition` says whether to deliver/route it, auto-reply `subscribed`, or
/// drop it. Out-of-range numbers give `ST_STATUS_INVALID_ARGUMENT` and write nothing.
///
/// # Safety
/// `next` and `disposition` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_transition(
    state: st_subscription,
    dir: st_direction,
    r#type: st_presence_type,
    next: *mut st_subscription,
    disposition: *mut st_disposition,
) -> st_status {
    ffi_boundary!(st_status::Panic, {
        if next.is_null() || disposition.is_null() {
            return st_status::NullParameter;
        }
        let (Some(s), Some(d), Some(t)) = (
            Subscription::from_index(state),
            Direction::from_index(dir),
            SubscriptionType::from_index(r#type),
        ) else {
            return st_status::InvalidArgument;
        };
        let (n, disp) = transition(s, d, t);
        unsafe {
            *next = n as st_subscription;
            *disposition = disp as st_disposition;
        }
        st_status::Ok
    })
}

/// A static, NUL-terminated description of a status value (unknown values included).
#[unsafe(no_mangle)]
pub extern "C" fn st_status_str(status: u32) -> *const c_char {
    let s: &'static CStr = match status {
        0 => c"ok",
        1 => c"a required pointer was NULL",
        2 => c"a string was not valid UTF-8",
        3 => c"not a bare server domain",
        4 => c"argument out of range",
        5 => c"no pending request from that peer",
        6 => c"a store file is corrupt (see st_engine_last_error)",
        7 => c"the file system refused an operation (see st_engine_last_error)",
        8 => c"internal error (Rust panic caught at the C boundary)",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// The library version, e.g. "0.1.0". Static, NUL-terminated.
#[unsafe(no_mangle)]
pub extern "C" fn st_version() -> *const c_char {
    const V: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    V.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::{null, null_mut};

    #[test]
    fn transition_rejects_out_of_range_and_null() {
        let (mut n, mut d) = (99, 99);
        unsafe {
            assert_eq!(st_transition(9, 0, 0, &mut n, &mut d), st_status::InvalidArgument);
            assert_eq!(st_transition(0, 2, 0, &mut n, &mut d), st_status::InvalidArgument);
            assert_eq!(st_transition(0, 0, 4, &mut n, &mut d), st_status::InvalidArgument);
            assert_eq!((n, d), (99, 99), "outputs untouched on error");
            assert_eq!(st_transition(0, 0, 0, null_mut(), &mut d), st_status::NullParameter);
            assert_eq!(st_transition(0, 0, 0, &mut n, &mut d), st_status::Ok);
        }
        assert_eq!((n, d), (ST_SUBSCRIPTION_NONE_PENDING_IN, ST_DISPOSITION_DELIVER));
    }

    #[test]
    fn null_and_bad_utf8_are_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let root = CString::new(dir.path().to_str().unwrap()).unwrap();
        let mut e = null_mut();
        unsafe {
            assert_eq!(st_engine_open(null(), c"a.lit".as_ptr(), null(), &mut e), st_status::NullParameter);
            assert_eq!(
                st_engine_open(root.as_ptr(), c"alice@a.lit".as_ptr(), null(), &mut e),
                st_status::InvalidDomain
            );
            assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
            let bad = [0xffu8, 0xfe, 0];
            let mut t = true;
            assert_eq!(st_is_trusted(e, bad.as_ptr().cast(), null(), &mut t), st_status::InvalidUtf8);
            assert_eq!(st_is_trusted(null(), c"b.lit".as_ptr(), null(), &mut t), st_status::NullParameter);
            assert_eq!(st_is_trusted(e, c"b.lit".as_ptr(), null(), null_mut()), st_status::NullParameter);
            let mut out = null_mut();
            assert_eq!(st_engine_approve(e, c"b.lit".as_ptr(), &mut out), st_status::NoPendingRequest);
            let mut buf = [0 as c_char; 64];
            let mut n = 0;
            assert_eq!(st_engine_last_error(e, buf.as_mut_ptr(), buf.len(), &mut n), st_status::Ok);
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), "no pending request from b.lit");
            assert_eq!(
                st_engine_inbound(e, c"b.lit".as_ptr(), c"bogus".as_ptr(), null(), &mut out),
                st_status::InvalidArgument
            );
            assert_eq!(
                st_engine_inbound(e, c"bob@b.lit".as_ptr(), c"subscribe".as_ptr(), null(), &mut out),
                st_status::InvalidDomain
            );
            assert_eq!(st_actions_len(null()), 0);
            st_actions_free(null_mut());
            st_engine_free(e);
            st_engine_free(null_mut());
        }
    }

    #[test]
    fn status_strings_cover_every_value() {
        for s in 0..=8 {
            let text = unsafe { CStr::from_ptr(st_status_str(s)) }.to_str().unwrap();
            assert_ne!(text, "unknown status");
        }
        assert_eq!(unsafe { CStr::from_ptr(st_status_str(1234)) }.to_str().unwrap(), "unknown status");
        assert_eq!(unsafe { CStr::from_ptr(st_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    /// One handle, many threads: lookups run while another thread changes the roster.
    #[test]
    fn handle_is_usable_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let root = CString::new(dir.path().to_str().unwrap()).unwrap();
        let mut opts = st_options_default();
        opts.watch = 0;
        let mut e = null_mut();
        assert_eq!(unsafe { st_engine_open(root.as_ptr(), c"c.lit".as_ptr(), &opts, &mut e) }, st_status::Ok);
        struct Handle(*mut st_engine);
        unsafe impl Send for Handle {}
        unsafe impl Sync for Handle {}
        let h = std::sync::Arc::new(Handle(e));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let peer = CString::new(format!("w{t}-{i}.lit")).unwrap();
                        let mut out = null_mut();
                        unsafe {
                            assert_eq!(
                                st_engine_inbound(
                                    h.0,
                                    peer.as_ptr(),
                                    c"subscribe".as_ptr(),
                                    null(),
                                    &mut out
                                ),
                                st_status::Ok
                            );
                            st_actions_free(out);
                            assert_eq!(st_engine_approve(h.0, peer.as_ptr(), &mut out), st_status::Ok);
                            st_actions_free(out);
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for i in 0..20_000 {
                        let peer = CString::new(format!("w0-{}.lit", i % 50)).unwrap();
                        let mut t = false;
                        assert_eq!(
                            unsafe { st_is_trusted(h.0, peer.as_ptr(), null(), &mut t) },
                            st_status::Ok
                        );
                        seen += t as usize;
                    }
                    seen
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
        for t in 0..2 {
            for i in 0..50 {
                let peer = CString::new(format!("w{t}-{i}.lit")).unwrap();
                let mut trusted = false;
                unsafe { st_is_trusted(h.0, peer.as_ptr(), null(), &mut trusted) };
                assert!(trusted, "{peer:?}");
            }
        }
        unsafe { st_engine_free(h.0) };
    }
}
