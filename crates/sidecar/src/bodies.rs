//! The JSON request bodies the HTTP API accepts, and the checks on their values that need
//! nothing but the body: `POST /v1/hook/presence`, `POST /v1/hook/hello`,
//! `POST /v1/hook/evidence` and `PUT /v1/hosts/{host}/peers/{peer}/groups`.
//!
//! Self-contained on purpose (serde and serde_json only, no `crate::` paths):
//! `fuzz/fuzz_targets/sidecar_json.rs` compiles this very file with `#[path]`, so the fuzzer
//! checks the parsing the sidecar runs without building hyper and tokio under the sanitizer.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// At most 100 characters of client input, for error messages.
pub fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A body as JSON of type `T`; the error is the 400 answer's message. serde_json quotes an
/// offending string whole (`invalid type: string "…", expected …`, up to the 16 KiB body), so
/// a long message keeps its head and its tail (what was expected, line and column) and drops
/// the middle, like every other message that quotes client input.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    const HEAD: usize = 120;
    const TAIL: usize = 80;
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let n = msg.chars().count();
        if n <= HEAD + TAIL {
            return format!("malformed JSON: {msg}");
        }
        let head: String = msg.chars().take(HEAD).collect();
        let tail: String = msg.chars().skip(n - TAIL).collect();
        format!("malformed JSON: {head}…{tail}")
    })
}

/// `POST /v1/hook/presence`: a presence stanza the XMPP server received for `host`.
#[derive(Deserialize)]
pub struct PresenceIn {
    pub host: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    /// With a `subscribe`: what the s2s stream it came by told about the peer.
    #[serde(default)]
    pub session: Option<SessionIn>,
}

/// How the XMPP server's s2s stream authenticated the peer (`certificate`, `dane` or
/// `dialback`), and the certificate it presented (PEM), if any: evidence for the admin.
#[derive(Deserialize)]
pub struct SessionIn {
    pub auth: String,
    #[serde(default)]
    pub cert: Option<String>,
}

/// `POST /v1/hook/evidence`: the peer's reply to a query the sidecar named in its answer to
/// a presence (the iq stanza's XML), or null when none came in time.
#[derive(Deserialize)]
pub struct EvidenceIn {
    pub host: String,
    pub peer: String,
    pub ns: String,
    pub reply: Option<String>,
}

impl PresenceIn {
    /// The stanza id is echoed into our stanzas: at most 1024 bytes of XML characters.
    pub fn check_id(&self) -> Result<(), String> {
        match &self.id {
            Some(id) if id.len() > 1024 || !xml_safe(id) => {
                Err("id: at most 1024 bytes of XML characters".to_string())
            }
            _ => Ok(()),
        }
    }
}

/// `POST /v1/hook/hello`: the XMPP server (re)started serving `host`.
#[derive(Deserialize)]
pub struct HelloIn {
    pub host: String,
    #[serde(default)]
    pub node: Option<String>,
}

/// `PUT …/groups`: the peer's roster groups.
#[derive(Deserialize)]
pub struct GroupsIn {
    pub groups: Vec<String>,
}

/// Characters XML 1.0 allows in an attribute (ids are echoed into our stanzas).
pub fn xml_safe(s: &str) -> bool {
    s.chars().all(|c| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}'))
}

/// Trimmed, de-duplicated groups; each non-empty, short, printable, without commas (the CLI
/// takes them comma-separated).
pub fn clean_groups(groups: Vec<String>) -> Result<Vec<String>, String> {
    if groups.len() > 64 {
        return Err("groups: at most 64".to_string());
    }
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        let g = g.trim();
        if g.is_empty() || g.len() > 128 || g.contains(',') || g.chars().any(char::is_control) {
            return Err(format!("groups: {:?}: 1-128 printable characters, no commas", clip(g)));
        }
        if !out.iter().any(|o| o == g) {
            out.push(g.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_cleaned_or_refused() {
        let g = |v: &[&str]| clean_groups(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(g(&[" incidents ", "muc", "incidents"]).unwrap(), ["incidents", "muc"]);
        assert!(g(&[]).unwrap().is_empty());
        for bad in [&[""][..], &["a,b"], &["x\ny"], &[&"x".repeat(129)]] {
            assert!(g(bad).unwrap_err().starts_with("groups: "), "{bad:?}");
        }
    }

    #[test]
    fn long_quotes_in_json_errors_are_cut() {
        let long = format!("{{\"groups\": \"{}\"}}", "x".repeat(16_000));
        let e = parse::<GroupsIn>(long.as_bytes()).err().unwrap();
        assert!(e.chars().count() < 250, "{e}");
        assert!(e.starts_with("malformed JSON: invalid type: string \"xxx"), "{e}");
        assert!(e.ends_with("\", expected a sequence at line 1 column 16013"), "{e}");
        let short = parse::<GroupsIn>(b"{\"groups\": 1}").err().unwrap();
        assert_eq!(
            short,
            "malformed JSON: invalid type: integer `1`, expected a sequence at line 1 column 12"
        );
    }

    #[test]
    fn ids_must_be_xml_characters() {
        assert!(xml_safe("s2s-1 <&>'\"\t"));
        assert!(!xml_safe("a\u{0}b"));
        assert!(!xml_safe("a\u{1b}b"));
        assert!(!xml_safe("\u{FFFF}"));
    }
}
