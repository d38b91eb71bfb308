//! Evidence at approval time: what the server learns about a peer that asks to become a
//! buddy, so the admin can decide instead of guessing. Kept in the request's pending file
//! (`[evidence]`), shown by the prompt, `show`, `--json`, the HTTP API and the ad-hoc form.
//!
//! Two sources, both handed over by the driver:
//! - the s2s stream that carried the request: how it was authenticated and the peer's
//!   certificate ([`Session`]);
//! - the peer's answers to two queries sent from our host JID when the request arrives
//!   ([`QUERIES`]): disco#info, for its XEP-0157 contact addresses, and XEP-0092 software
//!   version. Parsing is here, so drivers pass the reply's XML as it came.
//!
//! Everything comes from the peer and is shown to admins in chat, terminals and web pages:
//! values are stripped of control and bidi characters, cut short, and capped in number.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// XEP-0030 service discovery: the XEP-0157 form rides in its `query`.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0092 software version.
pub const VERSION: &str = "jabber:iq:version";
/// What the driver asks a new requester, from the host JID, each as
/// `<iq type='get'><query xmlns='NS'/></iq>`.
pub const QUERIES: [&str; 2] = [DISCO_INFO, VERSION];
/// How long a driver waits for an answer before reporting none ([`crate::Engine::answer`]).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest reply parsed (a disco#info with a few forms is a few KB).
const MAX_REPLY: usize = 64 * 1024;
/// Largest certificate parsed.
const MAX_CERT: usize = 16 * 1024;
/// Longest value kept, in characters.
const MAX_VALUE: usize = 200;
/// Addresses kept per kind.
const MAX_ADDRESSES: usize = 5;
/// XEP-0157's registered address kinds (the `<kind>-addresses` fields); others are ignored.
const KINDS: [&str; 7] = ["abuse", "admin", "feedback", "sales", "security", "status", "support"];
/// XEP-0157's FORM_TYPE.
const SERVERINFO: &str = "http://jabber.org/network/serverinfo";
const DATA_FORMS: &str = "jabber:x:data";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// How the s2s stream that carried the request was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// The peer's certificate was verified for its domain (PKIX).
    Certificate,
    /// The certificate was verified through DANE (RFC 7673).
    Dane,
    /// Server dialback only (XEP-0220): the peer controls DNS for the name, nothing more.
    Dialback,
}

impl Auth {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        crate::vocab::name(&self)
    }
}

impl std::str::FromStr for Auth {
    type Err = Error;
    fn from_str(s: &str) -> Result<Auth> {
        crate::vocab::parse("authentication method", s)
    }
}

/// What the driver knows of the stream a request came by, before the engine reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// How it was authenticated.
    pub auth: Auth,
    /// The certificate's issuer (RFC 4514 form), when one was presented and readable.
    pub cert_issuer: Option<String>,
    /// Its `notAfter` (RFC 3339).
    pub cert_expires: Option<String>,
}

impl Session {
    /// Reads the driver's facts: `auth` by name, and `cert` as DER or PEM (issuer and expiry
    /// are taken from it; one that does not parse is kept as missing, not refused).
    pub fn new(auth: &str, cert: Option<&[u8]>) -> Result<Session> {
        let auth = auth.parse()?;
        let (cert_issuer, cert_expires) = match cert.and_then(read_cert) {
            Some((i, e)) => (Some(i), e),
            None => (None, None),
        };
        Ok(Session { auth, cert_issuer, cert_expires })
    }
}

/// The issuer and expiry of a DER or PEM certificate.
fn read_cert(bytes: &[u8]) -> Option<(String, Option<String>)> {
    if bytes.len() > MAX_CERT {
        return None;
    }
    let pem;
    let der = if bytes.starts_with(b"-----BEGIN") {
        pem = x509_parser::pem::parse_x509_pem(bytes).ok()?.1;
        &pem.contents[..]
    } else {
        bytes
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let issuer = clean(&cert.issuer().to_string());
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok();
    let expires =
        not_after.map(|s| crate::store::format_rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s)));
    Some((issuer, expires))
}

/// What is known about a requester, as its pending file keeps it. `None` (absent in the
/// file) means not known: not gathered yet, not answered, or not readable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// How the stream that carried the request was authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// The issuer of the certificate the peer presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issuer: Option<String>,
    /// When that certificate expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires: Option<String>,
    /// XEP-0157 addresses by kind (`admin`, `abuse`, `security`, ...), from the peer's
    /// disco#info; empty when it answered without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<BTreeMap<String, Vec<String>>>,
    /// XEP-0092: name, version and, when told, operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// Queries that got no usable answer (`disco#info`, `version`), and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unanswered: BTreeMap<String, String>,
}

