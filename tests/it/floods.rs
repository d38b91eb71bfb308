//! Floods of requests: at most `max_pending` are kept, repeats and drops write nothing, and a
//! real server stays responsive.

use std::fs;
use std::time::{Duration, Instant};

use server_trust::{Action, Config, Domain, PresenceKind, Subscription};
use server_trust_lab::{CAPULET, Lab, LabOptions, MONTAGUE, TrustAdmin, presence_from};

use crate::support::{WAIT, cfg, engine};

#[test]
fn burst_from_many_domains_stops_at_the_cap_and_server_stays_responsive() {
    let senders: Vec<String> = (0..12).map(|i| format!("s{i}.lit")).collect();
    let lab = Lab::with_server_trust(LabOptions {
        extra_global: "server_trust_max_pending = 5\n".into(),
        montague_extra_hosts: senders.clone(),
        ..LabOptions::default()
    });
    for (i, s) in senders.iter().enumerate() {
        lab.montague.inject(&format!("<presence from='{s}' to='capulet.lit' type='subscribe' id='b{i}'/>"));
    }
    for s in &senders {
        lab.capulet.wait_for("burst subscribe", WAIT, presence_from(s, "subscribe"));
    }
    let dir = lab.capulet.store.join(CAPULET).join("pending");
    let t0 = Instant::now();
    while fs::read_dir(&dir).unwrap().count() < 5 && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 5, "exactly the cap is kept");
    let console = fs::read_to_string(&lab.capulet.console_log).unwrap();
    assert!(console.contains("already pending"), "drops must be logged:\n{console}");
    // Still responsive: the admin shell answers and a normal request still flows.
    lab.capulet.shell_ok("server_trust:pending()");
    lab.montague.cli(&["request", CAPULET]);
    lab.capulet.wait_for("subscribe after the burst", WAIT, presence_from(MONTAGUE, "subscribe"));
    assert_eq!(lab.capulet.state(MONTAGUE), "absent", "beyond the cap: not recorded");
}

#[test]
fn pending_cap_drops_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { max_pending: 3, ..cfg() });
    let mut logs = Vec::new();
    for i in 0..10 {
        for a in c.inbound(&format!("s{i}.lit"), PresenceKind::Subscribe, None).unwrap() {
            if let Action::Log { text, .. } = a {
                logs.push(text);
            }
        }
    }
    assert_eq!(c.store().pending_count(), 3);
    assert_eq!(c.roster().len(), 3);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains("dropped subscribe from s3.lit") && logs[0].contains("3 requests already pending")
    );
    c.inbound("late.lit", PresenceKind::Subscribe, None).unwrap();
    assert_eq!(c.state("late.lit").unwrap(), Subscription::None);
    assert!(!c.store().pending_path(&Domain::new("late.lit").unwrap()).exists());
}

#[test]
fn a_flood_of_repeats_writes_nothing_and_a_flood_of_strangers_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let c = engine(dir.path(), "capulet.lit", Config { max_pending: 50, ..cfg() });
    c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    let path = c.store().pending_path(&Domain::new("montague.lit").unwrap());
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let audit_before = c.store().read_audit().unwrap().len();
    for _ in 0..5000 {
        assert!(c.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap().is_empty());
    }
    assert_eq!(
        fs::metadata(&path).unwrap().modified().unwrap(),
        before,
        "repeats inside the window rewrite nothing"
    );
    assert_eq!(c.store().read_audit().unwrap().len(), audit_before, "and log nothing");
    let mut notices = 0;
    for i in 0..2000 {
        let a = c.inbound(&format!("stranger{i}.lit"), PresenceKind::Subscribe, None).unwrap();
        notices += a.iter().filter(|a| matches!(a, Action::Log { .. })).count();
    }
    assert_eq!(c.store().pending_count(), 50);
    assert_eq!(notices, 1, "one notice for the whole flood, not one per stanza");
    assert_eq!(c.store().read_audit().unwrap().len(), audit_before + 49, "dropped requests write nothing");
    // Oversized and hostile names are refused before touching the store.
    let huge = "a".repeat(1 << 20);
    assert!(c.inbound(&huge, PresenceKind::Subscribe, None).is_err());
    assert!(c.inbound("..%2f..%2fetc", PresenceKind::Subscribe, None).is_err());
    assert_eq!(c.store().pending_count(), 50);
}
