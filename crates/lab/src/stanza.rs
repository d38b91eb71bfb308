//! What a lab server recorded: one JSON line per stanza it received, routed out, or event it
//! fired (written by `prosody/mod_lab.lua` in the Prosody lab).

use std::fs;
use std::path::Path;

/// One recorded stanza or event.
#[derive(Clone, Debug, PartialEq)]
pub struct Stanza {
    /// Time inside the server (Unix seconds; Prosody's util.time.now()).
    pub t: f64,
    /// Local host whose event this was.
    pub host: String,
    /// "in": an event for a local host (any origin); "out": routed to a remote domain;
    /// "event": a server-trust event fired by the module.
    pub dir: String,
    /// "presence/host", "message/bare", ..., or "route/remote" for dir == "out".
    pub event: String,
    /// "s2sin", "s2sout", "local", "c2s", ... ("" if the event had no origin).
    pub origin_type: String,
    pub origin_from_host: Option<String>,
    /// "presence" / "message" / "iq" ("event" for dir == "event").
    pub name: String,
    pub typ: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    /// Text of `<body/>` (messages only).
    pub body: Option<String>,
    pub xml: String,
}

impl Stanza {
    /// Parses one record; `None` if a required field is missing.
    pub fn from_json(v: &serde_json::Value) -> Option<Stanza> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Some(Stanza {
            t: v.get("t")?.as_f64()?,
            host: s("host")?,
            dir: s("dir").unwrap_or_else(|| "in".into()),
            event: s("event").unwrap_or_default(),
            origin_type: s("origin_type").unwrap_or_default(),
            origin_from_host: s("origin_from_host"),
            name: s("name")?,
            typ: s("type"),
            from: s("from"),
            to: s("to"),
            id: s("id"),
            body: s("body"),
            xml: s("xml").unwrap_or_default(),
        })
    }

    /// `self.typ == Some(typ)`
    pub fn is_type(&self, typ: &str) -> bool {
        self.typ.as_deref() == Some(typ)
    }

    /// True for stanzas that arrived over s2s (origin s2sin or s2sout/bidi).
    pub fn via_s2s(&self) -> bool {
        self.dir == "in" && (self.origin_type == "s2sin" || self.origin_type == "s2sout")
    }

    /// One-line summary for failure dumps (XML cut at 400 bytes).
    pub fn summary(&self) -> String {
        let mut xml = self.xml.clone();
        if xml.len() > 400 {
            let mut cut = 400;
            while !xml.is_char_boundary(cut) {
                cut -= 1;
            }
            xml.truncate(cut);
            xml.push_str("...");
        }
        format!(
            "t={:.3} {} {} [{} origin={}{}] {} type={} from={} to={} id={}{}  {}",
            self.t,
            self.dir,
            self.host,
            self.event,
            self.origin_type,
            self.origin_from_host.as_deref().map(|h| format!("({h})")).unwrap_or_default(),
            self.name,
            self.typ.as_deref().unwrap_or("-"),
            self.from.as_deref().unwrap_or("-"),
            self.to.as_deref().unwrap_or("-"),
            self.id.as_deref().unwrap_or("-"),
            self.body.as_deref().map(|b| format!(" body={b:?}")).unwrap_or_default(),
            xml
        )
    }
}

/// Every complete record of a JSON-lines file so far (the last line may be half written;
/// a missing file is no records yet).
pub fn read_records(path: &Path) -> Vec<Stanza> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Stanza::from_json(&v))
        .collect()
}

/// A presence of `typ` ("available" = no type) from `from`, received over s2s.
pub fn presence_from<'a>(from: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    move |s: &Stanza| {
        s.via_s2s()
            && s.name == "presence"
            && s.from.as_deref() == Some(from)
            && match typ {
                "available" => s.typ.is_none(),
                t => s.is_type(t),
            }
    }
}