impl Evidence {
    /// Nothing known yet.
    pub fn is_empty(&self) -> bool {
        *self == Evidence::default()
    }

    /// Takes what `session` tells.
    pub fn add_session(&mut self, session: &Session) {
        self.auth = Some(session.auth);
        self.cert_issuer.clone_from(&session.cert_issuer);
        self.cert_expires.clone_from(&session.cert_expires);
    }

    /// Takes the answer to the query `ns` (one of [`QUERIES`]): the reply's XML, or `None`
    /// when none came in time. An error reply, or one that does not parse, is recorded as
    /// unanswered with the reason.
    pub fn add_answer(&mut self, ns: &str, reply: Option<&str>) {
        let short = short_name(ns);
        let outcome = match reply {
            None => Err(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
            Some(xml) => read_reply(ns, xml),
        };
        match outcome {
            Ok(Answer::Contacts(c)) => self.contacts = Some(c),
            Ok(Answer::Software(s)) => self.software = Some(s),
            Err(why) => {
                self.unanswered.insert(short.to_string(), why);
                return;
            }
        }
        self.unanswered.remove(short);
    }

    /// One line per fact for people, missing facts said as missing.
    pub fn lines(&self) -> Vec<String> {
        let missing = |what: &str| {
            self.unanswered
                .get(what)
                .map_or_else(|| "not known yet".to_string(), |why| format!("unknown ({why})"))
        };
        let auth = match self.auth {
            Some(Auth::Certificate) => "a certificate valid for its domain",
            Some(Auth::Dane) => "a certificate verified by DANE",
            Some(Auth::Dialback) => "dialback only (no valid certificate)",
            None => "not known",
        };
        let mut out = vec![format!("authenticated by: {auth}")];
        out.push(match (&self.cert_issuer, &self.cert_expires) {
            (Some(i), Some(e)) => format!("certificate: issued by {i}, expires {e}"),
            (Some(i), None) => format!("certificate: issued by {i}"),
            _ => "certificate: none readable".to_string(),
        });
        out.push(match &self.contacts {
            Some(c) if c.is_empty() => "contacts: none published (XEP-0157)".to_string(),
            Some(c) => {
                let each: Vec<String> = c.iter().map(|(k, v)| format!("{k} {}", v.join(", "))).collect();
                format!("contacts: {}", each.join("; "))
            }
            None => format!("contacts: {}", missing("disco#info")),
        });
        out.push(match &self.software {
            Some(s) => format!("software: {s}"),
            None => format!("software: {}", missing("version")),
        });
        out
    }
}

/// The name the files and lines use for a query: the namespace's last part.
fn short_name(ns: &str) -> &str {
    match ns {
        DISCO_INFO => "disco#info",
        VERSION => "version",
        other => other,
    }
}

enum Answer {
    Contacts(BTreeMap<String, Vec<String>>),
    Software(String),
}

/// Reads an iq reply to the query `ns`.
fn read_reply(ns: &str, xml: &str) -> std::result::Result<Answer, String> {
    if xml.len() > MAX_REPLY {
        return Err(format!("reply over {} KB", MAX_REPLY / 1024));
    }
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("reply is not XML: {e}"))?;
    let iq = doc.root_element();
    if iq.tag_name().name() != "iq" {
        return Err("reply is not an iq".into());
    }
    match iq.attribute("type") {
        Some("result") => {}
        Some("error") => {
            let condition = child(iq, "error", None)
                .and_then(|e| {
                    e.children().find(|c| c.is_element() && c.tag_name().namespace() == Some(STANZAS))
                })
                .map_or("error".to_string(), |c| clean(c.tag_name().name()));
            return Err(format!("error: {condition}"));
        }
        t => return Err(format!("reply of type {}", clean(t.unwrap_or("none")))),
    }
    let query = child(iq, "query", Some(ns)).ok_or("reply without its query")?;
    match ns {
        DISCO_INFO => Ok(Answer::Contacts(contacts(query))),
        VERSION => {
            let text = |name| child(query, name, Some(VERSION)).and_then(|n| n.text()).map(clean);
            let name = text("name").filter(|s| !s.is_empty()).ok_or("no software name")?;
            let version = text("version").unwrap_or_default();
            let os = text("os").filter(|s| !s.is_empty()).map(|o| format!(" on {o}")).unwrap_or_default();
            Ok(Answer::Software(cut(&format!("{name} {version}{os}").replace("  ", " "))))
        }
        _ => Err("not a query the engine sends".into()),
    }
}

