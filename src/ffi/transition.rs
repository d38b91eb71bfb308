//! The numbered vocabularies of the C ABI (states, directions, presence types,
//! dispositions), tied to the Rust enums at compile time, and the pure RFC 6121 table for
//! hosts that keep their own storage.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use super::boundary::{cstring, opt_str_arg};
use super::status::{fail, st_status};
use crate::engine::PresenceKind;
use crate::subscription::{Direction, Disposition, Subscription, SubscriptionType, transition};
use crate::vocab;

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

/// A presence type, `ST_PRESENCE_TYPE_*`: the one number for a presence `type` everywhere in
/// this ABI (inbound stanzas, actions, the transition table, which takes the first four).
/// `st_presence_type_name` gives the XML attribute value; `st_presence_type_parse` reads it.
pub type st_presence_type = u32;
/// `subscribe`
pub const ST_PRESENCE_TYPE_SUBSCRIBE: st_presence_type = 0;
/// `subscribed`
pub const ST_PRESENCE_TYPE_SUBSCRIBED: st_presence_type = 1;
/// `unsubscribe`
pub const ST_PRESENCE_TYPE_UNSUBSCRIBE: st_presence_type = 2;
/// `unsubscribed`
pub const ST_PRESENCE_TYPE_UNSUBSCRIBED: st_presence_type = 3;
/// `probe`
pub const ST_PRESENCE_TYPE_PROBE: st_presence_type = 4;
/// Available presence: no `type` attribute on the wire.
pub const ST_PRESENCE_TYPE_AVAILABLE: st_presence_type = 5;
/// `unavailable`
pub const ST_PRESENCE_TYPE_UNAVAILABLE: st_presence_type = 6;

/// What to do with the stanza, `ST_DISPOSITION_*`.
pub type st_disposition = u32;
/// Inbound: hand to the admin queue / record it. Outbound: route it.
pub const ST_DISPOSITION_DELIVER: st_disposition = 0;
/// Inbound `subscribe` already approved: answer `subscribed`.
pub const ST_DISPOSITION_AUTO_REPLY: st_disposition = 1;
/// Inbound: do not deliver. Outbound: do not route.
pub const ST_DISPOSITION_DROP: st_disposition = 2;

// The C numbers are the Rust discriminants: a reordered enum fails to compile.
const _: () = {
    assert!(Subscription::None as u32 == ST_SUBSCRIPTION_NONE);
    assert!(Subscription::NonePendingOut as u32 == ST_SUBSCRIPTION_NONE_PENDING_OUT);
    assert!(Subscription::NonePendingIn as u32 == ST_SUBSCRIPTION_NONE_PENDING_IN);
    assert!(Subscription::NonePendingOutIn as u32 == ST_SUBSCRIPTION_NONE_PENDING_OUT_IN);
    assert!(Subscription::To as u32 == ST_SUBSCRIPTION_TO);
    assert!(Subscription::ToPendingIn as u32 == ST_SUBSCRIPTION_TO_PENDING_IN);
    assert!(Subscription::From as u32 == ST_SUBSCRIPTION_FROM);
    assert!(Subscription::FromPendingOut as u32 == ST_SUBSCRIPTION_FROM_PENDING_OUT);
    assert!(Subscription::Both as u32 == ST_SUBSCRIPTION_BOTH);
    assert!(Direction::Inbound as u32 == ST_DIRECTION_INBOUND);
    assert!(Direction::Outbound as u32 == ST_DIRECTION_OUTBOUND);
    assert!(PresenceKind::Subscribe as u32 == ST_PRESENCE_TYPE_SUBSCRIBE);
    assert!(PresenceKind::Subscribed as u32 == ST_PRESENCE_TYPE_SUBSCRIBED);
    assert!(PresenceKind::Unsubscribe as u32 == ST_PRESENCE_TYPE_UNSUBSCRIBE);
    assert!(PresenceKind::Unsubscribed as u32 == ST_PRESENCE_TYPE_UNSUBSCRIBED);
    assert!(PresenceKind::Probe as u32 == ST_PRESENCE_TYPE_PROBE);
    assert!(PresenceKind::Available as u32 == ST_PRESENCE_TYPE_AVAILABLE);
    assert!(PresenceKind::Unavailable as u32 == ST_PRESENCE_TYPE_UNAVAILABLE);
    assert!(SubscriptionType::Subscribe as u32 == ST_PRESENCE_TYPE_SUBSCRIBE);
    assert!(SubscriptionType::Subscribed as u32 == ST_PRESENCE_TYPE_SUBSCRIBED);
    assert!(SubscriptionType::Unsubscribe as u32 == ST_PRESENCE_TYPE_UNSUBSCRIBE);
    assert!(SubscriptionType::Unsubscribed as u32 == ST_PRESENCE_TYPE_UNSUBSCRIBED);
    assert!(Disposition::Deliver as u32 == ST_DISPOSITION_DELIVER);
    assert!(Disposition::AutoReply as u32 == ST_DISPOSITION_AUTO_REPLY);
    assert!(Disposition::Drop as u32 == ST_DISPOSITION_DROP);
};

