//! Reading back a roster.toml exactly as the engine wrote it, without a TOML parser.
//!
//! At 100k peers the `toml` crate took about 470 ms of an engine's 560 ms start. This reader
//! runs only on a sealed file (its checksum line matches the text: nobody edited it), so it
//! needs only the shapes our own writer produces: `[peers."<domain>"]` sections (and their
//! `[[peers."<domain>".outbox]]` items, the stanzas waiting for delivery), one
//! `field = value` per line, single-line strings, booleans and string arrays (one line, or one
//! item per line). Anything else, such as a multi-line note or an unknown field, gives `None`,
//! and the caller parses the file with `toml` as before: same result, or the same error.
//! A property test holds the two readers to the same answer (`store::tests`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IntoDeserializer;
use serde::de::value::Error as ValueError;

use super::records::{RosterEntry, RosterFile, Waiting};
use crate::domain::Domain;

/// The roster in `text` (a sealed roster.toml), or `None` to leave it to the TOML parser.
pub(super) fn parse(text: &str) -> Option<RosterFile> {
    let mut peers = BTreeMap::new();
    let mut current: Option<Section> = None;
    let mut peers_header = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        // `[peers]` alone is how an empty roster is written: once, before any section. A
        // second one is a table defined twice, which the TOML parser refuses: its error to give.
        if line == "[peers]" {
            if current.is_some() || std::mem::replace(&mut peers_header, true) {
                return None;
            }
            continue;
        }
        if line.starts_with('#') {
            // TOML forbids control characters (but tab) in comments too.
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return None;
            }
            continue;
        }
        // A stanza waiting in the current peer's outbox (`[[peers."<d>".outbox]]`, written
        // right after the peer's own fields, its key spelled as in the peer's header).
        if let Some(key) = line.strip_prefix("[[peers.").and_then(|r| r.strip_suffix(".outbox]]")) {
            let section = current.as_mut().filter(|s| s.key == key)?;
            section.finish_waiting()?;
            section.waiting = Some(Item::default());
            continue;
        }
        if let Some(key) = line.strip_prefix("[peers.").and_then(|r| r.strip_suffix(']')) {
            if let Some(done) = current.take() {
                done.insert_into(&mut peers)?;
            }
            let raw = key;
            let key = match key.strip_prefix('"') {
                Some(_) => string(key).and_then(whole)?,
                // A bare key; with a dot it would be a nested table, not a domain.
                None if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                    Cow::Borrowed(key)
                }
                None => return None,
            };
            let peer = Domain::new(&key).ok()?; // as `Domain`'s Deserialize does
            current = Some(Section { peer, key: raw, entry: RosterEntry::new(), seen: 0, waiting: None });
            continue;
        }
        let (name, value) = line.split_once(' ').and_then(|(n, v)| Some((n, v.strip_prefix("= ")?)))?;
        let section = current.as_mut()?;
        if let Some(item) = section.waiting.as_mut() {
            item.set(name, value)?;
            continue;
        }
        let bit = FIELDS.iter().position(|f| *f == name)?;
        if section.seen & (1 << bit) != 0 {
            return None; // a field twice: the TOML parser's error to give
        }
        section.seen |= 1 << bit;
        let e = &mut section.entry;
        // The value as one string, nothing after it.
        let text = || string(value).and_then(whole);
        match name {
            "state" => e.state = named(&text()?)?,
            "groups" => e.groups = array(value, &mut lines)?,
            "note" => e.note = text()?.into_owned(),
            "pre_approved" => {
                e.pre_approved = match value {
                    "true" => true,
                    "false" => false,
                    _ => return None,
                }
            }
            "requested_at" => e.requested_at = Some(text()?.into_owned()),
            "approved_at" => e.approved_at = Some(text()?.into_owned()),
            "updated_at" => e.updated_at = Some(text()?.into_owned()),
            "requested_by" => e.requested_by = Some(named(&text()?)?),
            "approved_by" => e.approved_by = Some(named(&text()?)?),
            "expires_at" => {
                let t = text()?;
                humantime::parse_rfc3339_weak(&t).ok()?; // else the TOML parser's error to give
                e.expires_at = Some(t.into_owned())
            }
            "reminded_at" => e.reminded_at = Some(text()?.into_owned()),
            _ => return None,
        }
    }
    if let Some(done) = current.take() {
        done.insert_into(&mut peers)?;
    }
    Some(RosterFile { peers })
}

/// The fields of a roster entry, as the writer names them (their order is irrelevant).
const FIELDS: [&str; 11] = [
    "state",
    "groups",
    "note",
    "pre_approved",
    "requested_at",
    "requested_by",
    "approved_at",
    "approved_by",
    "updated_at",
    "expires_at",
    "reminded_at",
];

struct Section<'t> {
    peer: Domain,
    /// The key as its header spells it: its outbox headers spell it the same.
    key: &'t str,
    entry: RosterEntry,
    /// Fields met so far, one bit each (by their index in [`FIELDS`]).
    seen: u16,
    /// The outbox item being read, once its header was met.
    waiting: Option<Item>,
}

