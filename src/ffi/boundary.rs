//! The panic boundary and the argument checks that open every `extern "C" fn`.

use std::ffi::{CStr, CString, c_char};

use super::status::{record_failure, st_status};

/// What an `extern "C" fn` returns: a status (failures are recorded for `st_last_error`) or a
/// plain value with a safe default on panic.
pub(super) trait Outcome {
    fn on_panic() -> Self;
    fn record(&self) {}
}

impl Outcome for st_status {
    fn on_panic() -> Self {
        st_status::Panic
    }
    fn record(&self) {
        if *self != st_status::Ok {
            record_failure(*self, None);
        }
    }
}

impl Outcome for () {
    fn on_panic() -> Self {}
}

/// A yes/no answer: a panic answers no (fails closed).
impl Outcome for bool {
    fn on_panic() -> Self {
        false
    }
}

impl Outcome for usize {
    fn on_panic() -> Self {
        0
    }
}

impl Outcome for *const c_char {
    fn on_panic() -> Self {
        std::ptr::null()
    }
}

/// Runs `body`, turning a panic into the return type's safe value and recording a failed
/// status for `st_last_error`. Every `extern "C" fn` starts with it.
macro_rules! ffi_boundary {
    ($body:block) => {{
        $crate::ffi::status::begin_call();
        let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => $crate::ffi::boundary::Outcome::on_panic(),
        };
        $crate::ffi::boundary::Outcome::record(&r);
        r
    }};
}

/// Unwraps an argument check, returning its status from the calling function.
macro_rules! try_arg {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return status,
        }
    };
}

/// Borrows a required handle, or returns `ST_STATUS_NULL_PARAMETER`.
macro_rules! try_ref {
    ($p:expr) => {
        match unsafe { $p.as_ref() } {
            Some(v) => v,
            None => return $crate::ffi::st_status::NullParameter,
        }
    };
}

/// Checks that an out-parameter can be written.
macro_rules! try_out {
    ($p:expr) => {
        if $p.is_null() {
            return $crate::ffi::st_status::NullParameter;
        }
    };
}

/// Borrows a required C string as UTF-8.
pub(super) unsafe fn str_arg<'a>(p: *const c_char) -> Result<&'a str, st_status> {
    if p.is_null() {
        return Err(st_status::NullParameter);
    }
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| st_status::InvalidUtf8)
}

/// Borrows an optional C string (NULL is `None`).
pub(super) unsafe fn opt_str_arg<'a>(p: *const c_char) -> Result<Option<&'a str>, st_status> {
    if p.is_null() { Ok(None) } else { unsafe { str_arg(p) }.map(Some) }
}

/// A C string of `s`; an interior NUL (impossible in our names, possible in a stanza id)
/// becomes U+FFFD rather than a truncation.
pub(super) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).expect("NULs replaced")
}
