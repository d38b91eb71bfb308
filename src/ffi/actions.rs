//! `st_actions`: what the host must do after a call, read with `st_actions_len/get`.

use std::ffi::{CString, c_char};

use super::boundary::cstring;
use super::status::st_status;
use super::transition::st_presence_type;
use crate::engine::{Action, LogLevel};

/// Kind of an `st_action`, `ST_ACTION_*`.
pub type st_action_kind = u32;
/// Send `<presence from=host to=peer type=type id=id/>`.
pub const ST_ACTION_SEND: st_action_kind = 0;
/// Tell the admins `text` about `peer`.
pub const ST_ACTION_NOTIFY: st_action_kind = 1;
/// `st_is_trusted(peer)` is now `trusted`.
pub const ST_ACTION_TRUST_CHANGED: st_action_kind = 2;
/// Log `text` at `level`.
pub const ST_ACTION_LOG: st_action_kind = 3;
/// Send `<iq type='get' from=host to=peer><query xmlns=text/></iq>` and pass its reply (or
/// NULL after `ST_ANSWER_TIMEOUT_SECS`) to `st_engine_answer`. Ignore kinds you do not know.
pub const ST_ACTION_QUERY: st_action_kind = 4;
/// Seconds to wait for the reply to an `ST_ACTION_QUERY`.
pub const ST_ANSWER_TIMEOUT_SECS: u32 = 10;
const _: () = assert!(crate::evidence::ANSWER_TIMEOUT.as_secs() == ST_ANSWER_TIMEOUT_SECS as u64);

/// Severity of an `ST_ACTION_LOG`, `ST_LOG_LEVEL_*`.
pub type st_log_level = u32;
/// Routine.
pub const ST_LOG_LEVEL_INFO: st_log_level = 0;
/// Needs an admin's eye.
pub const ST_LOG_LEVEL_WARN: st_log_level = 1;
/// Something is broken (e.g. a corrupt store file).
pub const ST_LOG_LEVEL_ERROR: st_log_level = 2;

const _: () = {
    assert!(LogLevel::Info as u32 == ST_LOG_LEVEL_INFO);
    assert!(LogLevel::Warn as u32 == ST_LOG_LEVEL_WARN);
    assert!(LogLevel::Error as u32 == ST_LOG_LEVEL_ERROR);
};

/// One action, a view borrowed from its `st_actions`: its strings live until
/// `st_actions_free`. Absent strings are NULL. The fields are those of the JSON and Lua form
/// of an action (`kind`, `peer`, `type`, `id`, `text`, `level`, `trusted`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct st_action {
    /// `ST_ACTION_*`.
    pub kind: st_action_kind,
    /// The peer domain concerned; `""` for `ST_ACTION_LOG`. Never NULL.
    pub peer: *const c_char,
    /// For `ST_ACTION_SEND`: the presence type to send; `st_presence_type_name` gives the
    /// attribute value (`ST_PRESENCE_TYPE_AVAILABLE`: send no `type` attribute).
    pub r#type: st_presence_type,
    /// For `ST_ACTION_SEND`: the stanza id to echo, or NULL (pick your own).
    pub id: *const c_char,
    /// For `ST_ACTION_NOTIFY` / `ST_ACTION_LOG`: the text; for `ST_ACTION_QUERY`: the
    /// query's namespace.
    pub text: *const c_char,
    /// For `ST_ACTION_LOG`: `ST_LOG_LEVEL_*`.
    pub level: st_log_level,
    /// For `ST_ACTION_TRUST_CHANGED`: the new answer of `st_is_trusted`.
    pub trusted: bool,
}

/// A list of actions returned by an engine call. Opaque. The caller owns it and releases it
/// with `st_actions_free`. Not thread-safe: read it from one thread at a time.
pub struct st_actions {
    pub(super) items: Vec<OwnedAction>,
}

pub(super) struct OwnedAction {
    kind: st_action_kind,
    peer: CString,
    r#type: st_presence_type,
    id: Option<CString>,
    text: Option<CString>,
    level: st_log_level,
    trusted: bool,
}

impl From<Action> for OwnedAction {
    fn from(a: Action) -> Self {
        let blank = |kind, peer: &str| OwnedAction {
            kind,
            peer: cstring(peer),
            r#type: 0,
            id: None,
            text: None,
            level: 0,
            trusted: false,
        };
        match a {
            Action::Send { to, kind, id } => OwnedAction {
                r#type: kind as st_presence_type,
                id: id.as_deref().map(cstring),
                ..blank(ST_ACTION_SEND, to.as_str())
            },
            Action::Notify { peer, text } => {
                OwnedAction { text: Some(cstring(&text)), ..blank(ST_ACTION_NOTIFY, peer.as_str()) }
            }
            Action::TrustChanged { peer, trusted } => {
                OwnedAction { trusted, ..blank(ST_ACTION_TRUST_CHANGED, peer.as_str()) }
            }
            Action::Query { peer, ns } => {
                OwnedAction { text: Some(cstring(&ns)), ..blank(ST_ACTION_QUERY, peer.as_str()) }
            }
            Action::Log { level, text } => OwnedAction {
                text: Some(cstring(&text)),
                level: level as st_log_level,
                ..blank(ST_ACTION_LOG, "")
            },
        }
    }
}

/// Number of actions in `actions` (0 for NULL).
///
/// # Safety
/// `actions` from this library or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_len(actions: *const st_actions) -> usize {
    ffi_boundary!({ unsafe { actions.as_ref() }.map_or(0, |a| a.items.len()) })
}

/// Writes action `index` to `*out` (`ST_STATUS_OUT_OF_RANGE` past the end). Its strings stay
/// valid until `st_actions_free`.
///
/// # Safety
/// `actions` from this library; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_get(
    actions: *const st_actions,
    index: usize,
    out: *mut st_action,
) -> st_status {
    ffi_boundary!({
        let list = try_ref!(actions);
        try_out!(out);
        let Some(a) = list.items.get(index) else { return st_status::OutOfRange };
        let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
        let view = st_action {
            kind: a.kind,
            peer: a.peer.as_ptr(),
            r#type: a.r#type,
            id: ptr(a.id.as_ref()),
            text: ptr(a.text.as_ref()),
            level: a.level,
            trusted: a.trusted,
        };
        unsafe { *out = view };
        st_status::Ok
    })
}

/// Releases an action list. NULL is fine; must not be called twice with the same value.
///
/// # Safety
/// `actions` from this library or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_actions_free(actions: *mut st_actions) {
    ffi_boundary!({
        if !actions.is_null() {
            drop(unsafe { Box::from_raw(actions) });
        }
    })
}
