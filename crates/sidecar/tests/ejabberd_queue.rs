//! mod_server_trust's retry queue (the presences waiting for the sidecar) inside a real
//! ejabberd 23.01 (`verona.lit`) with this sidecar and, where a peer must answer, a real
//! Prosody 0.12 over s2s (crates/lab/src/ejabberd.rs). ejabberd must be installed
//! (`bash scripts/ejabberd-setup.sh`); without it every test fails saying so.
//!
//! Floods are routed inside the node with `ejabberd_router:route/1`, the call
//! `ejabberd_s2s_in` makes for a stanza it received (a small helper module compiled into the
//! node, like the benchmark's), so they go through the module's real hook, its worker, HTTP
//! and the sidecar; single requests that matter come over real s2s from Prosody. What the
//! sidecar received is read from what it did: pending requests and states in its store, and
//! its answers to probes (`unsubscribed` with the probe's id, sent through ejabberd's
//! `send_stanza`, which ejabberd logs with its arguments, in order).
//!
//! The promises (README of the module, "Fails closed"): subscription presence waits in a lane
//! probes and availability can never displace; a peer's newer subscription presence replaces
//! what it supersedes, so its flood holds at most a few places; peers are served round-robin,
//! each in its own order; probes and availability beyond `queue_max` are dropped from the
//! busiest peer, counted as `dropped` in `server_trust_status`.
//!
//! The last test checks `mod_server_trust:is_trusted/2` inside the same kind of node against
//! the engine's own reading of a name (`Domain::new`), over every spelling of a buddy's name.

use std::fs;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use server_trust_lab::TrustAdmin;
use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA};

const T: Duration = Duration::from_secs(30);

/// Routes presences from a bare domain to the bare host JID the way ejabberd_s2s_in does.
const HELPER: &str = r#"-module(st_queue).
-export([flood/5, burst/2]).
-include("xmpp.hrl").

%% N presences from Peer, of Types in turn, ids <Prefix>-<I>-z (I = 1000 + i, fixed width).
flood(Host, Peer, Types, Prefix, N) ->
	To = jid:make(Host),
	From = jid:make(Peer),
	L = length(Types),
	lists:foreach(
	  fun(I) ->
		  ejabberd_router:route(#presence{from = From, to = To, type = lists:nth(I rem L + 1, Types),
						  id = id(Prefix, I)})
	  end, lists:seq(0, N - 1)),
	ok.

%% Floods [{Peer, Types, Prefix, N}] one after the other while the module's worker is
%% suspended, so it finds them all in its mailbox (the order a burst arrives in).
burst(Host, Floods) ->
	W = gen_mod:get_module_proc(Host, mod_server_trust_sidecar),
	ok = sys:suspend(W),
	try [ok = flood(Host, P, Ts, Pre, N) || {P, Ts, Pre, N} <- Floods], ok
	after sys:resume(W)
	end.

id(Prefix, I) -> <<Prefix/binary, "-", (integer_to_binary(1000 + I))/binary, "-z">>.
"#;

/// The labs stop and start their sidecar: one at a time (and two cores are enough).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lab(prosody_hosts: &[&str], queue_max: u32) -> EjabberdLab {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.prosody = !prosody_hosts.is_empty();
    o.prosody_hosts = prosody_hosts.iter().map(|h| h.to_string()).collect();
    o.queue_max = queue_max;
    let lab = EjabberdLab::start(o);
    let src = lab.dir.join("st_queue.erl");
    fs::write(&src, HELPER).unwrap();
    lab.ejabberd.load_erl(&src);
    lab
}

/// `flood(Host, Peer, Types, Prefix, N)` inside the node.
fn flood(lab: &EjabberdLab, peer: &str, types: &[&str], prefix: &str, n: usize) {
    let r = lab.ejabberd.eval(&format!(
        "st_queue:flood(<<\"{VERONA}\">>, <<\"{peer}\">>, [{}], <<\"{prefix}\">>, {n}).",
        types.join(",")
    ));
    assert_eq!(r, "ok");
}

fn id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{}-z", 1000 + i)
}

fn num(s: &std::collections::HashMap<String, String>, key: &str) -> i64 {
    s.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {key}= in {s:?}"))
}

fn sidecar_down(lab: &EjabberdLab) {
    lab.sidecar.stop();
    lab.ejabberd.wait_status("module noticed the sidecar is down", T, |s| s["sidecar"] == "down");
}

