//! The API other Prosody modules use: `is_trusted` with scopes and Metronome's `peer-is-subscribed`.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn is_trusted_scopes_and_peer_is_subscribed() {
    let lab = Lab::server_trust();
    let (m, c) = (&lab.montague, &lab.capulet);

    // Strangers: not subscribed, not trusted; invalid input is simply false.
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false");
    assert_eq!(peer_is_subscribed(c, "not a domain"), "false");
    assert_eq!(is_trusted(c, MONTAGUE, None), "false");
    assert_eq!(
        lua_result(
            c,
            &format!(
                "return require'core.modulemanager'.get_module({}, 'server_trust').is_trusted(nil)",
                lua_str(CAPULET)
            )
        ),
        "false"
    );

    // Buddies via CLI (request on montague, approve on capulet).
    m.cli(&["request", CAPULET]);
    c.wait_for("subscribe from montague", WAIT, presence(MONTAGUE, CAPULET, "subscribe"));
    c.wait_state(MONTAGUE, "none+pending-in", WAIT);
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false", "pending is not trusted");
    c.cli(&["approve", MONTAGUE]);
    c.wait_state(MONTAGUE, "both", WAIT);
    m.wait_state(CAPULET, "both", WAIT);
    c.wait_for("server-trust/added on capulet", WAIT, event("server-trust/added", MONTAGUE));

    assert_eq!(peer_is_subscribed(c, MONTAGUE), "true");
    assert_eq!(peer_is_subscribed(c, STRANGER), "false");
    // Metronome call sites that pass a table.
    assert_eq!(
        lua_result(
            c,
            &format!(
                "return prosody.hosts[{}].events.fire_event('peer-is-subscribed', {{ peer = {} }})",
                lua_str(CAPULET),
                lua_str(MONTAGUE)
            )
        ),
        "true"
    );
    assert_eq!(is_trusted(c, MONTAGUE, None), "true");
    assert_eq!(is_trusted(m, CAPULET, None), "true");
    assert_eq!(is_trusted(c, STRANGER, None), "false");
    // Not normalised by the caller: still recognised.
    assert_eq!(is_trusted(c, "MONTAGUE.LIT", None), "true");

    // Scopes: none yet; the CLI sets one and the running module picks it up.
    assert_eq!(is_trusted(c, MONTAGUE, Some("incidents")), "false");
    c.cli(&["groups", MONTAGUE, "--set", "incidents"]);
    let t0 = Instant::now();
    while is_trusted(c, MONTAGUE, Some("incidents")) != "true" {
        assert!(t0.elapsed() < WAIT, "is_trusted(incidents) never became true\n{}", c.log_tail(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("groups picked up after {:?}", t0.elapsed());
    assert_eq!(is_trusted(c, MONTAGUE, Some("muc-limits")), "false");
    assert_eq!(is_trusted(c, MONTAGUE, None), "true");
    let out = c.shell_ok("server_trust:list()");
    // host, peer, state, trusted, availability, last seen, groups
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{CAPULET}\t{MONTAGUE}\tboth\ttrusted\t"))
            && l.ends_with("\tincidents")),
        "{out}"
    );

    // Revoke by CLI: the running module drops trust and fires server-trust/removed.
    c.cli(&["revoke", MONTAGUE]);
    c.wait_for("server-trust/removed on capulet", WAIT, event("server-trust/removed", MONTAGUE));
    // The entry stays (state none) because it still carries the admin's groups.
    c.wait_state(MONTAGUE, "none", WAIT);
    assert_eq!(peer_is_subscribed(c, MONTAGUE), "false");
    assert_eq!(is_trusted(c, MONTAGUE, Some("incidents")), "false");
}
