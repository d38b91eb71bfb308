//! The C ABI (`include/server_trust.h`), in rustls-ffi style: opaque handles, one status
//! enum, a panic boundary around every `extern "C" fn`; NULL and invalid UTF-8 are answered
//! with a status, never UB. Enumerations coming *from* C are taken as plain `uint32_t` (an
//! out-of-range Rust enum would be UB) and checked here.
//!
//! | module | concern |
//! |---|---|
//! | `boundary` | the panic boundary and argument checks every function starts with |
//! | `status` | `st_status` (numbered in bands), its descriptions, `st_last_error` |
//! | `engine` | `st_engine`: open, inbound presence, admin acts, poll, trust checks |
//! | `actions` | `st_actions` / `st_action`: what the host must do |
//! | `evidence` | stream facts and query replies for a new request's evidence |
//! | `transition` | the pure RFC 6121 table and the numbered vocabularies (states, types) |
//!
//! Names cross this boundary as numbers tied to the Rust enums by compile-time asserts, and
//! as the wire names of [`crate::vocab`] through `st_*_name` functions.
#![allow(non_camel_case_types)]

#[macro_use]
pub(crate) mod boundary;
mod actions;
mod engine;
mod evidence;
mod outbox;
pub(crate) mod status;
mod transition;

pub use actions::*;
pub use engine::*;
pub use evidence::*;
pub use outbox::*;
pub use status::*;
pub use transition::*;

#[cfg(test)]
mod tests;
