//! Liveness both ways: a server that stops cleanly tells its buddies (`unavailable`), and the
//! roster says who is available since when, or when each was last seen, in `server-trust
//! list` (another process), its JSON and the shell, also after a restart.

use std::time::{Duration, Instant};

use server_trust_lab::{CAPULET, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{WAIT, buddies};

fn list_line(srv: &server_trust_lab::Server, peer: &str) -> String {
    srv.cli_text(&["list"]).lines().find(|l| l.contains(peer)).unwrap_or_default().to_string()
}

fn wait_line(srv: &server_trust_lab::Server, peer: &str, want: &str) -> String {
    let t0 = Instant::now();
    loop {
        let line = list_line(srv, peer);
        if line.contains(want) {
            return line;
        }
        assert!(t0.elapsed() < WAIT, "{peer} never showed {want:?}: {line}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_clean_stop_tells_buddies_and_the_roster_shows_last_seen() {
    let lab = buddies();
    let (m, c) = (&lab.montague, &lab.capulet);
    // Each heard the other's presence with the handshake.
    wait_line(c, MONTAGUE, "available since ");
    let json: serde_json::Value = serde_json::from_str(&c.cli_text(&["--json", "list"])).unwrap();
    assert_eq!(json[0]["available"], true, "{json}");
    assert!(json[0]["since"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");

    // montague stops cleanly: capulet receives its unavailable and shows when it was last seen.
    m.stop();
    c.wait_for("montague's unavailable", WAIT, |s| presence_from(MONTAGUE, "unavailable")(s));
    let line = wait_line(c, MONTAGUE, "last seen ");
    let shell = c.shell_ok("server_trust:list()");
    assert!(shell.lines().any(|l| l.contains(MONTAGUE) && l.contains("\tlast seen ")), "{shell}\n{line}");
    // montague noted capulet as last seen at its own stop, for its next start.
    let file = std::fs::read_to_string(m.store.join(MONTAGUE).join("presence.toml")).unwrap();
    assert!(file.contains(CAPULET) && file.contains("available = false"), "{file}");
}
