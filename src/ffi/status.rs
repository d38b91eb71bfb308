//! `st_status`, the one result of every fallible call, and the thread's last error message.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char};

use super::boundary::cstring;
use crate::error::Error;

/// Result of every fallible call. Numbered in bands by origin, with room to grow: 1xxx the
/// caller's arguments, 2xxx refused by the roster's state, 3xxx the store, 9xxx internal.
/// Numbers are never reused. `st_status_str` describes each; `st_last_error` gives the
/// message of the last failure on the calling thread.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum st_status {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL.
    NullParameter = 1000,
    /// A string was not valid UTF-8.
    InvalidUtf8 = 1001,
    /// A string was not a bare server domain (user and full JIDs never enter the roster).
    InvalidDomain = 1002,
    /// A name is not in the vocabulary (e.g. not a presence type).
    UnknownName = 1003,
    /// A number was out of range (a state, type, direction or index).
    OutOfRange = 1004,
    /// An option value was refused.
    InvalidOption = 1005,
    /// The peer named is this host.
    OwnHost = 2000,
    /// The peer is not in the roster.
    NotInRoster = 2001,
    /// There is no pending request from that peer to decide.
    NoPendingRequest = 2002,
    /// The store does not serve that host.
    UnknownHost = 2003,
    /// Another decision on that request was recorded first; it stands (see `st_last_error`:
    /// which, by whom, when).
    AlreadyDecided = 2004,
    /// A store file does not parse; it was left untouched.
    StoreCorrupt = 3000,
    /// The file system refused an operation.
    StoreIo = 3001,
    /// Some store files could not be read (each was reported).
    StoreUnreadable = 3002,
    /// Another program is writing a store file; nothing was written over it. Try again.
    StoreChanged = 3003,
    /// Another process holds the store lock; nothing was done. Try again.
    StoreBusy = 3004,
    /// The store cannot be written by the user the host runs as (see `st_last_error`).
    StorePermission = 3005,
    /// A bug: Rust panicked; the call had no effect that can be relied upon.
    Panic = 9000,
}

impl st_status {
    /// Every status, for lookups by number.
    const ALL: [st_status; 19] = [
        Self::Ok,
        Self::NullParameter,
        Self::InvalidUtf8,
        Self::InvalidDomain,
        Self::UnknownName,
        Self::OutOfRange,
        Self::InvalidOption,
        Self::OwnHost,
        Self::NotInRoster,
        Self::NoPendingRequest,
        Self::UnknownHost,
        Self::AlreadyDecided,
        Self::StoreCorrupt,
        Self::StoreIo,
        Self::StoreUnreadable,
        Self::StoreChanged,
        Self::StoreBusy,
        Self::StorePermission,
        Self::Panic,
    ];

    fn description(self) -> &'static CStr {
        match self {
            Self::Ok => c"ok",
            Self::NullParameter => c"a required pointer was NULL",
            Self::InvalidUtf8 => c"a string was not valid UTF-8",
            Self::InvalidDomain => c"not a bare server domain",
            Self::UnknownName => c"not a known name (presence type, actor, ...)",
            Self::OutOfRange => c"a number was out of range",
            Self::InvalidOption => c"an option value was refused",
            Self::OwnHost => c"the peer is this host",
            Self::NotInRoster => c"the peer is not in the roster",
            Self::NoPendingRequest => c"no pending request from that peer",
            Self::UnknownHost => c"the store does not serve that host",
            Self::AlreadyDecided => {
                c"another decision on that request came first and stands (see st_last_error)"
            }
            Self::StoreCorrupt => c"a store file is corrupt (see st_last_error)",
            Self::StoreIo => c"the file system refused an operation (see st_last_error)",
            Self::StoreUnreadable => c"some store files could not be read",
            Self::StoreChanged => c"another program is writing the store; nothing written over it, try again",
            Self::StoreBusy => c"another process holds the store lock; nothing done, try again",
            Self::StorePermission => c"the store cannot be written by this user (see st_last_error)",
            Self::Panic => c"internal error (Rust panic caught at the C boundary)",
        }
    }
}

impl From<&Error> for st_status {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidDomain { .. } => st_status::InvalidDomain,
            Error::UnknownName { .. } => st_status::UnknownName,
            Error::InvalidOption { .. } => st_status::InvalidOption,
            Error::OwnHost(_) => st_status::OwnHost,
            Error::NotInRoster(_) => st_status::NotInRoster,
            Error::NoPendingRequest(_) => st_status::NoPendingRequest,
            Error::UnknownHost { .. } => st_status::UnknownHost,
            Error::AlreadyDecided { .. } => st_status::AlreadyDecided,
            Error::Corrupt { .. } => st_status::StoreCorrupt,
            Error::Io { .. } => st_status::StoreIo,
            Error::Unreadable { .. } => st_status::StoreUnreadable,
            Error::Changed { .. } => st_status::StoreChanged,
            Error::Busy { .. } => st_status::StoreBusy,
            Error::Permission { .. } => st_status::StorePermission,
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// The call in progress has recorded its own (more precise) message. Const-initialised:
    /// resetting it is one store, cheap enough for every call (trust checks included).
    static RECORDED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the start of a call: its failure has not been recorded yet.
pub(super) fn begin_call() {
    RECORDED.set(false);
}

/// Records a failure: `message` when the call has one (an engine error), else the status's
/// description unless the call recorded its own. Every failing call records, so the message
/// is never older than the status.
pub(super) fn record_failure(status: st_status, message: Option<&str>) {
    let text = match message {
        Some(text) => cstring(text),
        None if !RECORDED.get() => status.description().to_owned(),
        None => return,
    };
    RECORDED.set(true);
    let _ = LAST_ERROR.try_with(|m| *m.borrow_mut() = text);
}

/// An engine error as a status, with its message recorded.
pub(super) fn fail(e: &Error) -> st_status {
    let status = st_status::from(e);
    record_failure(status, Some(&e.to_string()));
    status
}

/// A static, NUL-terminated description of a status value (unknown values included).
#[unsafe(no_mangle)]
pub extern "C" fn st_status_str(status: u32) -> *const c_char {
    let s =
        st_status::ALL.iter().find(|s| **s as u32 == status).map_or(c"unknown status", |s| s.description());
    s.as_ptr()
}

/// Copies the message of the last failed call made on this thread (e.g. why `st_engine_open`
/// failed, naming the file and line) into `buf` of `len` bytes, NUL-terminated and truncated
/// to fit, and writes the untruncated length to `*out_n` (may be NULL). Needs no handle.
/// Thread-safe: each thread has its own message. Empty before any failure.
///
/// # Safety
/// `buf` writable for `len` bytes (may be NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_last_error(buf: *mut c_char, len: usize, out_n: *mut usize) -> st_status {
    // No ffi_boundary here: asking for the message must not replace it.
    if buf.is_null() && len > 0 {
        return st_status::NullParameter;
    }
    let copy = |msg: &CString| {
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
    };
    match LAST_ERROR.try_with(|m| copy(&m.borrow())) {
        Ok(()) => st_status::Ok,
        Err(_) => st_status::Panic,
    }
}
