//! Server identities: validated, normalised bare domain JIDs.
//!
//! Only a bare domain (`capulet.lit`) can be a server buddy. `alice@capulet.lit` and
//! `capulet.lit/res` are refused with a reason, and so is anything that is not a host name:
//! every label is letters, digits and hyphens (STD3), or an internationalised label valid
//! under IDNA2008/UTS 46 (the `idna` crate, which browsers use). One DNS name is one peer
//! whatever the spelling: case, a trailing dot, ideographic full stops and A-labels all
//! normalise to the U-label form RFC 7622 §3.2 asks for (`xn--bcher-kva.de` → `bücher.de`).
//! [`Domain::ascii`] gives the A-label form, shown beside non-ASCII names so homographs are
//! visible. IP literals are refused: a server buddy is a named server that dialback or a
//! certificate can vouch for. The normalised form is also a file name in the store and a
//! word in shell commands shown to admins, so it never holds a path separator, `.`/`..`,
//! or a shell metacharacter.

use std::borrow::{Borrow, Cow};
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
        // Already-normal ASCII needs no IDNA pass: the hot path of every lookup.
        if let Some(d) = Self::fast_path(input) {
            return Ok(d);
        }
        if input.chars().any(|c| c.is_control() || c == '\\') {
            return Err(refuse("contains a control character or path separator"));
        }
        // One trailing dot is the fully qualified spelling of the same name.
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() || name.split(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}']).any(str::is_empty) {
            return Err(refuse("has an empty label"));
        }
        let ascii = idna::domain_to_ascii_strict(name).map_err(|_| {
            refuse("not a host name: labels are letters, digits and inner hyphens, or valid IDNA2008")
        })?;
        Self::check_labels(&ascii).map_err(refuse)?;
        let (unicode, ok) = idna::domain_to_unicode(&ascii);
        ok.map_err(|_| refuse("has an invalid internationalised label"))?;
        Ok(Domain(unicode))
    }

    /// A peer server's name: [`Domain::new`], and at least two labels. A single label
    /// (`com`, `localhost`) is a top-level domain or a local name, never a server on the
    /// federation; it may still be a served host (Prosody's `VirtualHost "localhost"`).
    ///
    /// ```
    /// # use server_trust::Domain;
    /// assert!(Domain::peer("montague.lit").is_ok());
    /// assert!(Domain::peer("localhost").is_err() && Domain::new("localhost").is_ok());
    /// ```
    pub fn peer(input: &str) -> Result<Domain> {
        let d = Domain::new(input)?;
        if !d.0.contains('.') {
            return Err(Error::InvalidDomain {
                input: truncate(input),
                reason: "a single label (a top-level domain or a local name) is not a peer server".into(),
            });
        }
        Ok(d)
    }

    /// Returns the domain when `s` is already lowercase LDH ASCII with sane labels.
    fn fast_path(s: &str) -> Option<Domain> {
        Self::is_normal(s).then(|| Domain(s.to_string()))
    }

    /// False when normalising `s` can only return `s` itself or fail: ASCII without
    /// uppercase letters, a trailing dot or a `--` (A-labels, `xn--…`, become U-labels).
    /// Cheap, so a trust lookup that misses can stop here: eight bytes per step (a name is
    /// two or three words), where a byte at a time was most of a miss's time.
    pub fn may_change_when_normalised(s: &str) -> bool {
        Self::may_change_when_normalised_bytes(s.as_bytes())
    }

    /// [`Domain::may_change_when_normalised`] for bytes that may not be UTF-8: false only
    /// for ASCII (so UTF-8 too), which lets a trust lookup skip a separate UTF-8 check.
    pub fn may_change_when_normalised_bytes(b: &[u8]) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        if b.len() < 8 {
            return !b.is_ascii()
                || b.iter().any(u8::is_ascii_uppercase)
                || b.windows(2).any(|w| w == b"--")
                || b.last() == Some(&b'.');
        }
        // The high bit of each byte of `w` that is a '-', or None when `w` holds a byte that
        // may change (non-ASCII, an uppercase letter) or a "--".
        fn hyphens(w: u64) -> Option<u64> {
            if w & HIGH != 0 {
                return None; // non-ASCII
            }
            // Every byte is below 0x80 from here, so these sums never carry into the next.
            // A byte in 'A'..='Z': at least 0x41 and below 0x5b.
            if (w + ONES * (0x80 - 0x41)) & !(w + ONES * (0x80 - 0x5b)) & HIGH != 0 {
                return None;
            }
            let x = w ^ (ONES * u64::from(b'-')); // exact: x is zero just where w is '-'
            let hyphens = !((x + ONES * 0x7f) | x) & HIGH;
            (hyphens & (hyphens << 8) == 0).then_some(hyphens)
        }
        let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("eight bytes"));
        // Whole words from the start, carrying whether a word ended in '-'; then the last
        // eight bytes, overlapping the word before (whose check covered the pair across their
        // start). Loads go straight from the slice: copying a short tail into a buffer stalled
        // every miss.
        let mut hyphen_before = false;
        for chunk in b.chunks_exact(8) {
            match hyphens(word(chunk)) {
                Some(h) if !(hyphen_before && h & 0x80 != 0) => hyphen_before = h >> 63 != 0,
                _ => return true,
            }
        }
        (!b.len().is_multiple_of(8) && hyphens(word(&b[b.len() - 8..])).is_none()) || b.last() == Some(&b'.')
    }

    /// True when `s` is a server domain already in normal form (lowercase LDH ASCII, sane
    /// labels, no `??--` label, a top-level label that is not all digits): `Domain::new(s)`
    /// would return it unchanged. Allocates nothing.
    pub fn is_normal(s: &str) -> bool {
        // One pass over the bytes: this runs on every trust lookup that misses.
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 253 {
            return false;
        }
        let (mut label, mut prev, mut digits_only) = (0usize, b'.', true);
        for &c in b {
            match c {
                b'a'..=b'z' => digits_only = false,
                b'0'..=b'9' => {}
                // Hyphens in positions 3 and 4 mark A-labels and reserved labels (RFC 5891).
                b'-' if label > 0 && !(label == 3 && prev == b'-') => {}
                b'.' if label > 0 && prev != b'-' => {
                    (label, prev, digits_only) = (0, c, true);
                    continue;
                }
                _ => return false,
            }
            label += 1;
            if label > 63 {
                return false;
            }
            prev = c;
        }
        label > 0 && prev != b'-' && !digits_only
    }

    /// Checks on the A-label form that IDNA leaves to us.
    fn check_labels(s: &str) -> std::result::Result<(), &'static str> {
        if s.is_empty() {
            return Err("empty");
        }
        if s.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err("is an IP address or ends in a numeric label: buddies are named servers");
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

    /// The normalised domain (U-labels).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The A-label (Punycode) form, as DNS sees it; the same as [`Domain::as_str`] for ASCII.
    pub fn ascii(&self) -> Cow<'_, str> {
        if self.0.is_ascii() {
            Cow::Borrowed(&self.0)
        } else {
            Cow::Owned(idna::domain_to_ascii_strict(&self.0).expect("a Domain is valid IDNA"))
        }
    }

    /// The registrable domain under the ICANN section of the Public Suffix List (ICANN
    /// public suffix + one label), e.g. `attacker.example` for `x1.attacker.example`: the
    /// unit one registrant controls, which the pending caps count by. Private-section
    /// suffixes (`github.io`, `blogspot.com`), where anyone gets a subdomain for free, count
    /// as the registrable domain they are under: `a1.github.io` and `a2.github.io` are both
    /// `github.io`. Suffixes the list does not know are one label (the PSL's `*` rule).
    pub fn site(&self) -> String {
        let ascii = self.ascii();
        icann_site(&ascii).to_string()
    }

    /// The name for people: non-ASCII names carry their A-label, so that `mоntague.lit`
    /// with a Cyrillic `о` reads `mоntague.lit (xn--mntague-3ve.lit)` next to the real one.
    pub fn display_name(&self) -> String {
        match self.ascii() {
            Cow::Borrowed(a) => a.to_string(),
            Cow::Owned(a) => format!("{} ({a})", self.0),
        }
    }
}

