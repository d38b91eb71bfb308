//! Issue 14, defect 2, with the real parts: ejabberd 23.01 with mod_server_trust and this
//! sidecar (crates/lab/src/ejabberd.rs, no Prosody), while 1,000 clients without a token try
//! to hold the sidecar's connections (src/strangers.rs: keep-alive health checks, slow
//! headers, silence, from 8 addresses, reconnecting every 0.5 s). ejabberd's module must
//! still deliver its hook calls, and an approve and a revoke made through the admin API
//! meanwhile must reach `is_trusted` inside ejabberd through its long-poll. (Before: 256
//! such connections held every slot and each of these was reset.)

#[path = "../src/strangers.rs"]
mod strangers;

use std::time::{Duration, Instant};

use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA};

const T: Duration = Duration::from_secs(30);
const PEER: &str = "rosaline.lit";

/// Hands `<presence type=TYP from=FROM/>` to ejabberd's router, as an s2s stream would.
fn route(lab: &EjabberdLab, from: &str, typ: &str, n: usize) {
    let expr = format!(
        "lists:foreach(fun(I) -> ejabberd_router:route(xmpp:decode(fxml_stream:parse_element(\
         <<\"<presence xmlns='jabber:server' from='{from}' to='{VERONA}' type='{typ}' id='s\", \
         (integer_to_binary(I))/binary, \"'/>\">>))) end, lists:seq(1, {n}))."
    );
    lab.ejabberd.eval(&expr);
}

fn wait_trusted(lab: &EjabberdLab, want: bool) -> Duration {
    let t0 = Instant::now();
    while lab.ejabberd.is_trusted(PEER, None) != want {
        assert!(t0.elapsed() < T, "is_trusted({PEER}) stayed {}\n{}", !want, lab.diagnostics());
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

#[test]
fn ejabberd_is_served_while_a_thousand_strangers_try_to_hold_the_sidecar() {
    assert!(strangers::raise_fd_limit() >= 3000, "needs ~2,500 open files");
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.prosody = false;
    let lab = EjabberdLab::start(o);
    let s = &lab.sidecar;
    let strangers = strangers::Strangers::start(s.addr.parse().unwrap(), 1000, Duration::from_millis(500));
    std::thread::sleep(Duration::from_secs(2));
    let before = lab.ejabberd.module_status();
    let delivered0: usize = before["delivered"].parse().unwrap();

    // A peer's subscribe through ejabberd's hook: a pending request.
    route(&lab, PEER, "subscribe", 1);
    s.wait_pending(PEER, T);
    // Presence traffic through the hook: all of it delivered (202), none lost.
    route(&lab, "traffic.lit", "available", 200);
    lab.ejabberd.wait_status("201 more presences delivered", T, |st| {
        st["delivered"].parse::<usize>().unwrap_or(0) >= delivered0 + 201
    });
    // The admin API, and the trusted set's long-poll into ejabberd.
    let path = format!("/v1/hosts/{VERONA}/peers/{PEER}");
    let r = s.admin_api("POST", &format!("{path}/approve"), "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    let approved_in = wait_trusted(&lab, true);
    let r = s.admin_api("POST", &format!("{path}/revoke"), "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked_in = wait_trusted(&lab, false);

    let open = strangers.open();
    let stats = strangers.stop();
    let after = lab.ejabberd.module_status();
    assert_eq!(after["lost"], before["lost"], "hook calls lost: {after:?}");
    assert!(stats.connects >= 1000 && stats.closed > 500, "{stats:?}");
    eprintln!(
        "approve reached is_trusted in {approved_in:?}, revoke in {revoked_in:?}; strangers: {stats:?}, \
         {open} open at the end"
    );
}
