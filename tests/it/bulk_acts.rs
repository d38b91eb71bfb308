//! Bulk acts and the drop count (issue 14, defect 4): `deny --site`, `deny --all-pending
//! --older-than`, and `pending` saying how many requests were dropped at the cap since when.
//! The commands are those README.md shows.

use std::time::{Duration, SystemTime};

use server_trust::store::{Decision, format_rfc3339};
use server_trust::{Action, Domain, Engine, PresenceKind, Subscription};
use server_trust_lab::admin::{output_text, run_cli};

use crate::support::{cfg, engine, sent};

/// Writes `peer`'s pending file again as first seen `age` ago.
fn backdate(e: &Engine, peer: &str, age: Duration) {
    let mut req = e.store().read_pending(&Domain::new(peer).unwrap()).unwrap().unwrap();
    req.first_seen = format_rfc3339(SystemTime::now() - age);
    e.store().write_pending(&req).unwrap();
}

fn cli_ok(root: &std::path::Path, args: &[&str]) -> String {
    let o = run_cli(root, args);
    assert!(o.status.success(), "{args:?}: {}", output_text(&o));
    output_text(&o)
}

#[test]
fn the_cli_denies_a_site_and_old_requests_in_bulk_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), "capulet.lit", cfg());
    // A flood from one private suffix: 10 recorded (its site's cap), the rest dropped.
    for i in 0..15 {
        e.inbound(&format!("a{i}.github.io"), PresenceKind::Subscribe, None).unwrap();
    }
    for p in ["montague.lit", "old.example", "young.example"] {
        e.inbound(p, PresenceKind::Subscribe, None).unwrap();
    }
    backdate(&e, "old.example", Duration::from_secs(8 * 86_400));
    backdate(&e, "young.example", Duration::from_secs(6 * 86_400));

    // `pending` says the drops (the first is counted at once, the rest within 10 s).
    let text = cli_ok(dir.path(), &["pending"]);
    assert!(text.contains("13 pending request(s)"), "{text}");
    assert!(text.contains("1 dropped at the cap since ") && text.contains("a10.github.io"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&cli_ok(dir.path(), &["--json", "dropped"])).unwrap();
    assert_eq!(v["dropped"], 1);

    // server-trust deny --site github.io
    let text = cli_ok(dir.path(), &["deny", "--site", "github.io"]);
    assert!(text.contains("deny (from github.io): 10 denial(s) recorded"), "{text}");
    for i in 0..10 {
        assert!(text.contains(&format!("  deny a{i}.github.io\n")), "{text}");
        let req = e.store().read_pending(&Domain::new(&format!("a{i}.github.io")).unwrap()).unwrap().unwrap();
        assert_eq!(req.decision, Decision::Deny);
    }
    assert!(!text.contains("montague.lit"), "{text}");

    // server-trust deny --all-pending --older-than 7d
    let text = cli_ok(dir.path(), &["deny", "--all-pending", "--older-than", "7d"]);
    assert!(text.contains("deny (all pending, first seen over 7days ago): 1 denial(s)"), "{text}");
    assert!(text.contains("  deny old.example\n") && !text.contains("young.example"), "{text}");
    // The same in JSON: nothing left to take.
    let o = run_cli(dir.path(), &["--json", "deny", "--all-pending", "--older-than", "7d"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["peers"].clone(), v["ok"].clone()),
        (serde_json::json!([]), serde_json::json!(true)),
        "{v}"
    );

    // The running server applies them at its next poll, as single denies.
    let acts: Vec<Action> = e.poll().unwrap();
    let mut denied: Vec<String> =
        sent(&acts).into_iter().filter(|(_, kind)| *kind == "unsubscribed").map(|(peer, _)| peer).collect();
    denied.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("a{i}.github.io")).collect();
    expected.push("old.example".into());
    expected.sort();
    assert_eq!(denied, expected);
    assert_eq!(e.state("a3.github.io").unwrap(), Subscription::None);
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingIn);
    assert_eq!(e.state("young.example").unwrap(), Subscription::NonePendingIn);
    let log = e.store().read_audit().unwrap();
    assert!(log.iter().any(|r| r.peer == "a3.github.io" && r.event == "deny" && r.actor.as_str() == "cli"));

    // Refused: nothing selected, or a peer with a selection.
    assert!(!run_cli(dir.path(), &["deny", "--older-than", "7d"]).status.success());
    assert!(!run_cli(dir.path(), &["deny", "montague.lit", "--site", "lit"]).status.success());
    assert_eq!(e.state("montague.lit").unwrap(), Subscription::NonePendingIn);
}
