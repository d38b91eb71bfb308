//! The outbox in real Prosody (issue 14, defect 3): a subscription stanza that bounces
//! (`remote-server-not-found`: the peer's server is down) is kept and sent again with backoff,
//! not forgotten.

use std::time::{Duration, Instant};

use server_trust_lab::{CAPULET, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{WAIT, requested};

#[test]
fn prosody_resends_a_bounced_subscribed_once_the_peer_is_back() {
    let lab = requested();
    let (m, c) = (&lab.montague, &lab.capulet);
    // montague's server goes away; capulet's admin approves meanwhile.
    m.stop();
    c.cli(&["approve", MONTAGUE]);
    let audit = c.store.join(CAPULET).join("audit.log");
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        if log.contains("subscribed + subscribe bounced (remote-server-") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "no bounce recorded:\n{log}\n{}", c.log_tail(40));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Kept in the outbox, as `show` says.
    let shown = c.cli_text(&["show", MONTAGUE]);
    assert!(shown.contains("waiting for the XMPP server to accept it: subscribed"), "{shown}");
    // Back: the next try reaches it (backoff at most 30 s), without any admin act.
    let back = Instant::now();
    m.start();
    m.wait_for(
        "subscribed from capulet, resent",
        Duration::from_secs(60),
        presence_from(CAPULET, "subscribed"),
    );
    eprintln!("bounced subscribed delivered {:?} after montague came back", back.elapsed());
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_state(MONTAGUE, "both", WAIT);
}
