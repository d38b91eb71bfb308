//! Two ejabberd 23.01 nodes serving verona.lit as one cluster (`join_cluster`, distribution
//! on two loopback addresses, no epmd), ONE sidecar that both nodes' mod_server_trust
//! long-poll, and a real Prosody 0.12 peer over s2s (crates/lab/src/ejabberd.rs,
//! `EjabberdCluster`). ejabberd must be installed (`bash scripts/ejabberd-setup.sh`).
//!
//! What the README's *Cluster* section promises: trust checks are local on every node and
//! follow the admin's CLI on all of them; a node going down leaves the other answering,
//! still following the sidecar and still handing it the requests that reach it.

use std::thread;
use std::time::{Duration, Instant};

use server_trust_lab::ejabberd::{EjabberdCluster, EjabberdOptions, VERONA};
use server_trust_lab::{MONTAGUE, TrustAdmin};

const T: Duration = Duration::from_secs(30);
const PARIS: &str = "paris.lit";
/// Not served by the Prosody peer: its request is routed inside node 2.
const TYBALT: &str = "tybalt.lit";

/// Waits until `is_trusted` inside node `i` answers `want`.
fn wait_trusted(c: &EjabberdCluster, i: usize, peer: &str, want: bool) -> Duration {
    let t0 = Instant::now();
    while c.nodes[i].is_trusted(peer, None) != want {
        assert!(t0.elapsed() < T, "node{}: is_trusted({peer}) stayed {}\n{}", i + 1, !want, c.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

#[test]
fn cli_decisions_reach_both_nodes_and_one_node_down_leaves_the_other_answering() {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.prosody_hosts = vec![PARIS.into()];
    let c = EjabberdCluster::start(o);
    let guard = KeepOnPanic(&c);

    // One cluster of two nodes, as each node sees it.
    for i in 0..2 {
        let members = c.list_cluster(i);
        for n in &c.nodes {
            assert!(members.contains(&n.node), "node{} lists {members:?}, not {}", i + 1, n.node);
        }
    }

    // Two Prosody hosts ask; neither is trusted anywhere before the admin decides.
    let p = c.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    p.admin(PARIS).cli(&["request", VERONA]);
    c.sidecar.wait_pending(MONTAGUE, T);
    c.sidecar.wait_pending(PARIS, T);
    for i in 0..2 {
        assert!(!c.nodes[i].is_trusted(MONTAGUE, None), "node{} trusted before approval", i + 1);
    }

    // Approve with the CLI: trusted on both nodes.
    c.sidecar.cli(&["approve", MONTAGUE]);
    c.sidecar.wait_state(MONTAGUE, "both", T);
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    for i in 0..2 {
        let took = wait_trusted(&c, i, MONTAGUE, true);
        eprintln!("node{}: is_trusted(montague.lit) true {took:?} after the state check", i + 1);
    }

    // Revoke with the CLI: untrusted on both nodes.
    c.sidecar.cli(&["revoke", MONTAGUE]);
    for i in 0..2 {
        wait_trusted(&c, i, MONTAGUE, false);
    }

    // Node 1 goes down: it held the s2s streams and is the node whose API the sidecar calls.
    // Node 2 keeps answering from its own copy and keeps following the sidecar's long poll.
    c.nodes[0].stop();
    assert!(!c.nodes[0].is_running());
    assert!(!c.nodes[1].is_trusted(MONTAGUE, None));
    let status = c.nodes[1].module_status();
    assert_eq!(status.get("sidecar").map(String::as_str), Some("up"), "{status:?}");
    c.sidecar.cli(&["approve", PARIS]);
    wait_trusted(&c, 1, PARIS, true);
    assert!(!c.nodes[1].is_trusted(MONTAGUE, None));
    // A request arriving at node 2 (as if over an s2s stream node 2 holds) still reaches the
    // sidecar through node 2's module: routed inside node 2 like ejabberd_s2s_in does.
    c.nodes[1].eval(&format!(
        "ejabberd_router:route(xmpp:decode(fxml_stream:parse_element(<<\"<presence xmlns='jabber:server' \
         from='{TYBALT}' to='{VERONA}' type='subscribe' id='via-node2'/>\">>)))."
    ));
    let pending = c.sidecar.wait_pending(TYBALT, T);
    assert!(pending.contains("via-node2"), "{pending}");
    assert!(!c.nodes[1].is_trusted(TYBALT, None));
    // The cluster as node 2 sees it now: node 1 is not running.
    let running = c.nodes[1].ctl_ok(&["list_cluster"]);
    assert!(running.contains(&c.nodes[1].node), "{running}");
    drop(guard);
}

/// Keeps the cluster's folder (logs) when the test fails.
struct KeepOnPanic<'a>(&'a EjabberdCluster);

impl Drop for KeepOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.keep_dir();
        }
    }
}