/// The ids among `ids` the sidecar answered through `send_stanza`, in the order ejabberd
/// logged the calls.
fn answered(lab: &EjabberdLab, ids: &[String]) -> Vec<String> {
    lab.ejabberd
        .log_entries()
        .iter()
        .filter(|l| l.contains("API call send_stanza"))
        .filter_map(|l| ids.iter().find(|id| l.contains(id.as_str())).cloned())
        .collect()
}

fn wait_answered(lab: &EjabberdLab, ids: &[String], n: usize) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let got = answered(lab, ids);
        if got.len() >= n {
            return got;
        }
        assert!(t0.elapsed() < T, "{} of {n} probes answered: {got:?}\n{}", got.len(), lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Peer B asks (over s2s) while the sidecar is down; then peer F floods subscribe and
/// unsubscribe in turn with probes in between, and peer G unsubscribes and subscribes in
/// turn. Before: the queue evicted the oldest item, B's request. Now B's request is kept,
/// F and G hold a place or two each, and only probes are dropped.
#[test]
fn a_peers_subscription_flood_cannot_push_out_another_peers_request_and_keeps_only_its_latest() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const B: &str = "bianca.lit";
    const F: &str = "flood.lit";
    const G: &str = "grumio.lit";
    let lab = lab(&[B], 6);
    let p = lab.prosody();
    sidecar_down(&lab);
    let before = lab.ejabberd.module_status();

    p.inject(&format!("<presence from='{B}' to='{VERONA}' type='subscribe' id='bianca-1'/>"));
    lab.ejabberd.wait_status("bianca's request queued", T, |s| s["queued"] == "1");
    // 40 of each: subscribe, probe, unsubscribe, probe, ... (ends with unsubscribe, probe).
    flood(&lab, F, &["subscribe", "probe", "unsubscribe", "probe"], "f", 160);
    // unsubscribe, subscribe, ... (ends with subscribe).
    flood(&lab, G, &["unsubscribe", "subscribe"], "g", 40);

    // (A presence the worker was trying to send meanwhile comes back to the queue when the
    // connection is refused; wait for that.)
    let s = lab.ejabberd.wait_status("the flood queued", T, |s| s["queued"] == "10");
    // Queued: B's subscribe; F's last unsubscribe (it supersedes every subscribe and
    // unsubscribe before it); G's last unsubscribe and last subscribe (a request after a
    // cancel is a new request: kept behind it); six probes (queue_max), F's last six.
    assert_eq!(num(&s, "queued"), 1 + 1 + 2 + 6, "{s:?}");
    assert_eq!(num(&s, "lost") - num(&before, "lost"), 0, "no subscription presence lost: {s:?}");
    assert_eq!(num(&s, "dropped"), 80 - 6, "F's other probes dropped and counted: {s:?}");
    assert_eq!(num(&s, "superseded"), (80 - 1) + (40 - 2), "{s:?}");
    lab.ejabberd.wait_log("the drop is logged", T, |l| {
        l.contains("[warning]") && l.contains("dropped probe presence from flood.lit")
    });

    let delivered = num(&s, "delivered");
    lab.sidecar.start();
    lab.ejabberd.wait_status("queue drained", T, |s| s["queued"] == "0" && s["sidecar"] == "up");
    let s = lab.ejabberd.module_status();
    assert_eq!(num(&s, "delivered") - delivered, 10, "{s:?}");
    // B's request (real s2s) and G's last one became pending requests; F's did not.
    lab.sidecar.wait_pending(B, T);
    lab.sidecar.wait_pending(G, T);
    assert!(!lab.sidecar.pending_file(F).exists(), "flood.lit's last word was unsubscribe");
    // The probes kept were F's six latest, answered in order.
    let f_probes: Vec<String> = (0..160).filter(|i| i % 2 == 1).map(|i| id("f", i)).collect();
    let got = wait_answered(&lab, &f_probes, 6);
    assert_eq!(got, f_probes[f_probes.len() - 6..].to_vec());
    // Nothing was approved meanwhile.
    assert_ne!(lab.sidecar.state(B), "both");
    assert!(!lab.ejabberd.is_trusted(B, None));
}

