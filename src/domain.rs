//! Server identities: validated, normalised bare domain JIDs.
//!
//! Only a bare domain (`capulet.lit`) can be a server buddy. `alice@capulet.lit` and
//! `capulet.lit/res` are refused with a reason. Normalisation (IDNA + nameprep, case
//! folding, trailing dot) is delegated to the `jid` crate so we agree with XMPP servers.
//! The normalised form is also a file name in the store, so it must never contain a path
//! separator or be `.`/`..`: the checks below make that impossible by construction.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest domain accepted, in bytes (RFC 7622 §3.2).
pub const MAX_DOMAIN_LEN: usize = 1023;

/// A normalised bare server domain, e.g. `capulet.lit`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses and normalises `input`; errors say why the input is not a server domain.
    ///
    /// ```
    /// # use server_trust::Domain;
    /// assert_eq!(Domain::new("Capulet.LIT.").unwrap().as_str(), "capulet.lit");
    /// assert!(Domain::new("alice@capulet.lit").is_err());
    /// ```
    pub fn new(input: &str) -> Result<Domain> {
        let refuse =
            |reason: &str| Error::InvalidDomain { input: truncate(input), reason: reason.to_string() };
        if input.is_empty() {
            return Err(refuse("empty"));
        }
        if input.len() > MAX_DOMAIN_LEN {
            return Err(refuse("longer than 1023 bytes"));
        }
        if input.contains('@') {
            return Err(refuse("has a localpart: only bare server domains can be buddies"));
        }
        if input.contains('/') {
            return Err(refuse("has a resource: only bare server domains can be buddies"));
        }
        // Already-normal ASCII needs no stringprep pass: the hot path of every lookup.
        if let Some(d) = Self::fast_path(input) {
            return Ok(d);
        }
        let jid = jid::Jid::new(input).map_err(|e| refuse(&e.to_string()))?;
        let domain = jid.domain().as_str();
        Self::check_labels(domain).map_err(refuse)?;
        Ok(Domain(domain.to_string()))
    }

    /// Returns the domain when `s` is already lowercase LDH ASCII with sane labels.
    fn fast_path(s: &str) -> Option<Domain> {
        Self::is_normal(s).then(|| Domain(s.to_string()))
    }

    /// False when normalising `s` can only return `s` itself or fail: ASCII without
    /// uppercase letters or a trailing dot (nameprep only case-folds ASCII). Branch-free, so
    /// a trust lookup that misses can stop here.
    pub fn may_change_when_normalised(s: &str) -> bool {
        let flags = s.bytes().fold(0u8, |acc, b| acc | (b & 0x80) | u8::from(b.wrapping_sub(b'A') < 26));
        flags != 0 || s.ends_with('.')
    }

    /// True when `s` is a server domain already in normal form (lowercase LDH ASCII, sane
    /// labels): `Domain::new(s)` would return it unchanged. Allocates nothing.
    pub fn is_normal(s: &str) -> bool {
        // One pass over the bytes: this runs on every trust lookup that misses.
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 253 {
            return false;
        }
        let (mut label, mut prev) = (0usize, b'.');
        for &c in b {
            match c {
                b'a'..=b'z' | b'0'..=b'9' => label += 1,
                b'-' if label > 0 => label += 1,
                b'.' if label > 0 && prev != b'-' => label = 0,
                _ => return false,
            }
            if label > 63 {
                return false;
            }
            prev = c;
        }
        label > 0 && prev != b'-'
    }

    fn check_labels(s: &str) -> std::result::Result<(), &'static str> {
        if s.is_empty() {
            return Err("empty");
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err("has an empty label");
            }
            if label.len() > 63 {
                return Err("has a label longer than 63 bytes");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("has a label starting or ending with '-'");
            }
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b'\\' || b == b'/') {
            return Err("contains a control character or path separator");
        }
        Ok(())
    }

    /// The normalised domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl FromStr for Domain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Domain::new(s)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Domain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Domain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Domain::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> String {
        Domain::new(s).unwrap_err().to_string()
    }

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(Domain::new("Capulet.LIT").unwrap().as_str(), "capulet.lit");
        assert_eq!(Domain::new("capulet.lit.").unwrap().as_str(), "capulet.lit");
        assert_eq!(Domain::new("CAPULET.lit.").unwrap(), Domain::new("capulet.lit").unwrap());
    }

    #[test]
    fn normalises_internationalised_names() {
        let d = Domain::new("MÜNCHEN.example").unwrap();
        assert_eq!(d.as_str(), "münchen.example");
    }

    #[test]
    fn refuses_user_and_full_jids() {
        assert!(reason("alice@capulet.lit").contains("localpart"));
        assert!(reason("capulet.lit/res").contains("resource"));
        assert!(reason("alice@capulet.lit/res").contains("localpart"));
    }

    #[test]
    fn refuses_path_traversal_and_empty_labels() {
        for bad in ["..", ".", "../etc", "a..b", ".capulet.lit", "a/../../b", "", "a\\b", "a\0b"] {
            assert!(Domain::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn is_normal_agrees_with_new() {
        for s in [
            "capulet.lit",
            "a-b.c0",
            "x",
            "Capulet.lit",
            "capulet.lit.",
            "-a.lit",
            "a-.lit",
            "a..b",
            ".a",
            "münchen.example",
            "a_b.lit",
            "",
        ] {
            let unchanged = Domain::new(s).ok().is_some_and(|d| d.as_str() == s);
            if Domain::is_normal(s) {
                assert!(unchanged, "{s:?}");
            }
            if !Domain::may_change_when_normalised(s) {
                assert!(unchanged || Domain::new(s).is_err(), "{s:?}");
            }
        }
        assert!(Domain::is_normal("capulet.lit") && Domain::is_normal("a-b.c0"));
        assert!(!Domain::is_normal(&format!("{}.lit", "a".repeat(64))));
        assert!(
            Domain::may_change_when_normalised("Capulet.lit") && Domain::may_change_when_normalised("x.lit.")
        );
    }

    #[test]
    fn refuses_oversized() {
        let long = "a".repeat(1024);
        assert!(reason(&long).contains("1023"));
        let label = format!("{}.lit", "a".repeat(64));
        assert!(Domain::new(&label).is_err());
    }

    #[test]
    fn error_truncates_huge_input() {
        let long = "é".repeat(600);
        let msg = reason(&long);
        assert!(msg.len() < 300, "{msg}");
    }
}
