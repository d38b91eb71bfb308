//! Trust for a time over the admin API (issue 15 item 3): `approve?for=90d`, the end in the
//! roster, `renew`, and the end withdrawing trust as a revoke does (`unsubscribed` through
//! ejabberd's API); bad input is refused and approves nothing.

use serde_json::json;

use super::{HOST, PEER, SECOND, Sidecar, stanza, subscribe};

#[test]
fn approve_for_a_time_renew_and_the_end_over_http() {
    let s = Sidecar::start("");
    assert_eq!(s.hook(subscribe(PEER, Some("p1"))).0, 202);
    let peer = format!("/v1/hosts/{HOST}/peers/{PEER}");
    // A time that is not one, or on another act, is refused; nothing is approved.
    let (st, body) = s.admin("POST", &format!("{peer}/approve?for=ninety"), None);
    assert_eq!(st, 400, "{body}");
    let (st, body) = s.admin("POST", &format!("{peer}/deny?for=90d"), None);
    assert_eq!(st, 400, "{body}");
    assert!(!s.api.calls().iter().any(|c| stanza(c).contains("type='subscribed'")), "{:?}", s.api.calls());

    let (st, body) = s.admin("POST", &format!("{peer}/approve?for=90d"), None);
    assert_eq!(st, 200, "{body}");
    s.api.wait_for(1, 5 * SECOND, |c| stanza(c).contains("type='subscribed'"));
    let (st, roster) = s.admin("GET", &format!("/v1/hosts/{HOST}/roster"), None);
    assert_eq!(st, 200, "{roster}");
    let end = roster[0]["expires_at"].as_str().unwrap_or_else(|| panic!("no end: {roster}"));
    // RFC 3339 times of one format compare as strings.
    let at = |days: u64| {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(days * 86_400);
        server_trust::store::format_rfc3339(t)
    };
    assert!(end > at(89).as_str() && end <= at(91).as_str(), "{end}");

    // renew: exactly one of for, until, forever.
    for bad in [json!({}), json!({"for": "90d", "forever": true}), json!({"until": "soon"}), json!({"x": 1})]
    {
        let (st, body) = s.admin("POST", &format!("{peer}/renew"), Some(&bad.to_string()));
        assert_eq!(st, 400, "{bad}: {body}");
    }
    let (st, body) = s.admin("POST", &format!("{peer}/renew"), Some(&json!({"forever": true}).to_string()));
    assert_eq!((st, body["expires_at"].clone()), (200, serde_json::Value::Null), "{body}");
    let (st, body) = s.admin(
        "POST",
        &format!("/v1/hosts/{HOST}/peers/montague.lit/renew"),
        Some(&json!({"for": "30d"}).to_string()),
    );
    assert_eq!(st, 400, "not a buddy: {body}");

    // An end already past: the sidecar's next poll withdraws trust as a revoke does.
    let until = json!({"until": "2026-01-01T00:00:00Z"}).to_string();
    let (st, body) = s.admin("POST", &format!("{peer}/renew"), Some(&until));
    assert_eq!((st, body["expires_at"].as_str()), (200, Some("2026-01-01T00:00:00Z")), "{body}");
    s.api.wait_for(1, 5 * SECOND, |c| stanza(c).contains("type='unsubscribed'"));
    let t0 = std::time::Instant::now();
    loop {
        let (_, v) = s.admin("GET", &format!("/v1/hosts/{HOST}/roster"), None);
        if v.as_array().unwrap().iter().all(|e| e["trusted"] == false) {
            break;
        }
        assert!(t0.elapsed() < 5 * SECOND, "still trusted: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, log) = s.admin("GET", &format!("/v1/hosts/{HOST}/log?peer={PEER}"), None);
    let ended = log.as_array().unwrap().iter().any(|r| {
        r["actor"] == "engine" && r["event"].as_str().is_some_and(|e| e.starts_with("trust expired"))
    });
    assert!(ended, "{log}");
}