/// The XEP-0157 addresses in a disco#info `query`: the serverinfo form's `<kind>-addresses`.
fn contacts(query: roxmltree::Node) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let forms = query.children().filter(|n| n.has_tag_name((DATA_FORMS, "x")));
    let values = |f: roxmltree::Node<'_, '_>| -> Vec<String> {
        f.children()
            .filter(|v| v.has_tag_name((DATA_FORMS, "value")))
            .filter_map(|v| v.text().map(clean))
            .filter(|v| !v.is_empty())
            .collect()
    };
    for form in forms {
        let fields: Vec<_> = form.children().filter(|f| f.has_tag_name((DATA_FORMS, "field"))).collect();
        let is_serverinfo = fields
            .iter()
            .any(|f| f.attribute("var") == Some("FORM_TYPE") && values(*f).iter().any(|v| v == SERVERINFO));
        if !is_serverinfo {
            continue;
        }
        for f in fields {
            let Some(kind) = f.attribute("var").and_then(|v| v.strip_suffix("-addresses")) else { continue };
            if !KINDS.contains(&kind) {
                continue;
            }
            let mut addrs = values(f);
            addrs.truncate(MAX_ADDRESSES);
            if !addrs.is_empty() {
                out.insert(kind.to_string(), addrs);
            }
        }
    }
    out
}

fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &str,
    ns: Option<&str>,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && (ns.is_none() || c.tag_name().namespace() == ns)
    })
}