/// One `[[peers."<d>".outbox]]` item being read: `type`, `since` and an optional `id`.
#[derive(Default)]
struct Item {
    kind: Option<crate::engine::PresenceKind>,
    id: Option<String>,
    since: Option<String>,
}

impl Item {
    fn set(&mut self, name: &str, value: &str) -> Option<()> {
        let text = || string(value).and_then(whole).map(Cow::into_owned);
        let slot = match name {
            "type" => return self.kind.replace(named(&text()?)?).is_none().then_some(()),
            "id" => &mut self.id,
            "since" => &mut self.since,
            _ => return None,
        };
        slot.replace(text()?).is_none().then_some(()) // a field twice: the parser's error
    }
}

impl Section<'_> {
    /// Adds the outbox item being read, if any, once whole.
    fn finish_waiting(&mut self) -> Option<()> {
        if let Some(item) = self.waiting.take() {
            let w = Waiting { kind: item.kind?, id: item.id, since: item.since? };
            self.entry.outbox.get_or_insert_with(Vec::new).push(w);
        }
        Some(())
    }

    fn insert_into(mut self, peers: &mut BTreeMap<Domain, RosterEntry>) -> Option<()> {
        // `state` has no default: without it, the TOML parser reports the missing field.
        if self.seen & 1 == 0 {
            return None;
        }
        self.finish_waiting()?;
        // Two sections for one domain (two spellings of it): the TOML parser's call.
        if peers.insert(self.peer, self.entry).is_some() {
            return None;
        }
        Some(())
    }
}

/// A value parsed from its text the way serde parses it from TOML (enums by name).
fn named<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    T::deserialize(IntoDeserializer::<ValueError>::into_deserializer(s)).ok()
}

/// The value when nothing follows it on the line.
fn whole<'a>((value, rest): (Cow<'a, str>, &str)) -> Option<Cow<'a, str>> {
    rest.is_empty().then_some(value)
}

/// A string array: `[]`, `["a", 'b']` on one line, or `[` then one `"item",` per line and `]`.
fn array<'a>(value: &str, lines: &mut impl Iterator<Item = &'a str>) -> Option<Vec<String>> {
    let mut items = Vec::new();
    if value == "[" {
        for line in lines.by_ref() {
            if line == "]" {
                return Some(items);
            }
            let (item, rest) = string(line.strip_prefix("    ")?)?;
            if rest != "," {
                return None;
            }
            items.push(item.into_owned());
        }
        return None; // no closing bracket
    }
    let mut rest = value.strip_prefix('[')?;
    if rest == "]" {
        return Some(items);
    }
    loop {
        let (item, after) = string(rest)?;
        items.push(item.into_owned());
        match after.strip_prefix(", ") {
            Some(next) => rest = next,
            None => return (after == "]").then_some(items),
        }
    }
}

/// A TOML string that starts `s` and ends on the same line, and what follows it: basic
/// `"…"` (with escapes) or literal `'…'`, each also in its triple-quoted form, which the
/// writer uses for text holding both kinds of quote. A string running onto the next line,
/// or a control character inside (which TOML forbids), gives `None`.
fn string(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let (quote, triple, body) = if let Some(b) = s.strip_prefix("\"\"\"") {
        ('"', true, b)
    } else if let Some(b) = s.strip_prefix("'''") {
        ('\'', true, b)
    } else if let Some(b) = s.strip_prefix('"') {
        ('"', false, b)
    } else {
        ('\'', false, s.strip_prefix('\'')?)
    };
    // The common case, plain ASCII up to the closing quote: one copy.
    if !triple && let Some(end) = body.find([quote, '\\']).filter(|&i| body.as_bytes()[i] == quote as u8) {
        let value = &body[..end];
        if value.bytes().all(|b| b == b'\t' || (b' '..0x7f).contains(&b)) {
            return Some((Cow::Borrowed(value), &body[end + 1..]));
        }
    }
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => {
                if !triple {
                    return Some((Cow::Owned(out), &body[i + 1..]));
                }
                // Up to two quotes may stand just inside the closing three.
                let mut run = 1;
                while chars.next_if(|&(_, n)| n == quote).is_some() {
                    run += 1;
                }
                if run >= 3 {
                    if run > 5 {
                        return None;
                    }
                    out.extend(std::iter::repeat_n(quote, run - 3));
                    return Some((Cow::Owned(out), &body[i + run..]));
                }
                out.extend(std::iter::repeat_n(quote, run));
            }
            '\\' if quote == '"' => {
                let escaped = match chars.next()?.1 {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'e' => '\u{1b}',
                    'u' => hex_char(&mut chars, 4)?,
                    'U' => hex_char(&mut chars, 8)?,
                    _ => return None,
                };
                out.push(escaped);
            }
            c if c.is_control() && c != '\t' => return None,
            c => out.push(c),
        }
    }
    None // runs onto the next line
}

fn hex_char(chars: &mut impl Iterator<Item = (usize, char)>, digits: usize) -> Option<char> {
    let mut n = 0u32;
    for _ in 0..digits {
        n = n * 16 + chars.next()?.1.to_digit(16)?;
    }
    char::from_u32(n)
}
