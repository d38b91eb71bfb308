//! The admin API's bulk deny and drop count (issue 14, defect 4).

use serde_json::json;

use super::{HOST, SECOND, Sidecar, stanza, subscribe};

#[test]
fn the_admin_api_denies_a_site_in_bulk_and_the_server_answers() {
    let s = Sidecar::start("");
    for i in 0..12 {
        assert_eq!(s.hook(subscribe(&format!("a{i}.github.io"), None)).0, 202);
    }
    assert_eq!(s.hook(subscribe("montague.lit", None)).0, 202);
    // Ten from github.io (its site's cap), then drops: the first is counted at once.
    let (st, d) = s.admin("GET", &format!("/v1/hosts/{HOST}/dropped"), None);
    assert_eq!((st, d["dropped"].clone()), (200, json!(1)), "{d}");

    let (st, done) =
        s.admin("POST", &format!("/v1/hosts/{HOST}/pending/deny"), Some(r#"{"site": "github.io"}"#));
    assert_eq!(st, 200, "{done}");
    let peers: Vec<String> = (0..10).map(|i| format!("a{i}.github.io")).collect();
    let mut got: Vec<String> =
        done["peers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = peers.clone();
    want.sort();
    assert_eq!(got, want, "{done}");
    // The sidecar's engine picks the decisions up and answers each with `unsubscribed`.
    let sent =
        s.api.wait_for(10, 10 * SECOND, |c| c.command == "send_stanza" && stanza(c).contains("unsubscribed"));
    assert_eq!(sent.len(), 10, "{:?}", s.api.calls());
    let (_, pending) = s.admin("GET", &format!("/v1/hosts/{HOST}/pending"), None);
    assert_eq!(pending.as_array().unwrap().len(), 1, "montague.lit left: {pending}");

    // An empty selection is refused, never "all".
    let (st, _) = s.admin("POST", &format!("/v1/hosts/{HOST}/pending/deny"), Some("{}"));
    assert_eq!(st, 400);
    let (st, _) =
        s.admin("POST", &format!("/v1/hosts/{HOST}/pending/deny"), Some(r#"{"site": "x", "bogus": 1}"#));
    assert_eq!(st, 400);
}
