//! server-trust: XEP-0267 Server Buddies.
//!
//! Servers establish trust by exchanging presence subscriptions between their domain JIDs.
//! This crate holds the whole protocol logic: [`Domain`] (who can be a buddy),
//! [`subscription`] (RFC 6121 Appendix A), [`Engine`] (XEP-0267 policy over a
//! [`Store`]), and the C ABI in [`ffi`]. Drivers (the Prosody module,
//! C hosts, the HTTP sidecar) only translate stanzas to calls and actions to stanzas.
#![deny(missing_docs)]

pub mod admin;
mod domain;
pub mod engine;
mod error;
pub mod evidence;
pub mod ffi;
pub mod owner;
pub mod store;
pub mod subscription;
pub mod vocab;

pub use domain::{Domain, MAX_DOMAIN_LEN};
pub use engine::{Action, Actor, Config, Engine, Federation, LogLevel, PresenceKind, Stats};
pub use error::{Error, Result};
pub use store::Store;
pub use subscription::{Direction, Disposition, Subscription, SubscriptionType, transition};
