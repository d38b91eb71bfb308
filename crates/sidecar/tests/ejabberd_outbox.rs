//! The outbox with real parts (issue 14, defect 3): ejabberd 23.01 with mod_server_trust and
//! this sidecar (`verona.lit`), Prosody 0.12 (`montague.lit`) over real s2s on loopback. An
//! approval made while ejabberd is down for longer than the presence lane's 30 s reaches the
//! peer once ejabberd is back; before the outbox it was logged as lost, and the hello after
//! the restart sent presence and probes, not the lost `subscribed`.

use std::time::{Duration, Instant};

use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA};
use server_trust_lab::{MONTAGUE, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);

#[test]
fn an_approval_made_while_ejabberd_is_down_reaches_the_peer_once_it_is_back() {
    let lab = EjabberdLab::start(EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar")));
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MONTAGUE, T);
    lab.ejabberd.stop();
    lab.sidecar.cli(&["approve", MONTAGUE]);
    // Recorded at once (the sidecar's poll), waiting in the outbox.
    let t0 = Instant::now();
    loop {
        let shown = String::from_utf8_lossy(&lab.sidecar.cli(&["show", MONTAGUE]).stdout).into_owned();
        if shown.contains("waiting for the XMPP server to accept it: subscribed") {
            break;
        }
        assert!(t0.elapsed() < T, "the approval's subscribed is not in the outbox:\n{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Longer than the presence lane ever retried a call.
    std::thread::sleep(Duration::from_secs(35));
    let back = Instant::now();
    lab.ejabberd.start();
    let from_verona = presence_from(VERONA, "subscribed");
    p.wait_for("verona's subscribed after ejabberd came back", Duration::from_secs(60), |s| {
        s.host == MONTAGUE && from_verona(s)
    });
    eprintln!("subscribed reached Prosody {:?} after ejabberd was started again", back.elapsed());
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    lab.sidecar.wait_state(MONTAGUE, "both", T);
    let shown = String::from_utf8_lossy(&lab.sidecar.cli(&["show", MONTAGUE]).stdout).into_owned();
    assert!(!shown.contains("waiting for the XMPP server"), "{shown}");
}
