//! The first recorded decision wins over HTTP too (issue 14, defect 1): an admin-API approve
//! after a CLI deny is refused with 409 naming the deny, and the deny goes out.

use server_trust::store::Decision;
use server_trust::{Actor, Domain, Store};

use super::{HOST, PEER, SECOND, Sidecar, stanza, subscribe};

#[test]
fn an_api_approve_after_a_cli_deny_is_refused_and_names_it() {
    // The fallback timer is an hour: the deny is taken up through the wakeup fd, or by the
    // approve's own look at the store.
    let s = Sidecar::start("poll_interval = 3600");
    assert_eq!(s.hook(subscribe(PEER, Some("p1"))).0, 202);
    // Exactly what `server-trust deny capulet.lit` does.
    let store = Store::open(&s.store(), &Domain::new(HOST).unwrap()).unwrap();
    server_trust::admin::decide(&store, &Domain::new(PEER).unwrap(), Decision::Deny, Actor::Cli).unwrap();
    let (st, body) = s.admin("POST", &format!("/v1/hosts/{HOST}/peers/{PEER}/approve"), None);
    assert_eq!(st, 409, "{body}");
    let text = body.to_string();
    assert!(text.contains("`deny` by cli at ") && text.contains("first decision stands"), "{text}");
    let sent = s.api.wait_for(1, 5 * SECOND, |c| stanza(c).contains("type='unsubscribed'"));
    assert_eq!(sent.len(), 1, "{:?}", s.api.calls());
    assert!(!s.api.calls().iter().any(|c| stanza(c).contains("type='subscribed'")), "{:?}", s.api.calls());
}
