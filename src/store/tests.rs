//! The store on its own: file formats, safety against planted files, ordering, modes.

use super::*;
use crate::subscription::Subscription;
use std::io::Write;

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path(), &Domain::new("montague.lit").unwrap()).unwrap();
    (t, s)
}

fn req(peer: &str) -> PendingRequest {
    PendingRequest {
        peer: Domain::new(peer).unwrap(),
        decision: Decision::Pending,
        decided_by: None,
        first_seen: now_rfc3339(),
        last_seen: now_rfc3339(),
        times_seen: 1,
        stanza_id: Some("x1".into()),
    }
}

#[test]
fn pending_round_trip_and_listing() {
    let (_t, s) = store();
    s.write_pending(&req("capulet.lit")).unwrap();
    s.write_pending(&req("verona.lit")).unwrap();
    let (ok, bad) = s.list_pending();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok.len(), 2);
    assert_eq!(s.pending_count(), 2);
    let text = fs::read_to_string(s.pending_path(&Domain::new("capulet.lit").unwrap())).unwrap();
    assert!(text.contains("decision = \"pending\""), "{text}");
    assert!(text.contains("approve capulet.lit"), "{text}");
}

#[test]
fn corrupt_file_names_file_and_line_and_is_kept() {
    let (_t, s) = store();
    let peer = Domain::new("capulet.lit").unwrap();
    s.write_pending(&req("capulet.lit")).unwrap();
    let path = s.pending_path(&peer);
    let text = fs::read_to_string(&path).unwrap().replace("\"pending\"", "\"yes please\"");
    fs::write(&path, &text).unwrap();
    let err = s.read_pending(&peer).unwrap_err().to_string();
    let line = text.lines().position(|l| l.starts_with("decision")).unwrap() + 1;
    assert!(err.contains(&format!("capulet.lit.toml:{line}")), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), text, "corrupt file must be left as is");
    let (_, bad) = s.list_pending();
    assert_eq!(bad.len(), 1);
}

#[test]
fn renamed_file_is_refused() {
    let (_t, s) = store();
    s.write_pending(&req("capulet.lit")).unwrap();
    let from = s.pending_path(&Domain::new("capulet.lit").unwrap());
    let to = s.pending_path(&Domain::new("evil.lit").unwrap());
    fs::rename(from, to).unwrap();
    let err = s.read_pending(&Domain::new("evil.lit").unwrap()).unwrap_err();
    assert!(err.to_string().contains("named for evil.lit"), "{err}");
}

#[test]
fn stray_files_are_ignored() {
    let (_t, s) = store();
    let dir = s.dir().join(PENDING);
    fs::write(dir.join(".capulet.lit.toml.swp"), "x").unwrap();
    fs::write(dir.join("README"), "x").unwrap();
    fs::write(dir.join("..toml"), "x").unwrap();
    assert_eq!(s.pending_count(), 0);
}

#[test]
fn audit_appends_and_reports_torn_lines() {
    let (_t, s) = store();
    let rec = AuditRecord {
        time: now_rfc3339(),
        peer: "capulet.lit".into(),
        actor: Actor::Cli,
        event: "approve".into(),
        from: Some(Subscription::NonePendingIn),
        to: Some(Subscription::From),
    };
    s.audit(&rec).unwrap();
    s.audit(&rec).unwrap();
    assert_eq!(s.read_audit().unwrap().len(), 2);
    let mut f = File::options().append(true).open(s.dir().join(AUDIT)).unwrap();
    f.write_all(b"{\"time\":").unwrap();
    let err = s.read_audit().unwrap_err().to_string();
    assert!(err.contains("audit.log:3"), "{err}");
}

#[test]
fn roster_round_trips_and_a_stray_cache_is_never_trusted() {
    let (_t, s) = store();
    let mut roster = RosterFile::default();
    let mut e = RosterEntry::new();
    e.state = Subscription::Both;
    e.groups = vec!["incidents".into()];
    roster.peers.insert(Domain::new("capulet.lit").unwrap(), e);
    s.save_roster(&roster.peers).unwrap();
    assert_eq!(s.load_roster().unwrap(), roster);
    // What the admin reads in roster.toml is all there is: a planted side file changes nothing.
    fs::write(s.dir().join(".roster.cache"), b"evil.example").unwrap();
    assert_eq!(s.load_roster().unwrap(), roster);
}

