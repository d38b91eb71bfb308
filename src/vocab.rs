//! The one wire vocabulary: the lowercase names that cross every boundary.
//!
//! The names are the serde names derived on the enums themselves (`Actor`, `Decision`,
//! `PresenceKind`, `LogLevel`, `Subscription`, `Action`). Store files, the audit log, the
//! CLI's `--json`, the Lua bridge, the C ABI and the sidecar's HTTP JSON all go through serde
//! or through these two functions, so no second table of names exists to drift.

use serde::Serialize;
use serde::de::{DeserializeOwned, IntoDeserializer, value};

use crate::error::{Error, Result};

/// The wire name of a unit variant, e.g. `Actor::Cli` → `"cli"`.
pub fn name<T: Serialize>(v: &T) -> &'static str {
    serde_variant::to_variant_name(v).expect("vocabulary enums have unit variants only")
}

/// Parses a wire name; `what` names the vocabulary in the error (`presence type`, `actor`).
pub fn parse<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    let de: value::StrDeserializer<'_, value::Error> = s.into_deserializer();
    T::deserialize(de).map_err(|_| Error::UnknownName { what, value: s.chars().take(64).collect() })
}
