//! Shared helpers for integration tests. Include with `mod support;` at the top of a test file.
#![allow(dead_code)]

pub mod prosody;
