//! Read views of the admin API: the documents `server-trust --json` prints, from the shared
//! `server_trust::admin` module where it has them.

use serde_json::Value;
use server_trust::{Domain, Engine, Result, admin};

fn value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("views serialise")
}

/// `server-trust list --json`: the roster, sorted by peer.
pub fn roster(engine: &Engine) -> Result<Value> {
    admin::roster(engine.store()).map(value)
}

/// `server-trust pending --json`. Unreadable request files are logged, not shown.
pub fn pending(engine: &Engine) -> Value {
    let (reqs, bad) = admin::pending(engine.store());
    for e in bad {
        log::error!("{}: {e}", engine.host());
    }
    value(reqs)
}

/// `server-trust show PEER --json`: entry, pending request and history.
pub fn show(engine: &Engine, peer: &Domain) -> Result<Value> {
    admin::show(engine.store(), peer).map(value)
}

/// `server-trust log --json [--peer P] [--limit N]`: the last `limit` audit records.
pub fn log(engine: &Engine, peer: Option<&Domain>, limit: usize) -> Result<Value> {
    admin::log(engine.store(), peer, limit).map(value)
}

/// `server-trust groups PEER --json`.
pub fn groups(peer: &Domain, groups: &[String]) -> Value {
    value(admin::GroupsView { peer: peer.clone(), groups: groups.to_vec() })
}

/// `GET /v1/hosts/{host}/outbox`: the subscription stanzas that wait for the XMPP server to
/// accept them, per peer (memory only: no disk read).
pub fn outbox(engine: &Engine) -> Value {
    let list: Vec<Value> = engine
        .outbox()
        .iter()
        .map(|(peer, waiting)| serde_json::json!({"peer": peer, "waiting": waiting}))
        .collect();
    serde_json::json!({"host": engine.host(), "outbox": list})
}