/// Two peers flood probes while the sidecar is down (A first, then C). Before: every new one
/// evicted the oldest, so only C's were left and A got no answer at all. Now the busiest peer
/// loses its oldest: each keeps half, and after the outage they are answered in turn, each
/// peer's in its own order.
#[test]
fn two_flooding_peers_share_the_probe_lane_and_are_served_in_turn() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const A: &str = "alpha.lit";
    const C: &str = "gamma.lit";
    let lab = lab(&[], 6);
    sidecar_down(&lab);
    flood(&lab, A, &["probe"], "a", 12);
    flood(&lab, C, &["probe"], "c", 12);
    let s = lab.ejabberd.wait_status("the floods queued", T, |s| s["queued"] == "6");
    assert_eq!(num(&s, "queued"), 6, "{s:?}");
    assert_eq!(num(&s, "dropped"), 24 - 6, "{s:?}");
    assert_eq!(num(&s, "lost"), 0, "{s:?}");

    lab.sidecar.start();
    lab.ejabberd.wait_status("queue drained", T, |s| s["queued"] == "0" && s["sidecar"] == "up");
    let ids: Vec<String> = (0..12).flat_map(|i| [id("a", i), id("c", i)]).collect();
    let got = wait_answered(&lab, &ids, 6);
    let a: Vec<&String> = got.iter().filter(|i| i.starts_with("a-")).collect();
    let c: Vec<&String> = got.iter().filter(|i| i.starts_with("c-")).collect();
    // Each peer's three latest, in order.
    assert_eq!(a, [id("a", 9), id("a", 10), id("a", 11)].iter().collect::<Vec<_>>(), "{got:?}");
    assert_eq!(c, [id("c", 9), id("c", 10), id("c", 11)].iter().collect::<Vec<_>>(), "{got:?}");
    // In turn: never the same peer twice in a row.
    assert!(got.windows(2).all(|w| w[0][..2] != w[1][..2]), "not round-robin: {got:?}");
}

/// While the sidecar is up, a burst of 200 probes from peer A reaches the worker, then one from
/// C: C's is sent within a turn (after the A probe in flight and the one A's turn comes with),
/// not after A's whole burst.
#[test]
fn a_burst_from_one_peer_does_not_hold_up_another_peer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const A: &str = "alpha.lit";
    const C: &str = "gamma.lit";
    let lab = lab(&[], 1000);
    let r = lab.ejabberd.eval(&format!(
        "st_queue:burst(<<\"{VERONA}\">>, [{{<<\"{A}\">>, [probe], <<\"a\">>, 200}}, \
         {{<<\"{C}\">>, [probe], <<\"c\">>, 1}}])."
    ));
    assert_eq!(r, "ok");
    let ids: Vec<String> = (0..200).map(|i| id("a", i)).chain([id("c", 0)]).collect();
    let got = wait_answered(&lab, &ids, 201);
    let at = got.iter().position(|i| *i == id("c", 0)).unwrap();
    let a: Vec<&String> = got.iter().filter(|i| i.starts_with("a-")).collect();
    assert!(a.windows(2).all(|w| w[0] < w[1]), "alpha.lit's probes out of order: {got:?}");
    // In arrival order it would be answered last (position 200).
    assert!(at <= 2, "gamma.lit's probe answered at position {at} of 201: {:?}", &got[..at.min(10)]);
    let s = lab.ejabberd.module_status();
    assert_eq!((num(&s, "lost"), num(&s, "dropped")), (0, 0), "{s:?}");
}

