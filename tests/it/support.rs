//! Helpers shared by the test modules: engines on temp stores, and the usual steps and waits
//! of the Prosody lab tests.

use std::path::Path;
use std::time::Duration;

use server_trust::{Action, Config, Engine};
use server_trust_lab::{CAPULET, Lab, MONTAGUE, TrustAdmin, presence_from};

/// How long a lab test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for a stanza that must NOT come. Prosody answers in ~0.2 s over an
/// established stream and the module polls every 0.1 s in the lab, so 1.5 s is a wide margin.
pub const QUIET: Duration = Duration::from_millis(1500);

pub fn engine(root: &Path, host: &str, config: Config) -> Engine {
    Engine::open(root, host, config).unwrap()
}

pub fn cfg() -> Config {
    Config { watch: false, ..Config::default() }
}

/// Presence the engine asked to send, as (to, type).
pub fn sent(actions: &[Action]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, kind, .. } => Some((to.to_string(), kind.as_str())),
            _ => None,
        })
        .collect()
}

/// Delivers every Send from `from_host` to `to` and returns what `to` answered.
pub fn deliver(from_host: &str, actions: &[Action], to: &Engine) -> Vec<Action> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Send { to: dest, kind, id } = a
            && dest.as_str() == to.host().as_str()
        {
            out.extend(to.inbound(from_host, *kind, id.as_deref()).unwrap());
        }
    }
    out
}

/// montague asks, capulet's admin is prompted; returns the lab at that point.
pub fn requested() -> Lab {
    let lab = Lab::server_trust();
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    lab.capulet.wait_state(MONTAGUE, "none+pending-in", WAIT);
    lab
}

/// On a running `lab`: montague requests, capulet does not auto-approve, `approve` decides
/// on capulet (the CLI, an installed CLI, ...), and both reach Both.
pub fn handshake(lab: &Lab, approve: impl Fn()) {
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_for("subscribe from montague", WAIT, presence_from(MONTAGUE, "subscribe"));
    lab.capulet.wait_state(MONTAGUE, "none+pending-in", WAIT);
    lab.montague.assert_none_for(
        QUIET,
        presence_from(CAPULET, "subscribed"),
        "capulet must not auto-approve",
    );
    approve();
    lab.montague.wait_for("subscribed from capulet", WAIT, presence_from(CAPULET, "subscribed"));
    lab.montague.wait_state(CAPULET, "both", WAIT);
    lab.capulet.wait_state(MONTAGUE, "both", WAIT);
}

/// Both servers reach Both.
pub fn buddies() -> Lab {
    let lab = requested();
    lab.capulet.cli(&["approve", MONTAGUE]);
    lab.montague.wait_state(CAPULET, "both", WAIT);
    lab.capulet.wait_state(MONTAGUE, "both", WAIT);
    lab
}
