//! Denying a request and revoking a buddy between two real Prosody servers: the peer is told
//! (`unsubscribed`, `unsubscribe`) and neither side keeps any trust.

use server_trust_lab::{CAPULET, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{QUIET, WAIT, buddies, requested};

#[test]
fn deny_sends_unsubscribed_and_grants_nothing() {
    let lab = requested();
    lab.capulet.cli(&["deny", MONTAGUE]);
    lab.montague.wait_for("unsubscribed from capulet", WAIT, presence_from(CAPULET, "unsubscribed"));
    lab.montague.wait_state(CAPULET, "absent", WAIT);
    assert_eq!(lab.capulet.state(MONTAGUE), "absent");
    lab.montague.assert_none_for(QUIET, presence_from(CAPULET, "subscribed"), "denied: no subscribed");
    assert!(!lab.capulet.pending_file(MONTAGUE).exists());
}

#[test]
fn revoke_drops_trust_on_both_sides() {
    let lab = buddies();
    lab.montague.cli(&["revoke", CAPULET]);
    lab.capulet.wait_for("unsubscribe from montague", WAIT, presence_from(MONTAGUE, "unsubscribe"));
    lab.capulet.wait_for("unsubscribed from montague", WAIT, presence_from(MONTAGUE, "unsubscribed"));
    lab.montague.wait_state(CAPULET, "absent", WAIT);
    lab.capulet.wait_state(MONTAGUE, "absent", WAIT);
}
