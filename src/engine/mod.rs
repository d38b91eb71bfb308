//! The server roster engine: one per served host, driven equally by a Lua module, a C host
//! or an HTTP server.
//!
//! Drivers feed it inbound presence and admin acts; it updates the store and returns the
//! [`Action`]s to carry out. Where each concern lives:
//!
//! | module | concern |
//! |---|---|
//! | `types` | the public vocabulary: [`Config`], [`PresenceKind`], [`Action`], [`Actor`], [`LogLevel`] |
//! | `api` | [`Engine`]: the public calls, locking, loading and saving the roster |
//! | `policy` | XEP-0267 policy: what each RFC 6121 transition means for a server |
//! | `gather` | evidence for new requests: stream facts and queries awaiting answers |
//! | `snapshot` | the lock-free roster snapshot behind `is_trusted` |
//! | `compact` | folding the roster's journal into roster.toml, off the server's thread |
//! | `watch` | inotify + eventfd: noticing what the CLI and editors changed, across fork |
//!
//! The RFC 6121 tables themselves are in [`crate::subscription`].

mod api;
#[cfg(test)]
mod cap_tests;
mod compact;
mod gather;
mod liveness;
pub mod outbox;
mod outside;
mod policy;
mod snapshot;
mod types;
mod watch;

pub use api::Engine;
pub use types::{Action, Actor, Config, Federation, LogLevel, PeerPresence, PresenceKind, Stats};

#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_decisions;
#[cfg(test)]
mod tests_evidence;
#[cfg(test)]
mod tests_outside;
