//! End to end with real parts: ejabberd 23.01 (`verona.lit`) with mod_server_trust, this
//! sidecar, and Prosody 0.12 (`montague.lit` and more hosts, with mod_server_trust), over real
//! s2s on loopback (crates/lab/src/ejabberd.rs). ejabberd must be installed
//! (`bash scripts/ejabberd-setup.sh`); without it every test fails saying so.
//!
//! The Prosody side is checked on what it recorded (mod_lab); the ejabberd side on the
//! sidecar's store and audit log, ejabberd's own log (mod_http_api logs every call) and
//! `mod_server_trust:is_trusted` inside the node. Tests that restart parts or fill the
//! pending cap get their own lab; the others share one, each with its own peer domain.

use std::fs;
use std::ops::Deref;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use server_trust_lab::ejabberd::{EjabberdLab, EjabberdOptions, VERONA, http_request};
use server_trust_lab::{MONTAGUE, Stanza, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);

// Peers of the shared lab, one per test.
const ROSALINE: &str = "rosaline.lit"; // ejabberd's admin asks
const TYBALT: &str = "tybalt.lit"; // approved by editing the file
const MERCUTIO: &str = "mercutio.lit"; // denied
const BENVOLIO: &str = "benvolio.lit"; // revoked by ejabberd's admin
const BALTHASAR: &str = "balthasar.lit"; // revoked by Prosody's admin
const FRIAR: &str = "friar.lit"; // a user JID there asks
const PARIS: &str = "paris.lit"; // is_trusted inside ejabberd

fn options() -> EjabberdOptions {
    EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"))
}

/// One lab for the tests that can share it; it stops when the last test using it ends (and
/// starts again if a later test needs it).
struct Lease(Arc<EjabberdLab>);

impl Deref for Lease {
    type Target = EjabberdLab;
    fn deref(&self) -> &EjabberdLab {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.keep_dir();
        }
    }
}

fn shared_lab() -> Lease {
    static SHARED: Mutex<Weak<EjabberdLab>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lab) = slot.upgrade() {
        return Lease(lab);
    }
    let mut o = options();
    o.prosody_hosts =
        [ROSALINE, TYBALT, MERCUTIO, BENVOLIO, BALTHASAR, FRIAR, PARIS].map(String::from).to_vec();
    let lab = Arc::new(EjabberdLab::start(o));
    *slot = Arc::downgrade(&lab);
    Lease(lab)
}

/// A presence `typ` from verona.lit that `host` received over s2s.
fn from_verona<'a>(host: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    let p = presence_from(VERONA, typ);
    move |s: &Stanza| s.host == host && p(s)
}

fn count(lab: &EjabberdLab, pred: impl Fn(&Stanza) -> bool) -> usize {
    lab.prosody().received().iter().filter(|s| pred(s)).count()
}

/// `peer` (a Prosody host) asks verona.lit, ejabberd's admin approves with the CLI, and both
/// sides reach `both`.
fn befriend(lab: &EjabberdLab, peer: &str) {
    let p = lab.prosody();
    p.admin(peer).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(peer, T);
    lab.sidecar.cli(&["approve", peer]);
    lab.sidecar.wait_state(peer, "both", T);
    p.admin(peer).wait_state(VERONA, "both", T);
}

