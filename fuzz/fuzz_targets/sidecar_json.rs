//! The sidecar's JSON request bodies (`POST /v1/hook/presence`, `POST /v1/hook/hello`,
//! `PUT /v1/hosts/{host}/peers/{peer}/groups`), parsed and checked by the sidecar's own code
//! (`crates/sidecar/src/bodies.rs`, compiled here as is). Every input goes to all three: no
//! panic; a refusal is one short, printable line that says what is wrong and where; what is
//! accepted agrees with a plain `serde_json::Value` reading of the same bytes, round-trips
//! through JSON, and passes the value checks the handlers run next (host and peer domains,
//! stanza id, presence type, groups) without a panic and with the properties they promise.
#![no_main]
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use server_trust::{Domain, PresenceKind};

#[path = "../../crates/sidecar/src/bodies.rs"]
#[allow(dead_code)]
mod bodies;

use bodies::{GroupsIn, HelloIn, PresenceIn};

/// Longest 400 message the body parser may give: prose, position and at most a clipped
/// quote of the client's text.
const PARSE_MESSAGE: usize = 300;
/// Longest value-check message: a 100-character clip, `{:?}`-escaped, plus prose.
const CHECK_MESSAGE: usize = 1200;

/// A refusal is one printable line.
fn printable(msg: &str) -> bool {
    !msg.chars().any(char::is_control)
}

fn refused_parse(msg: &str) {
    assert!(msg.starts_with("malformed JSON: ") && msg.len() > "malformed JSON: ".len(), "{msg:?}");
    assert!(printable(msg), "control character in {msg:?}");
    assert!(msg.contains(" at line ") && msg.contains(" column "), "no position in {msg:?}");
    assert!(msg.chars().count() <= PARSE_MESSAGE, "{} characters: {msg:?}", msg.chars().count());
}

fn refused_check(msg: &str, prefix: &str) {
    assert!(msg.starts_with(prefix), "{msg:?}");
    assert!(printable(msg), "control character in {msg:?}");
    assert!(msg.chars().count() <= CHECK_MESSAGE, "{} characters: {msg:?}", msg.chars().count());
}

/// What a handler does with a domain from a body: `Domain::new` (via `App::host` or the
/// engine); no panic, and an error message of bounded length.
fn domain(s: &str) {
    if let Err(e) = Domain::new(s) {
        let m = e.to_string();
        assert!(!m.is_empty() && m.chars().count() <= CHECK_MESSAGE, "{m:?}");
    }
}

/// The field `name` (declared `index`-th) of the plain reading, as the derived struct must have
/// seen it. serde's derive also takes a struct as an array of its fields in order.
fn field<'a>(v: &'a Value, name: &str, index: usize) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(index),
        other => panic!("a struct parsed from {other}"),
    }
}

fn opt_str(v: Option<&Value>) -> Option<&str> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => panic!("optional string field parsed from {other}"),
    }
}

fn presence(data: &[u8], plain: Option<&Value>) {
    let p = match bodies::parse::<PresenceIn>(data) {
        Err(msg) => return refused_parse(&msg),
        Ok(p) => p,
    };
    if let Some(v) = plain {
        assert_eq!(field(v, "host", 0).and_then(Value::as_str), Some(p.host.as_str()));
        assert_eq!(field(v, "from", 1).and_then(Value::as_str), Some(p.from.as_str()));
        assert_eq!(field(v, "type", 2).and_then(Value::as_str), Some(p.kind.as_str()));
        assert_eq!(opt_str(field(v, "id", 3)), p.id.as_deref());
    }
    // Round trip.
    let again = serde_json::to_vec(&json!({"host": p.host, "from": p.from, "type": p.kind, "id": p.id})).unwrap();
    let q: PresenceIn = bodies::parse(&again).unwrap();
    assert!((&q.host, &q.from, &q.kind, &q.id) == (&p.host, &p.from, &p.kind, &p.id));
    // The handler's checks, in its order.
    domain(&p.host);
    match p.check_id() {
        Ok(()) => {
            if let Some(id) = &p.id {
                assert!(id.len() <= 1024 && bodies::xml_safe(id));
            }
        }
        Err(msg) => refused_check(&msg, "id: "),
    }
    if p.kind == "error" {
        let _ = bodies::clip(&p.from);
        return;
    }
    match PresenceKind::from_str(&p.kind) {
        Ok(k) => {
            assert_eq!(PresenceKind::from_str(k.as_str()).unwrap(), k, "{:?}", p.kind);
            domain(&p.from);
        }
        Err(e) => refused_check(&e.to_string(), "not a presence type: "),
    }
}

fn hello(data: &[u8], plain: Option<&Value>) {
    let h = match bodies::parse::<HelloIn>(data) {
        Err(msg) => return refused_parse(&msg),
        Ok(h) => h,
    };
    if let Some(v) = plain {
        assert_eq!(field(v, "host", 0).and_then(Value::as_str), Some(h.host.as_str()));
        assert_eq!(opt_str(field(v, "node", 1)), h.node.as_deref());
    }
    let again = serde_json::to_vec(&json!({"host": h.host, "node": h.node})).unwrap();
    let g: HelloIn = bodies::parse(&again).unwrap();
    assert!((&g.host, &g.node) == (&h.host, &h.node));
    domain(&h.host);
    if let Some(n) = &h.node {
        let c = bodies::clip(n);
        assert!(c.chars().count() <= 100 && n.starts_with(&c));
    }
}

fn groups(data: &[u8], plain: Option<&Value>) {
    let g = match bodies::parse::<GroupsIn>(data) {
        Err(msg) => return refused_parse(&msg),
        Ok(g) => g,
    };
    if let Some(v) = plain {
        let seen: Vec<&str> =
            field(v, "groups", 0).and_then(Value::as_array).unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        assert_eq!(seen, g.groups);
    }
    let raw = g.groups.clone();
    let out = match bodies::clean_groups(g.groups) {
        Err(msg) => return refused_check(&msg, "groups: "),
        Ok(out) => out,
    };
    assert!(out.len() <= 64 && out.len() <= raw.len());
    for (i, x) in out.iter().enumerate() {
        assert!(!x.is_empty() && x.len() <= 128 && x.trim() == x, "{x:?}");
        assert!(!x.contains(',') && !x.chars().any(char::is_control), "{x:?}");
        assert!(!out[..i].contains(x), "duplicate {x:?}");
        assert!(raw.iter().any(|r| r.trim() == x), "{x:?} not from the input");
    }
    // Every input group is kept (trimmed) once.
    assert!(raw.iter().all(|r| out.iter().any(|x| x == r.trim())));
    // What the API answers and stores reads back the same: idempotent, and round-trips.
    assert_eq!(bodies::clean_groups(out.clone()).unwrap(), out);
    let again = serde_json::to_vec(&json!({"groups": out})).unwrap();
    let back: GroupsIn = bodies::parse(&again).unwrap();
    assert_eq!(bodies::clean_groups(back.groups).unwrap(), out);
}

fuzz_target!(|data: &[u8]| {
    // The plain reading, to hold the typed one against. serde_json skips the strings of
    // fields a struct ignores without checking them (UTF-8, lone surrogates like "\udafc"),
    // so a struct may take a body the plain reading refuses: then there is nothing to hold
    // it against, and the round trip and the value checks still run.
    let plain: Option<Value> = serde_json::from_slice(data).ok();
    presence(data, plain.as_ref());
    hello(data, plain.as_ref());
    groups(data, plain.as_ref());
});
