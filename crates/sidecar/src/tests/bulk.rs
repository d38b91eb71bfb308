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

/// The new engine options in the sidecar's TOML, checked by the engine like the others.
#[test]
fn the_pending_cap_options_are_read_from_the_host_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::testkit::write_setup(dir.path(), "127.0.0.1:0", "http://127.0.0.1:1/api", &[HOST], "");
    let text = std::fs::read_to_string(&path).unwrap();
    let with = |extra: &str| {
        std::fs::write(&path, format!("{text}{extra}\n")).unwrap();
        crate::config::Config::load(&path)
    };
    let c = with("site_requests_per_minute = 3\npending_expiry_days = 7").unwrap();
    assert_eq!(c.hosts[0].engine.site_requests_per_minute, 3);
    assert_eq!(c.hosts[0].engine.pending_max_age, std::time::Duration::from_secs(7 * 86_400));
    for bad in ["site_requests_per_minute = 0", "pending_expiry_days = 0.5", "pending_expiry_days = -1"] {
        let e = with(bad).unwrap_err();
        assert!(e.contains(bad.split(' ').next().unwrap()), "{bad}: {e}");
    }
}