/// Waits until `is_trusted` inside ejabberd answers `want` (the module's ETS copy follows the
/// sidecar through its long poll).
fn wait_trusted(lab: &EjabberdLab, peer: &str, scope: Option<&str>, want: bool) {
    let t0 = std::time::Instant::now();
    while lab.ejabberd.is_trusted(peer, scope) != want {
        assert!(t0.elapsed() < T, "is_trusted({peer}, {scope:?}) stayed {}\n{}", !want, lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `admin`'s server has no subscription with `peer` either way (state `none`, or
/// no entry at all).
fn wait_untrusted(admin: &impl TrustAdmin, peer: &str) {
    let t0 = std::time::Instant::now();
    loop {
        let st = admin.state(peer);
        if st == "none" || st == "absent" {
            return;
        }
        assert!(t0.elapsed() < T, "{}: {peer} stayed {st}\n{}", admin.trust_host(), admin.diagnostics());
        thread::sleep(Duration::from_millis(50));
    }
}

fn audit(lab: &EjabberdLab) -> String {
    fs::read_to_string(lab.sidecar.audit_log()).unwrap_or_default()
}

// (a)
#[test]
fn a_prosody_request_waits_for_the_ejabberd_admin_then_both_sides_are_buddies() {
    let lab = shared_lab();
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);

    let pending = lab.sidecar.wait_pending(MONTAGUE, T);
    assert!(pending.contains("decision = \"pending\""), "{pending}");
    // The sidecar told verona's admins through mod_http_api send_message (ejabberd logs
    // every API call it accepted, with its arguments).
    lab.ejabberd.wait_log("send_message to admin@verona.lit about montague.lit", T, |l| {
        l.contains("API call send_message") && l.contains("admin@verona.lit") && l.contains(MONTAGUE)
    });
    // Nothing answered before the decision.
    assert_eq!(count(&lab, from_verona(MONTAGUE, "subscribed")), 0, "{}", p.dump(&p.received()));
    assert_ne!(lab.sidecar.state(MONTAGUE), "both");
    assert!(!lab.ejabberd.is_trusted(MONTAGUE, None));

    lab.sidecar.cli(&["approve", MONTAGUE]);
    p.wait_for("subscribed from verona.lit", T, from_verona(MONTAGUE, "subscribed"));
    p.wait_for("reciprocal subscribe from verona.lit", T, from_verona(MONTAGUE, "subscribe"));
    lab.sidecar.wait_state(MONTAGUE, "both", T);
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    // No second prompt on either side: Prosody answered the reciprocal request by itself
    // (its own request pre-approved it), and its `subscribed` opened nothing at verona.
    assert!(!lab.sidecar.pending_file(MONTAGUE).exists());
    assert!(!p.admin(MONTAGUE).pending_file(VERONA).exists());
    wait_trusted(&lab, MONTAGUE, None, true);
}

// (b)
#[test]
fn b_ejabberd_request_waits_for_the_prosody_admin_then_both_sides_are_buddies() {
    let lab = shared_lab();
    let p = lab.prosody();
    lab.sidecar.cli(&["request", ROSALINE]);

    p.wait_for("subscribe from verona.lit", T, from_verona(ROSALINE, "subscribe"));
    let prompt = p.admin(ROSALINE).pending_file(VERONA);
    let t0 = std::time::Instant::now();
    while !prompt.exists() {
        assert!(t0.elapsed() < T, "no pending request at rosaline.lit\n{}", p.dump(&p.received()));
        thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(lab.sidecar.state(ROSALINE), "both");

    p.admin(ROSALINE).cli(&["approve", VERONA]);
    lab.sidecar.wait_state(ROSALINE, "both", T);
    p.admin(ROSALINE).wait_state(VERONA, "both", T);
    // verona answered Prosody's reciprocal subscribe without asking its admin.
    p.wait_for("subscribed from verona.lit", T, from_verona(ROSALINE, "subscribed"));
    assert!(!lab.sidecar.pending_file(ROSALINE).exists());
    wait_trusted(&lab, ROSALINE, None, true);
}

// (c)
#[test]
fn c_approving_by_editing_the_pending_file_on_the_ejabberd_side() {
    let lab = shared_lab();
    let p = lab.prosody();
    p.admin(TYBALT).cli(&["request", VERONA]);
    let text = lab.sidecar.wait_pending(TYBALT, T);
    assert!(text.contains("decision = \"pending\""), "{text}");
    assert_eq!(count(&lab, from_verona(TYBALT, "subscribed")), 0);

    // What an admin does in an editor: change the decision, save (write a new file, rename).
    let file = lab.sidecar.pending_file(TYBALT);
    let edited = file.with_extension("toml.edit");
    fs::write(&edited, text.replace("decision = \"pending\"", "decision = \"approve\"")).unwrap();
    fs::rename(&edited, &file).unwrap();

    p.wait_for("subscribed from verona.lit", T, from_verona(TYBALT, "subscribed"));
    lab.sidecar.wait_state(TYBALT, "both", T);
    p.admin(TYBALT).wait_state(VERONA, "both", T);
    assert!(!file.exists(), "the decided request file is removed");
    let log = audit(&lab);
    assert!(
        log.lines().any(|l| l.contains(TYBALT) && l.contains("\"file\"")),
        "the audit log names the file as the actor:\n{log}"
    );
}

// (d)
#[test]
fn d_a_denied_request_gets_unsubscribed_and_no_trust() {
    let lab = shared_lab();
    let p = lab.prosody();
    p.admin(MERCUTIO).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MERCUTIO, T);

    lab.sidecar.cli(&["deny", MERCUTIO]);
    p.wait_for("unsubscribed from verona.lit", T, from_verona(MERCUTIO, "unsubscribed"));
    assert!(!lab.sidecar.pending_file(MERCUTIO).exists());
    assert_ne!(lab.sidecar.state(MERCUTIO), "both");
    assert_ne!(p.admin(MERCUTIO).state(VERONA), "both");
    assert_eq!(count(&lab, from_verona(MERCUTIO, "subscribed")), 0, "a denied peer never gets `subscribed`");
    assert!(!lab.ejabberd.is_trusted(MERCUTIO, None));
}

// (e)
#[test]
fn e_revoking_from_either_side_ends_trust_on_both() {
    let lab = shared_lab();
    let p = lab.prosody();
    befriend(&lab, BENVOLIO);
    befriend(&lab, BALTHASAR);
    wait_trusted(&lab, BENVOLIO, None, true);
    wait_trusted(&lab, BALTHASAR, None, true);

    // ejabberd's admin revokes benvolio.lit.
    lab.sidecar.cli(&["revoke", BENVOLIO]);
    p.wait_for("unsubscribe from verona.lit", T, from_verona(BENVOLIO, "unsubscribe"));
    p.wait_for("unsubscribed from verona.lit", T, from_verona(BENVOLIO, "unsubscribed"));
    wait_untrusted(&p.admin(BENVOLIO), VERONA);
    wait_trusted(&lab, BENVOLIO, None, false);
    wait_untrusted(&lab.sidecar, BENVOLIO);

    // Prosody's admin revokes verona.lit at balthasar.lit.
    p.admin(BALTHASAR).cli(&["revoke", VERONA]);
    wait_untrusted(&lab.sidecar, BALTHASAR);
    assert!(!["both", "from", "to"].contains(&p.admin(BALTHASAR).state(VERONA).as_str()));
    wait_trusted(&lab, BALTHASAR, None, false);
    assert!(!lab.sidecar.pending_file(BALTHASAR).exists(), "a revocation is no request");
}

// (f)
#[test]
fn f_a_user_jid_subscribing_to_the_ejabberd_host_gains_nothing() {
    let lab = shared_lab();
    let p = lab.prosody();
    p.inject("<presence from='laurence@friar.lit' to='verona.lit' type='subscribe' id='f-user'/>");
    p.inject("<presence from='friar.lit/cell' to='verona.lit' type='subscribe' id='f-full'/>");
    // Then, on the same s2s stream, a bare-domain probe: its answer proves the two above
    // reached ejabberd first (one stream, in order).
    p.inject("<presence from='friar.lit' to='verona.lit' type='probe' id='f-probe'/>");
    p.wait_for("verona's answer to the probe", T, from_verona(FRIAR, "unsubscribed"));

    assert!(!lab.sidecar.pending_file(FRIAR).exists(), "no request was recorded");
    assert!(!audit(&lab).contains("laurence"), "the user JID never reached the sidecar");
    assert_eq!(lab.sidecar.state(FRIAR), "absent");
    assert!(
        !p.received().iter().any(|s| s.from.as_deref() == Some(VERONA)
            && s.is_type("subscribed")
            && s.to.as_deref().is_some_and(|t| t.ends_with(FRIAR))),
        "nothing was approved\n{}",
        p.dump(&p.received())
    );
    assert!(!lab.ejabberd.is_trusted(FRIAR, None));
    assert!(!lab.ejabberd.is_trusted("laurence@friar.lit", None));
}

// (j)
#[test]
fn j_is_trusted_inside_ejabberd_follows_approve_groups_and_revoke() {
    let lab = shared_lab();
    let p = lab.prosody();
    assert!(!lab.ejabberd.is_trusted(PARIS, None));
    p.admin(PARIS).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(PARIS, T);
    assert!(!lab.ejabberd.is_trusted(PARIS, None), "a pending request is no trust");

    lab.sidecar.cli(&["approve", PARIS]);
    wait_trusted(&lab, PARIS, None, true);
    assert!(!lab.ejabberd.is_trusted(PARIS, Some("incidents")));

    lab.sidecar.cli(&["groups", PARIS, "--set", "incidents"]);
    wait_trusted(&lab, PARIS, Some("incidents"), true);
    assert!(!lab.ejabberd.is_trusted(PARIS, Some("muc-limits")));
    assert!(lab.ejabberd.is_trusted("PARIS.lit", None), "peer names are nameprepped");

    lab.sidecar.cli(&["revoke", PARIS]);
    wait_trusted(&lab, PARIS, None, false);
    assert!(!lab.ejabberd.is_trusted(PARIS, Some("incidents")));
}

// (g)
#[test]
fn g_restarts_keep_the_roster_resume_presence_and_never_approve_what_arrived_meanwhile() {
    const LATE: [&str; 3] = ["late1.lit", "late2.lit", "late3.lit"];
    let mut o = options();
    o.prosody_hosts = LATE.map(String::from).to_vec();
    o.queue_max = 2;
    let lab = EjabberdLab::start(o);
    let p = lab.prosody();
    befriend(&lab, MONTAGUE);
    let presence_to_montague = |typ: &'static str| from_verona(MONTAGUE, typ);

    // ejabberd restarts: the module greets the sidecar, which sends verona's presence to its
    // buddy and probes it.
    let (avail, probes) =
        (count(&lab, presence_to_montague("available")), count(&lab, presence_to_montague("probe")));
    lab.ejabberd.restart();
    lab.ejabberd.wait_status("sidecar up after the restart", T, |s| s["sidecar"] == "up");
    p.wait_for("presence after ejabberd restart", T, |s| {
        presence_to_montague("available")(s) && count(&lab, presence_to_montague("available")) > avail
    });
    p.wait_for("probe after ejabberd restart", T, |s| {
        presence_to_montague("probe")(s) && count(&lab, presence_to_montague("probe")) > probes
    });
    wait_trusted(&lab, MONTAGUE, None, true);
    assert_eq!(lab.sidecar.state(MONTAGUE), "both");

    // The sidecar goes down; three requests arrive one after the other. queue_max = 2: the
    // oldest is dropped and logged as lost, the other two wait in the module.
    lab.sidecar.stop();
    lab.ejabberd.wait_status("module noticed the sidecar is down", T, |s| s["sidecar"] == "down");
    for (i, peer) in LATE.iter().enumerate() {
        p.inject(&format!("<presence from='{peer}' to='{VERONA}' type='subscribe' id='late-{i}'/>"));
        match i {
            0 => lab.ejabberd.wait_status("1 queued", T, |s| s["queued"] == "1"),
            1 => lab.ejabberd.wait_status("2 queued", T, |s| s["queued"] == "2"),
            _ => lab.ejabberd.wait_status("1 lost, 2 queued", T, |s| s["lost"] == "1" && s["queued"] == "2"),
        };
    }
    lab.ejabberd.wait_log("the dropped request is logged as lost", T, |l| {
        l.contains("[warning]")
            && l.contains("lost subscribe presence from late1.lit")
            && l.contains("never approved")
    });

    let (avail, probes) =
        (count(&lab, presence_to_montague("available")), count(&lab, presence_to_montague("probe")));
    lab.sidecar.start();
    // The queued two are delivered and become requests for the admin; the lost one does not.
    // (More may be lost than late1: the peer answers the probe the restarted sidecar sends
    // before our queue is flushed; availability is evicted before requests.)
    lab.ejabberd.wait_status("queue drained", T, |s| s["queued"] == "0" && s["sidecar"] == "up");
    lab.sidecar.wait_pending("late2.lit", T);
    lab.sidecar.wait_pending("late3.lit", T);
    assert!(!lab.sidecar.pending_file("late1.lit").exists());
    // The long poll came back: hello, so presence and probes resume.
    p.wait_for("presence after sidecar restart", T, |s| {
        presence_to_montague("available")(s) && count(&lab, presence_to_montague("available")) > avail
    });
    p.wait_for("probe after sidecar restart", T, |s| {
        presence_to_montague("probe")(s) && count(&lab, presence_to_montague("probe")) > probes
    });
    // Nothing that arrived during the outage was approved.
    for peer in LATE {
        assert_eq!(count(&lab, from_verona(peer, "subscribed")), 0, "{peer} was approved");
        assert!(!lab.ejabberd.is_trusted(peer, None));
    }
    assert_eq!(lab.sidecar.state(MONTAGUE), "both");
    assert_eq!(p.admin(MONTAGUE).state(VERONA), "both");
}

// (h)
#[test]
fn h_a_burst_of_requests_stops_at_the_pending_cap_and_ejabberd_stays_responsive() {
    const CAP: usize = 5;
    let burst: Vec<String> = (1..=12).map(|i| format!("d{i:02}.lit")).collect();
    let mut o = options();
    o.prosody_hosts = burst.clone();
    o.sidecar_host_toml = format!("max_pending = {CAP}");
    let lab = EjabberdLab::start(o);
    let p = lab.prosody();

    let sends: Vec<String> = burst
        .iter()
        .map(|d| {
            format!("lab:send([[<presence from='{d}' to='{VERONA}' type='subscribe' id='burst-{d}'/>]])")
        })
        .collect();
    let out = p.shell(&sends.join("; "));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Every request reached the sidecar (the module counts the 202s) ...
    lab.ejabberd.wait_status("12 presences delivered", T, |s| {
        s["delivered"].parse::<usize>().unwrap_or(0) >= burst.len()
    });
    // ... and exactly CAP became pending requests; the rest were dropped, none answered.
    let pending_dir = lab.sidecar.store.join(VERONA).join("pending");
    let n = fs::read_dir(&pending_dir)
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))).count()
        })
        .unwrap_or(0);
    assert_eq!(n, CAP, "pending requests in {}", pending_dir.display());
    for d in &burst {
        assert_eq!(count(&lab, from_verona(d, "subscribed")), 0, "{d} was approved");
    }
    // ejabberd still answers commands, trust checks and its API.
    assert_eq!(lab.ejabberd.module_status()["queued"], "0");
    assert!(!lab.ejabberd.is_trusted("d01.lit", None));
    let api = lab.ejabberd.api_url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let r = http_request(&api, "POST", "/api/status", &[("Content-Type", "application/json")], b"{}");
    assert_eq!(r.status, 403, "the API answers (and refuses unauthenticated calls): {r:?}");
}

