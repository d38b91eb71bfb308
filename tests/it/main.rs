//! The integration tests of server-trust in one binary, one module per behaviour. Tests that
//! start real Prosody servers use the lab crate (crates/lab), which also builds the CLI and the
//! Lua module for the profile in use. The fork test has its own binary (tests/fork.rs): a fork
//! must not happen while other test threads hold locks.

mod admin_surfaces;
mod bulk_acts;
mod c_abi;
mod cli;
mod crash_safety;
mod deny_and_revoke;
mod deployment;
mod docs;
mod engine_pairs;
mod evidence;
mod fails_closed;
mod federation;
mod floods;
mod handshake_over_s2s;
mod liveness;
mod lua_bridge;
mod outbox;
mod source_build;
mod store_decisions;
mod support;
mod trust_expiry;