/// C strings of the wire names of `all`, indexed by discriminant; made once, kept forever.
fn names<T: serde::Serialize>(cell: &'static OnceLock<Vec<CString>>, all: &[T]) -> &'static [CString] {
    cell.get_or_init(|| all.iter().map(|v| cstring(vocab::name(v))).collect())
}

fn presence_name(kind: PresenceKind) -> &'static CString {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    &names(&NAMES, &PresenceKind::ALL)[kind as usize]
}

/// The wire name of presence type `t` (`"subscribe"`, ..., `"available"` which has no
/// attribute on the wire), static and NUL-terminated; NULL when out of range.
#[unsafe(no_mangle)]
pub extern "C" fn st_presence_type_name(t: st_presence_type) -> *const c_char {
    ffi_boundary!({ PresenceKind::from_index(t).map_or(std::ptr::null(), |k| presence_name(k).as_ptr()) })
}

/// The wire name of subscription state `s` (`"none"`, `"none+pending-in"`, ..., `"both"`,
/// as in the store and the CLI), static and NUL-terminated; NULL when out of range.
#[unsafe(no_mangle)]
pub extern "C" fn st_subscription_name(s: st_subscription) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    ffi_boundary!({
        Subscription::from_index(s)
            .map_or(std::ptr::null(), |s| names(&NAMES, &Subscription::ALL)[s as usize].as_ptr())
    })
}

/// Reads a presence `type` attribute into `*out`: NULL or `""` is available; anything not
/// in the vocabulary fails with `ST_STATUS_UNKNOWN_NAME` and writes nothing.
///
/// # Safety
/// `name` NUL-terminated or NULL; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn st_presence_type_parse(
    name: *const c_char,
    out: *mut st_presence_type,
) -> st_status {
    ffi_boundary!({
        let name = try_arg!(unsafe { opt_str_arg(name) }).unwrap_or("");
        try_out!(out);
        match name.parse::<PresenceKind>() {
            Ok(k) => {
                unsafe { *out = k as st_presence_type };
                st_status::Ok
            }
            Err(e) => fail(&e),
        }
    })
}

/// The RFC 6121 Appendix A transition, for C hosts that keep their own storage: from
/// `state`, a stanza of `type` (one of the four subscription types) travelling `dir` leads
/// to `*next`, and `*disposition` says whether to deliver/route it, auto-reply `subscribed`,
/// or drop it. Out-of-range numbers give `ST_STATUS_OUT_OF_RANGE` and write nothing.
/// Pure and thread-safe.
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
    ffi_boundary!({
        try_out!(next);
        try_out!(disposition);
        let (Some(s), Some(d), Some(t)) = (
            Subscription::from_index(state),
            Direction::from_index(dir),
            SubscriptionType::from_index(r#type),
        ) else {
            return st_status::OutOfRange;
        };
        let (n, disp) = transition(s, d, t);
        unsafe {
            *next = n as st_subscription;
            *disposition = disp as st_disposition;
        }
        st_status::Ok
    })
}