// (i)
#[test]
fn i_hostile_http_inputs_are_refused_and_leave_the_store_unchanged() {
    let mut o = options();
    o.prosody = false;
    let lab = EjabberdLab::start(o);
    let s = &lab.sidecar;
    let (hook, admin) = (s.hook_token.as_str(), s.admin_token.as_str());
    let before = s.store_snapshot();
    // One hostile request: it must get one of `want` and leave every store file as it was.
    let check = |what: &str, method: &str, path: &str, token: Option<&str>, body: &[u8], want: &[u16]| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let r = s.http(method, path, &headers, body);
        assert!(want.contains(&r.status), "{what}: {method} {path} answered {} {}", r.status, r.body);
        assert_eq!(s.store_snapshot(), before, "{what} changed the store");
    };
    let presence = "/v1/hook/presence";
    let good = br#"{"host":"verona.lit","from":"evil.lit","type":"subscribe","id":"x"}"#;
    let mut big = br#"{"host":"verona.lit","from":"evil.lit","type":"subscribe","id":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend_from_slice(br#""}"#);

    check("malformed JSON", "POST", presence, Some(hook), br#"{"host":"verona.lit","#, &[400]);
    let user = br#"{"host":"verona.lit","from":"eve@evil.lit","type":"subscribe"}"#;
    check("a user JID", "POST", presence, Some(hook), user, &[400]);
    let approve = br#"{"host":"verona.lit","from":"evil.lit","type":"approve"}"#;
    check("unknown type", "POST", presence, Some(hook), approve, &[400]);
    check("no token", "POST", presence, None, good, &[401]);
    check("wrong token", "POST", presence, Some("not-the-token"), good, &[401, 403]);
    check("admin token on the hook", "POST", presence, Some(admin), good, &[403]);
    let approve_path = "/v1/hosts/verona.lit/peers/evil.lit/approve";
    check("hook token on the admin API", "POST", approve_path, Some(hook), b"{}", &[403]);
    check(
        "no token on the admin API",
        "POST",
        "/v1/hosts/verona.lit/peers/evil.lit/request",
        None,
        b"{}",
        &[401],
    );
    check("oversized", "POST", presence, Some(hook), &big, &[413]);
    let other = br#"{"host":"other.lit","from":"evil.lit","type":"subscribe"}"#;
    check("host not served", "POST", presence, Some(hook), other, &[404]);
    check("unknown path", "POST", "/v1/hook/approve", Some(hook), good, &[404]);
    check("wrong method", "GET", presence, Some(hook), b"", &[405]);
    check("wrong method on hello", "DELETE", "/v1/hook/hello", Some(hook), b"", &[405]);

    // ejabberd's API: only the sidecar's token, only its two commands.
    let api = lab.ejabberd.api_url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let stanza = br#"{"from":"verona.lit","to":"evil.lit","stanza":"<presence type='subscribed'/>"}"#;
    let json = ("Content-Type", "application/json");
    let bearer = format!("Bearer {}", fs::read_to_string(&s.api_token_file).unwrap().trim());
    assert_eq!(http_request(&api, "POST", "/api/send_stanza", &[json], stanza).status, 403);
    let bogus = [json, ("Authorization", "Bearer bogus")];
    assert_eq!(http_request(&api, "POST", "/api/send_stanza", &bogus, stanza).status, 401);
    let users = br#"{"host":"verona.lit"}"#;
    let granted = [json, ("Authorization", bearer.as_str())];
    assert_eq!(http_request(&api, "POST", "/api/registered_users", &granted, users).status, 403);

    // The same request with the right token is taken: the checks above could have failed.
    let r = s.http("POST", presence, &[("Authorization", &format!("Bearer {hook}")), json], good);
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_pending("evil.lit", T);
}

// `federation: buddies` is tested in ejabberd_federation.rs (its own lab).