use std::os::unix::fs::{PermissionsExt, symlink};

#[test]
fn writes_never_follow_symlinks_and_reads_take_regular_files_only() {
    let (t, s) = store();
    let victim = t.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let peer = Domain::new("capulet.lit").unwrap();
    // A symlink planted where a pending file will be written is replaced, not written through.
    symlink(&victim, s.pending_path(&peer)).unwrap();
    s.write_pending(&req("capulet.lit")).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(fs::symlink_metadata(s.pending_path(&peer)).unwrap().is_file());
    // A symlink to /dev/zero and a FIFO are refused at once, not read forever or waited on.
    symlink("/dev/zero", s.pending_path(&Domain::new("zero.lit").unwrap())).unwrap();
    let fifo = s.pending_path(&Domain::new("fifo.lit").unwrap());
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (ok, bad) = s.list_pending();
    assert_eq!(ok.len(), 1);
    assert_eq!(bad.len(), 2, "{bad:?}");
    let text: String = bad.iter().map(|e| e.to_string()).collect();
    assert!(text.contains("symbolic link") && text.contains("not a regular file"), "{text}");
    // A dangling .lock symlink is refused, and its target is not created.
    let target = t.path().join("created-by-lock");
    fs::remove_file(s.dir().join(LOCK)).ok();
    symlink(&target, s.dir().join(LOCK)).unwrap();
    assert!(s.lock().unwrap_err().to_string().contains("symbolic link"));
    assert!(!target.exists());
}

#[test]
fn symlinked_folders_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let host = Domain::new("montague.lit").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("montague.lit")).unwrap();
    symlink(elsewhere.path(), t.path().join("montague.lit").join(PENDING)).unwrap();
    let err = Store::open(t.path(), &host).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn files_keep_the_mode_of_their_folder_or_of_the_file_they_replace() {
    let (_t, s) = store();
    fs::set_permissions(s.dir().join(PENDING), fs::Permissions::from_mode(0o2770)).unwrap();
    s.write_pending(&req("capulet.lit")).unwrap();
    let path = s.pending_path(&Domain::new("capulet.lit").unwrap());
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o660);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    s.write_pending(&req("capulet.lit")).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
}

#[test]
fn queued_acts_are_all_kept_in_order() {
    let (_t, s) = store();
    let x = Domain::new("x.lit").unwrap();
    s.queue(&x, QueuedAct::Revoke, Actor::Cli).unwrap();
    s.queue(&x, QueuedAct::Request, Actor::Cli).unwrap();
    s.queue(&Domain::new("a.lit").unwrap(), QueuedAct::Request, Actor::Api).unwrap();
    let (acts, bad) = s.list_queued();
    assert!(bad.is_empty(), "{bad:?}");
    let order: Vec<_> = acts.iter().map(|(q, _)| (q.peer.as_str(), q.act)).collect();
    assert_eq!(
        order,
        [("x.lit", QueuedAct::Revoke), ("x.lit", QueuedAct::Request), ("a.lit", QueuedAct::Request)]
    );
    s.remove_queued(&acts[0].1).unwrap();
    assert_eq!(s.list_queued().0.len(), 2);
}

#[test]
fn variant_spellings_and_old_temp_files() {
    let (t, s) = store();
    let variant = s.dir().join(PENDING).join("XN--BCHER-KVA.de.toml");
    fs::write(&variant, "peer = \"bücher.de\"").unwrap();
    let (_, bad) = s.list_pending();
    assert!(bad[0].to_string().contains("rename it to bücher.de.toml"), "{bad:?}");
    // A writer killed mid-write leaves a temp file; the next open removes it once stale.
    let stale = s.dir().join(".st-tmp-abc");
    fs::write(&stale, "half").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
    let fresh = s.dir().join(".st-tmp-def");
    fs::write(&fresh, "in progress").unwrap();
    // A writer that is gone (its pid in the name) leaves nothing behind, however fresh.
    let killed = s.dir().join(".st-tmp-999999999-xyz");
    fs::write(&killed, "half").unwrap();
    let live = s.dir().join(format!(".st-tmp-{}-xyz", std::process::id()));
    fs::write(&live, "in progress").unwrap();
    Store::open(t.path(), s.host()).unwrap();
    assert!(!stale.exists() && fresh.exists() && !killed.exists() && live.exists());
}