/// The ICANN registrable domain of `name` (lowercase A-labels): the longest tail of `name`
/// that the list matches whole as an ICANN (or unlisted, `*`) suffix, plus one label. The
/// psl crate has no ICANN-only lookup, and its longest match may be a private rule, so each
/// tail is asked on its own (a name has a handful of labels).
fn icann_site(name: &str) -> &str {
    let is_icann_suffix = |tail: &str| {
        psl::suffix(tail.as_bytes())
            .is_some_and(|s| s.as_bytes().len() == tail.len() && s.typ() != Some(psl::Type::Private))
    };
    // Tails from the shortest (the top-level label) to the whole name, asked from the
    // whole name down: the first hit is the longest ICANN suffix.
    let mut tails = name.rmatch_indices('.').map(|(i, _)| i + 1).chain(std::iter::once(0));
    match tails.rfind(|&from| is_icann_suffix(&name[from..])) {
        Some(from) if from > 0 => &name[name[..from - 1].rfind('.').map_or(0, |d| d + 1)..],
        _ => name, // the name is a public suffix itself
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

    /// The word-at-a-time check against the plain reading of its contract, byte by byte.
    #[test]
    fn may_change_when_normalised_matches_byte_reading() {
        fn plain(s: &str) -> bool {
            !s.is_ascii() || s.bytes().any(|b| b.is_ascii_uppercase()) || s.contains("--") || s.ends_with('.')
        }
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(20_000), |(s in "[a-zA-Z0-9.@\\[\\]`{-]{0,40}|.{0,12}")| {
            prop_assert_eq!(Domain::may_change_when_normalised(&s), plain(&s), "{:?}", s);
        });
        // Hyphen pairs at and across every word boundary, and bytes next to 'A', 'Z' and '-'.
        let hyphen_pairs = (0..8).map(|gap| format!("-{}-", "x".repeat(gap)));
        let others = ["@", "[", "A", "Z", "`", "{", ",", ".", "\u{80}", "\u{7f}"].map(String::from);
        for middle in hyphen_pairs.chain(others) {
            for (n, m) in (0..20).flat_map(|n| (0..3).map(move |m| (n, m))) {
                let s = format!("{}{middle}{}", "a".repeat(n), "b".repeat(m));
                assert_eq!(Domain::may_change_when_normalised(&s), plain(&s), "{s:?}");
            }
        }
    }

    /// The caps count by the ICANN registrable domain: free subdomains under a private
    /// suffix (`github.io`) are one site, not one each.
    #[test]
    fn the_site_is_the_icann_registrable_domain() {
        let site = |s: &str| Domain::new(s).unwrap().site();
        assert_eq!(site("a1.github.io"), "github.io");
        assert_eq!(site("a2.github.io"), "github.io");
        assert_eq!(site("x.y.a3.github.io"), "github.io");
        assert_eq!(site("github.io"), "github.io");
        assert_eq!(site("foo.blogspot.com"), "blogspot.com");
        assert_eq!(site("x1.attacker.example"), "attacker.example");
        assert_eq!(site("capulet.lit"), "capulet.lit");
        assert_eq!(site("xmpp.capulet.lit"), "capulet.lit");
        assert_eq!(site("jabber.bbc.co.uk"), "bbc.co.uk");
        assert_eq!(site("a.b.münchen.de"), "xn--mnchen-3ya.de");
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

    #[test]
    fn refuses_what_is_not_a_host_name() {
        for bad in [
            "$(id).lit",
            "`id`.lit",
            "a;b.lit",
            "a\"b.lit",
            "*.lit",
            "a&b.lit",
            "{a}.lit",
            "a_b.lit",
            "a b.lit",
            "127.0.0.1",
            "[::1]",
            "10.lit.1",
            "ab--c.lit",
        ] {
            assert!(Domain::new(bad).is_err(), "{bad:?} must be refused");
            assert!(!Domain::is_normal(bad), "{bad:?}");
        }
    }

    #[test]
    fn one_dns_name_is_one_peer_whatever_the_spelling() {
        let d = |s: &str| Domain::new(s).unwrap();
        assert_eq!(d("xn--bcher-kva.de"), d("bücher.de"));
        assert_eq!(d("XN--BCHER-KVA.DE"), d("Bücher.de."));
        assert_eq!(d("capulet\u{3002}lit"), d("capulet.lit"));
        assert_eq!(d("bücher.de").as_str(), "bücher.de");
        assert_eq!(d("bücher.de").ascii(), "xn--bcher-kva.de");
        assert_eq!(d("bücher.de").display_name(), "bücher.de (xn--bcher-kva.de)");
        assert_eq!(d("capulet.lit").display_name(), "capulet.lit");
        // A Cyrillic о is another server, and its listing says so.
        let homograph = d("m\u{43e}ntague.lit");
        assert_ne!(homograph, d("montague.lit"));
        assert!(homograph.display_name().contains("(xn--"), "{}", homograph.display_name());
        for s in ["xn--bcher-kva.de", "Capulet.lit"] {
            assert!(Domain::may_change_when_normalised(s), "{s}");
        }
    }
}
