//! Liveness from ejabberd: when ejabberd stops cleanly, its server buddies get `unavailable`
//! (mod_server_trust's `ejabberd_stopping` hook asks the sidecar's engine for its shutdown
//! presences and routes them while s2s still runs), so the "last seen" a Prosody peer shows
//! for it is true. Real ejabberd 23.01 (`verona.lit`), the sidecar and a real Prosody
//! (`montague.lit`) over s2s on loopback. ejabberd must be installed (`bash
//! scripts/ejabberd-setup.sh`); without it the test fails saying so.

use std::thread;
use std::time::{Duration, Instant};

use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA};
use server_trust_lab::{MONTAGUE, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);

/// verona's entry in `server-trust --json list` on montague's store.
fn verona_on_montague(lab: &EjabberdLab) -> serde_json::Value {
    let text = lab.prosody().admin(MONTAGUE).cli_text(&["--json", "list"]);
    let all: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    all.as_array().and_then(|a| a.iter().find(|e| e["peer"] == VERONA).cloned()).unwrap_or_default()
}

fn wait_available(lab: &EjabberdLab, want: bool) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let e = verona_on_montague(lab);
        if e["available"] == want {
            return e;
        }
        assert!(
            t0.elapsed() < T,
            "verona never showed available = {want} on montague: {e}\n{}",
            lab.diagnostics()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_clean_ejabberd_stop_tells_its_buddies_and_prosody_shows_last_seen() {
    let lab = EjabberdLab::start(EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar")));
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MONTAGUE, T);
    lab.sidecar.cli(&["approve", MONTAGUE]);
    lab.sidecar.wait_state(MONTAGUE, "both", T);
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    // verona's available presence came with the approval.
    let before = wait_available(&lab, true);
    let unavailable = |s: &server_trust_lab::Stanza| {
        s.host == MONTAGUE && s.via_s2s() && presence_from(VERONA, "unavailable")(s)
    };
    assert!(!p.received().iter().any(unavailable), "unavailable before the stop");

    // A clean stop (SIGTERM: ejabberd's own shutdown).
    lab.ejabberd.stop();
    p.wait_for("verona's unavailable over s2s", T, unavailable);
    let entry = wait_available(&lab, false);
    // Last seen: at the stop, not before it became available (RFC 3339 UTC, one format).
    let (s0, s1) =
        (before["since"].as_str().unwrap_or_default(), entry["since"].as_str().unwrap_or_default());
    assert!(s1.ends_with('Z') && s1 >= s0, "last seen {s1:?} before available since {s0:?}: {entry}");
    // The engine behind the sidecar noted montague as last seen at verona's stop, for its
    // next start.
    let file =
        std::fs::read_to_string(lab.sidecar.store.join(VERONA).join("presence.toml")).unwrap_or_default();
    assert!(file.contains(MONTAGUE) && file.contains("available = false"), "{file}");
    assert!(
        lab.ejabberd.log_text().contains("stopping: 1 presence(s) to server buddies"),
        "{}",
        lab.diagnostics()
    );
}
