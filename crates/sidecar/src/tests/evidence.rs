//! Evidence at approval time through the hook API (issue 15, item 2): the answer to a new
//! request's `subscribe` names the queries the XMPP server is to send, and their replies
//! posted to `POST /v1/hook/evidence` land in the pending request and its views.

use serde_json::json;

use super::{HOST, PEER, Sidecar, raw, subscribe};
use crate::testkit::{ADMIN_TOKEN, HOOK_TOKEN};

const DISCO: &str = "http://jabber.org/protocol/disco#info";
const VERSION: &str = "jabber:iq:version";

fn disco_reply(admin: &str) -> String {
    format!(
        "<iq type='result' from='{PEER}' to='{HOST}' id='rr-1' xmlns='jabber:client'>\
         <query xmlns='{DISCO}'><identity category='server' type='im'/>\
         <x xmlns='jabber:x:data' type='result'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/network/serverinfo</value></field>\
         <field var='admin-addresses' type='list-multi'><value>{admin}</value></field>\
         </x></query></iq>"
    )
}

fn answer(s: &Sidecar, ns: &str, reply: Option<&str>) -> (u16, serde_json::Value) {
    let body = json!({"host": HOST, "peer": PEER, "ns": ns, "reply": reply});
    s.req("POST", "/v1/hook/evidence", Some(HOOK_TOKEN), Some(&body.to_string()))
}

#[test]
fn a_new_request_names_its_queries_and_their_answers_are_recorded() {
    let s = Sidecar::start("");
    let mut sub = subscribe(PEER, Some("e1"));
    sub["session"] = json!({"auth": "dialback", "cert": null});
    let (st, body) = s.hook(sub);
    assert_eq!(st, 202, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "queries": [{"peer": PEER, "ns": DISCO}, {"peer": PEER, "ns": VERSION}]})
    );
    // A repeat of the request asks nothing again.
    assert_eq!(s.hook(subscribe(PEER, Some("e2"))), (202, json!({"ok": true})));

    assert_eq!(answer(&s, DISCO, Some(&disco_reply("xmpp:admin@capulet.lit"))).0, 202);
    assert_eq!(answer(&s, VERSION, None).0, 202);
    let file = s.store().join(HOST).join("pending").join(format!("{PEER}.toml"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[evidence]") && text.contains("xmpp:admin@capulet.lit"), "{text}");
    let (st, pending) = s.admin("GET", &format!("/v1/hosts/{HOST}/pending"), None);
    assert_eq!(st, 200);
    let ev = &pending[0]["evidence"];
    assert_eq!(ev["auth"], "dialback", "{pending}");
    assert_eq!(ev["contacts"]["admin"], json!(["xmpp:admin@capulet.lit"]), "{pending}");
    assert!(ev["unanswered"]["version"].as_str().unwrap().starts_with("no answer"), "{pending}");
}

#[test]
fn evidence_answers_are_hook_calls_and_refused_like_them() {
    let s = Sidecar::start("");
    let ok = json!({"host": HOST, "peer": PEER, "ns": DISCO, "reply": null}).to_string();
    let path = "/v1/hook/evidence";
    assert_eq!(s.req("POST", path, None, Some(&ok)).0, 401);
    assert_eq!(s.req("POST", path, Some(ADMIN_TOKEN), Some(&ok)).0, 403);
    assert_eq!(s.req("GET", path, Some(HOOK_TOKEN), None).0, 405);
    let other = json!({"host": "other.lit", "peer": PEER, "ns": DISCO, "reply": null}).to_string();
    assert_eq!(s.req("POST", path, Some(HOOK_TOKEN), Some(&other)).0, 404);
    assert_eq!(s.req("POST", path, Some(HOOK_TOKEN), Some("{\"host\": 1}")).0, 400);
    // A reply up to the engine's 64 KiB fits; far more is refused before it is read.
    let big = json!({"host": HOST, "peer": PEER, "ns": DISCO, "reply": "x".repeat(65_537)}).to_string();
    assert_eq!(s.req("POST", path, Some(HOOK_TOKEN), Some(&big)).0, 202);
    let huge = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HOOK_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 90000\r\n\r\n{{"
    );
    let answer = raw(s.addr, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // An answer nobody asked for (no request from the peer) changes nothing.
    assert!(!s.store().join(HOST).join("pending").join(format!("{PEER}.toml")).exists());
    // Session facts that cannot be read cost the request nothing.
    let mut sub = subscribe(PEER, None);
    sub["session"] = json!({"auth": "password", "cert": "not a certificate"});
    assert_eq!(s.hook(sub).0, 202);
    let (_, pending) = s.admin("GET", &format!("/v1/hosts/{HOST}/pending"), None);
    assert_eq!(pending[0]["peer"], PEER);
    assert!(pending[0]["evidence"].get("auth").is_none(), "{pending}");
}