/// A peer's text made safe to show: no control or bidi-override characters (terminal
/// escapes, fake line breaks, reordered text), whitespace runs as one space, at most
/// [`MAX_VALUE`] characters.
pub fn clean(s: &str) -> String {
    let bidi =
        |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let kept: String =
        s.chars().map(|c| if c.is_control() { ' ' } else { c }).filter(|c| !bidi(*c)).collect();
    cut(&kept.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISCO: &str = "<iq type='result' from='capulet.lit' to='montague.lit' id='a1' xmlns='jabber:server'>\
        <query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im'/>\
        <x xmlns='jabber:x:data' type='result'>\
        <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/network/serverinfo</value></field>\
        <field var='admin-addresses' type='list-multi'><value>xmpp:admin@capulet.lit</value><value>mailto:admin@capulet.lit</value></field>\
        <field var='abuse-addresses'><value>mailto:abuse@capulet.lit</value></field>\
        <field var='evil-addresses'><value>x</value></field>\
        </x></query></iq>";

    #[test]
    fn contacts_from_the_serverinfo_form() {
        let mut e = Evidence::default();
        e.add_answer(DISCO_INFO, Some(DISCO));
        let c = e.contacts.as_ref().unwrap();
        assert_eq!(c["admin"], ["xmpp:admin@capulet.lit", "mailto:admin@capulet.lit"]);
        assert_eq!(c["abuse"], ["mailto:abuse@capulet.lit"]);
        assert!(!c.contains_key("evil"), "only XEP-0157's kinds");
        assert!(
            e.lines()[2].contains("admin xmpp:admin@capulet.lit, mailto:admin@capulet.lit"),
            "{:?}",
            e.lines()
        );
    }

    #[test]
    fn other_forms_and_prefixed_namespaces() {
        // The same form under a prefix is the same form; a form of another type is not.
        let xml = "<iq type='result' xmlns:d='http://jabber.org/protocol/disco#info' xmlns:f='jabber:x:data'>\
            <d:query><f:x><f:field var='FORM_TYPE'><f:value>urn:other</f:value></f:field>\
            <f:field var='admin-addresses'><f:value>xmpp:not-this@x.lit</f:value></f:field></f:x>\
            <f:x><f:field var='FORM_TYPE'><f:value>http://jabber.org/network/serverinfo</f:value></f:field>\
            <f:field var='security-addresses'><f:value>mailto:sec@x.lit</f:value></f:field></f:x></d:query></iq>";
        let mut e = Evidence::default();
        e.add_answer(DISCO_INFO, Some(xml));
        assert_eq!(
            e.contacts.unwrap(),
            BTreeMap::from([("security".into(), vec!["mailto:sec@x.lit".into()])])
        );
    }

    #[test]
    fn no_contacts_is_not_missing() {
        let mut e = Evidence::default();
        let xml = "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
        e.add_answer(DISCO_INFO, Some(xml));
        assert_eq!(e.contacts, Some(BTreeMap::new()));
        assert_eq!(e.lines()[2], "contacts: none published (XEP-0157)");
    }

    #[test]
    fn software_version() {
        let mut e = Evidence::default();
        let xml = "<iq type='result'><query xmlns='jabber:iq:version'><name>Prosody</name>\
            <version>0.12.3</version><os>Linux</os></query></iq>";
        e.add_answer(VERSION, Some(xml));
        assert_eq!(e.software.as_deref(), Some("Prosody 0.12.3 on Linux"));
    }

    #[test]
    fn missing_answers_say_why() {
        let mut e = Evidence::default();
        e.add_answer(VERSION, None);
        let err = "<iq type='error'><error type='cancel'><service-unavailable \
            xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>";
        e.add_answer(DISCO_INFO, Some(err));
        assert_eq!(e.unanswered["version"], "no answer within 10 s");
        assert_eq!(e.unanswered["disco#info"], "error: service-unavailable");
        let lines = e.lines();
        assert_eq!(lines[0], "authenticated by: not known");
        assert_eq!(lines[2], "contacts: unknown (error: service-unavailable)");
        assert_eq!(lines[3], "software: unknown (no answer within 10 s)");
        for bad in ["not xml", "<message/>", "<iq type='result'/>", "<iq type='set'/>"] {
            let mut e = Evidence::default();
            e.add_answer(VERSION, Some(bad));
            assert!(e.software.is_none() && e.unanswered.contains_key("version"), "{bad}");
        }
        // A later good answer replaces the reason.
        e.add_answer(
            VERSION,
            Some("<iq type='result'><query xmlns='jabber:iq:version'><name>x</name></query></iq>"),
        );
        assert!(!e.unanswered.contains_key("version"));
    }

    #[test]
    fn peer_text_is_made_harmless() {
        let xml = format!(
            "<iq type='result'><query xmlns='jabber:iq:version'><name>Evil\u{9b}31m\u{202e}txt\nFake: approved</name>\
             <version>{}</version></query></iq>",
            "9".repeat(1000)
        );
        let mut e = Evidence::default();
        e.add_answer(VERSION, Some(&xml));
        let s = e.software.unwrap();
        assert!(!s.chars().any(|c| c.is_control() || c == '\u{202e}'), "{s:?}");
        // U+009B is an 8-bit CSI: a terminal escape that XML allows.
        assert!(s.starts_with("Evil 31mtxt Fake: approved 999"), "{s:?}");
        assert!(s.chars().count() <= MAX_VALUE + 1);
        let huge = format!(
            "<iq type='result'><query xmlns='jabber:iq:version'><name>{}</name></query></iq>",
            "a".repeat(MAX_REPLY)
        );
        let mut e = Evidence::default();
        e.add_answer(VERSION, Some(&huge));
        assert_eq!(e.unanswered["version"], "reply over 64 KB");
    }

    #[test]
    fn sessions() {
        assert!(Session::new("password", None).is_err());
        let s = Session::new("dialback", Some(b"not a certificate")).unwrap();
        assert_eq!(s, Session { auth: Auth::Dialback, cert_issuer: None, cert_expires: None });
        let mut e = Evidence::default();
        e.add_session(&s);
        assert_eq!(e.lines()[0], "authenticated by: dialback only (no valid certificate)");
        assert_eq!(e.lines()[1], "certificate: none readable");
    }

    #[test]
    fn certificates_pem_and_der() {
        // Self-signed, made with: openssl req -x509 -newkey ec -pkeyopt
        // ec_paramgen_curve:prime256v1 -nodes -subj "/O=Capulet Trust/CN=capulet.lit" -days 1000
        let pem = include_bytes!("evidence_test_cert.pem");
        let s = Session::new("certificate", Some(pem)).unwrap();
        assert_eq!(s.cert_issuer.as_deref(), Some("O=Capulet Trust, CN=capulet.lit"));
        assert_eq!(s.cert_expires.as_deref(), Some("2029-09-03T01:06:32Z"));
        let der = x509_parser::pem::parse_x509_pem(pem).unwrap().1.contents;
        assert_eq!(Session::new("certificate", Some(&der)).unwrap(), s);
        // Cut short, or oversized: kept as missing.
        assert_eq!(Session::new("dane", Some(&der[..der.len() / 2])).unwrap().cert_issuer, None);
        assert_eq!(Session::new("dane", Some(&vec![0x30; MAX_CERT + 1])).unwrap().cert_issuer, None);
    }

    #[test]
    fn the_file_form_round_trips() {
        let mut e = Evidence::default();
        e.add_session(&Session::new("certificate", None).unwrap());
        e.add_answer(DISCO_INFO, Some(DISCO));
        e.add_answer(VERSION, None);
        let text = toml::to_string(&e).unwrap();
        assert_eq!(toml::from_str::<Evidence>(&text).unwrap(), e, "{text}");
    }
}