/// The XEP's handshake during an outage: verona asked Prosody's host P; while the sidecar is
/// down P's admin approves, so P sends `subscribed` and its own `subscribe`. Both wait and
/// both arrive: a peer's newer subscription presence never replaces one about the other
/// direction (keeping only "the latest per peer" would lose the approval).
#[test]
fn an_approval_and_the_reciprocal_request_from_one_peer_both_survive_an_outage() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const P: &str = "petruchio.lit";
    let lab = lab(&[P], 6);
    let p = lab.prosody();
    lab.sidecar.cli(&["request", P]);
    let prompt = p.admin(P).pending_file(VERONA);
    let t0 = Instant::now();
    while !prompt.exists() {
        assert!(t0.elapsed() < T, "no pending request at {P}\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(50));
    }
    sidecar_down(&lab);
    p.admin(P).cli(&["approve", VERONA]);
    // (Prosody also sends its presence after approving: three or more wait.)
    lab.ejabberd.wait_status("subscribed and subscribe queued", T, |s| num(s, "queued") >= 2);
    thread::sleep(Duration::from_millis(500));
    lab.sidecar.start();
    lab.sidecar.wait_state(P, "both", T);
    p.admin(P).wait_state(VERONA, "both", T);
    let s = lab.ejabberd.module_status();
    assert_eq!((num(&s, "lost"), num(&s, "superseded")), (0, 0), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// `mod_server_trust:is_trusted/2` against the engine's own reading of a name

/// `Host, Peer` as an Erlang binary pair literal (bytes: no encoding on the way in).
fn erl_pair(host: &str, peer: &str) -> String {
    let bin = |s: &str| format!("<<{}>>", s.bytes().map(|b| b.to_string()).collect::<Vec<_>>().join(","));
    format!("{{{}, {}}}", bin(host), bin(peer))
}

/// Every spelling of two trusted peers (one internationalised) and of strangers: what
/// `is_trusted/2` answers inside ejabberd is what the engine answers (`Domain::new`, then the
/// roster), host spellings included. The fast path (the name as given, then a check that
/// normalising cannot change it) must not lose a spelling the engine accepts.
#[test]
fn is_trusted_inside_ejabberd_agrees_with_the_engine_on_every_spelling() {
    use server_trust::Domain;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab(&[], 1000);
    let trusted = ["paris.lit", "bücher.lit"];
    for peer in trusted {
        let r = lab.sidecar.hook(
            "POST",
            "/v1/hook/presence",
            &format!(r#"{{"host":"{VERONA}","from":"{peer}","type":"subscribe","id":"t-1"}}"#),
        );
        assert_eq!(r.status, 202, "{r:?}");
        lab.sidecar.wait_pending(peer, T);
        lab.sidecar.cli(&["approve", peer]);
    }
    let t0 = Instant::now();
    while lab
        .ejabberd
        .eval(&format!("mod_server_trust:trusted_peers(<<\"{VERONA}\">>)."))
        .matches("<<")
        .count()
        < trusted.len()
    {
        assert!(t0.elapsed() < T, "the approved peers never reached ejabberd\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }

    let peers = [
        // paris.lit
        "paris.lit",
        "PARIS.LIT",
        "Paris.Lit",
        "paris.lit.",
        "PARIS.lit.",
        "paris\u{3002}lit",
        "paris\u{ff0e}lit",
        "paris\u{ff61}lit",
        "\u{ff50}\u{ff41}\u{ff52}\u{ff49}\u{ff53}.lit",
        "paris..lit",
        ".paris.lit",
        "paris.lit..",
        "paris.lit\u{3002}",
        "paris.lit/res",
        "user@paris.lit",
        "paris",
        "pari.lit",
        "paris-lit",
        " paris.lit",
        // bücher.lit
        "bücher.lit",
        "BÜCHER.LIT",
        "Bücher.lit.",
        "xn--bcher-kva.lit",
        "XN--BCHER-KVA.LIT",
        "xn--bcher-kva.lit.",
        "Xn--Bcher-Kva.lit",
        "bu\u{308}cher.lit",
        "bücher\u{3002}lit",
        "xn--bcher-kva\u{3002}lit",
        "xn--bcher-kvb.lit",
        "xn--bcher.lit",
        // strangers
        "stranger.example",
        "Stranger.Example.",
        "a--b.lit",
        "xn--.lit",
        "-paris.lit",
        "",
        "stranger.example\u{ff0e}",
        "sträng\u{e9}r.example",
    ];
    let hosts = [VERONA, "VERONA.LIT", "verona.lit.", "Verona\u{3002}lit"];
    let trusted: Vec<Domain> = trusted.iter().map(|p| Domain::new(p).unwrap()).collect();
    let cases: Vec<(&str, &str)> = hosts.iter().flat_map(|h| peers.iter().map(move |p| (*h, *p))).collect();
    let list = cases.iter().map(|(h, p)| erl_pair(h, p)).collect::<Vec<_>>().join(", ");
    let got = lab.ejabberd.eval(&format!("[mod_server_trust:is_trusted(H, P) || {{H, P}} <- [{list}]]."));
    let got: Vec<bool> = got
        .trim_matches(['[', ']'])
        .split(',')
        .map(|w| match w.trim() {
            "true" => true,
            "false" => false,
            other => panic!("is_trusted answered {other:?}"),
        })
        .collect();
    assert_eq!(got.len(), cases.len());
    let mut wrong = Vec::new();
    for ((host, peer), erl) in cases.iter().zip(&got) {
        let engine = Domain::new(peer).is_ok_and(|d| trusted.contains(&d));
        if *erl != engine {
            wrong.push(format!("is_trusted({host:?}, {peer:?}) = {erl}, the engine says {engine}"));
        }
    }
    assert!(wrong.is_empty(), "{} disagreements:\n{}", wrong.len(), wrong.join("\n"));
}
