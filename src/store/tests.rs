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
        decided_at: None,
        first_seen: now_rfc3339(),
        last_seen: now_rfc3339(),
        times_seen: 1,
        stanza_id: Some("x1".into()),
        evidence: Default::default(),
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

/// The sealed-roster reader and the TOML parser give the same roster for anything our writer
/// writes, and the reader does take the common files (no line break in a note).
#[test]
fn a_sealed_roster_reads_the_same_without_the_toml_parser() {
    use crate::engine::Actor;
    use proptest::prelude::*;
    let actors =
        [Actor::Peer, Actor::Cli, Actor::File, Actor::Api, Actor::Shell, Actor::Adhoc, Actor::Engine];
    let peers = ["a.lit", "bücher.de", "xn--80ak6aa92e.com", "a-b.c0.example", "münchen.example", "z.lit"];
    // Quotes, apostrophes, backslashes, escapes TOML writes (\u007F, \t), line breaks, non-ASCII.
    let text = "[a-z '\"\\\\\t\u{7f}\u{1}é€𝄞#=\\[\\],.\n-]{0,12}";
    let entry = (
        0..9usize,
        proptest::collection::vec(text, 0..4),
        text,
        any::<bool>(),
        proptest::option::of(text),
        proptest::option::of(0..7usize),
        proptest::option::of("[0-9TZ:-]{0,20}"),
        proptest::option::of(0..7usize),
        proptest::option::of(text),
        proptest::option::of(proptest::collection::vec(
            (0..4usize, proptest::option::of(text), "[0-9TZ:-]{0,20}"),
            1..3,
        )),
    );
    use crate::engine::PresenceKind as K;
    let kinds = [K::Subscribe, K::Subscribed, K::Unsubscribe, K::Unsubscribed];
    let (_t, store) = store();
    let fast = std::cell::Cell::new(0);
    proptest!(ProptestConfig::with_cases(3000), |(entries in proptest::collection::vec(entry, 0..6))| {
        let roster: BTreeMap<Domain, RosterEntry> = entries
            .into_iter()
            .zip(peers)
            .map(|((s, groups, note, pre, req_at, req_by, appr_at, appr_by, upd, outbox), peer)| {
                let e = RosterEntry {
                    state: Subscription::ALL[s],
                    groups,
                    note,
                    pre_approved: pre,
                    requested_at: req_at,
                    requested_by: req_by.map(|i| actors[i]),
                    approved_at: appr_at,
                    approved_by: appr_by.map(|i| actors[i]),
                    updated_at: upd,
                    outbox: outbox.map(|items| {
                        items
                            .into_iter()
                            .map(|(k, id, since)| crate::store::Waiting { kind: kinds[k], id, since })
                            .collect()
                    }),
                };
                (Domain::new(peer).unwrap(), e)
            })
            .collect();
        let (text, _) = store.roster_text(&roster);
        let by_toml: RosterFile = toml::from_str(&text).unwrap();
        prop_assert_eq!(&by_toml.peers, &roster);
        // `None` is always allowed (the TOML parser then reads it); a different roster never.
        if let Some(file) = sealed::parse(&text) {
            fast.set(fast.get() + 1);
            prop_assert_eq!(file, by_toml, "{}", text);
        }
    });
    assert!(fast.get() > 300, "the fast reader took only {} of 3000 rosters", fast.get());
    // What rosters hold (quotes, apostrophes, non-ASCII, several groups) is read fast.
    let mut e = RosterEntry::new();
    e.state = Subscription::Both;
    e.groups = vec!["incidents".into(), "muc-limits".into(), "a\"b".into(), "it's".into()];
    e.note = "Montague's \"ops\" team, ticket 4711, café".into();
    e.approved_by = Some(Actor::Cli);
    e.approved_at = Some(now_rfc3339());
    // Stanzas waiting in the outbox (an approval while the XMPP server's API was down).
    e.outbox = Some(vec![
        crate::store::Waiting { kind: K::Subscribed, id: Some("x'1\"".into()), since: now_rfc3339() },
        crate::store::Waiting { kind: K::Subscribe, id: None, since: now_rfc3339() },
    ]);
    let typical: BTreeMap<Domain, RosterEntry> =
        peers.iter().map(|p| (Domain::new(p).unwrap(), e.clone())).collect();
    let (text, _) = store.roster_text(&typical);
    assert_eq!(sealed::parse(&text).map(|f| f.peers), Some(typical), "{text}");
    // Every escape and quoting form TOML has for one line, read as the TOML parser reads it.
    for value in [
        r#""a\nb\tc\\d\"e\u00e9\U0001D11E\b\f\r""#,
        r#"'C:\raw\n'"#,
        r#""""two "" quotes""""#,
        r#""""a"""""#,
        r#"'''it's "x"'''"#,
        r#"''''x'''''"#,
    ] {
        let text =
            format!("[peers.\"a.lit\"]\nstate = \"both\"\nnote = {value}\ngroups = [{value}, {value}]\n");
        let by_toml: RosterFile = toml::from_str(&text).unwrap();
        assert_eq!(sealed::parse(&text), Some(by_toml), "{text}");
    }
    // Hand-made shapes our writer never produces are left to the TOML parser.
    for odd in [
        "[peers.\"a.lit\"]\nstate = \"both\"\nstate = \"none\"\n", // a field twice
        "[peers.\"a.lit\"]\ngroups = []\n",                        // no state
        "[peers.\"a.lit\"]\nstate = \"both\"\n\n[peers.\"A.lit\"]\nstate = \"none\"\n", // one domain twice
        "[peers.\"a.lit\"]\nstate = \"both\"\ncolour = \"red\"\n", // unknown field
        "[peers.\"a.lit\"]\nstate = \"both\" # comment\n",
        "[peers.\"a.lit\"]\nstate = \"bogus\"\n",
        "[peers.\"a_b.lit\"]\nstate = \"both\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\nnote = \"\"\"\nx\"\"\"\n",
        "peers = {}\n",
        "[peers.a.lit]\nstate = \"both\"\n", // a nested table in TOML, not the domain a.lit
        "[peers.\"a.lit\"]\n  state = \"both\"\n",
        "state = \"both\"\n",
        "#\u{7f}\n",          // found by fuzzing: a control character in a comment
        "[peers]\n[peers]\n", // a table defined twice (the TOML parser refuses it)
        // Outbox items: under another peer's header, another spelling, a field twice, no
        // `since`, an unknown field, a field of the peer after its outbox.
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.\"b.lit\".outbox]]\ntype = \"subscribed\"\nsince = \"t\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.a.lit.outbox]]\ntype = \"subscribed\"\nsince = \"t\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.\"a.lit\".outbox]]\ntype = \"subscribed\"\ntype = \"subscribe\"\nsince = \"t\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.\"a.lit\".outbox]]\ntype = \"subscribed\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.\"a.lit\".outbox]]\ntype = \"subscribed\"\nsince = \"t\"\nx = \"y\"\n",
        "[peers.\"a.lit\"]\nstate = \"both\"\n[[peers.\"a.lit\".outbox]]\ntype = \"subscribed\"\nsince = \"t\"\nnote = \"n\"\n",
        "[[peers.\"a.lit\".outbox]]\ntype = \"subscribed\"\nsince = \"t\"\n",
        "[peers]\n\n[peers]\n[peers.\"a.lit\"]\nstate = \"both\"\n",
    ] {
        assert!(sealed::parse(odd).is_none(), "{odd}");
    }
    // What the fast reader does take, the TOML parser takes the same way.
    for fine in ["[peers]\n", "[peers]\n\n[peers.\"a.lit\"]\nstate = \"both\"\n"] {
        let by_toml: RosterFile = toml::from_str(fine).unwrap();
        assert_eq!(sealed::parse(fine), Some(by_toml), "{fine}");
    }
}

/// A roster large enough to be checksummed on a second thread reads as one read on a single
/// thread does: sealed when whole, not sealed once edited, with every peer.
#[test]
fn a_large_roster_is_checksummed_beside_the_read_with_the_same_result() {
    let (_t, store) = store();
    let mut e = RosterEntry::new();
    e.state = Subscription::Both;
    e.note = "a note long enough to make the file large quickly, as admins write them".into();
    let peers: BTreeMap<Domain, RosterEntry> =
        (0..8000).map(|i| (Domain::new(&format!("p{i}.example")).unwrap(), e.clone())).collect();
    store.save_roster(peers.iter()).unwrap();
    let path = store.dir().join("roster.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.len() >= super::PARALLEL_READ, "{} bytes", text.len());
    let read = store.read_roster().unwrap();
    assert!(read.sealed && read.base.is_some());
    assert_eq!(read.file.peers, peers);
    // Edited by hand (one state changed): no longer sealed, read by the TOML parser.
    let edited = text.replacen("state = \"both\"", "state = \"to\"", 1);
    fs::write(&path, &edited).unwrap();
    let read = store.read_roster().unwrap();
    assert!(!read.sealed && read.base.is_some());
    assert_eq!(read.file.peers.len(), 8000);
    assert_eq!(read.file.peers.values().filter(|e| e.state == Subscription::To).count(), 1);
}

/// A store root that does not exist yet (st_engine_open, the CLI and the module all come here)
/// is created with its missing parents `0750`, never readable by other users whatever the
/// umask lets through; the host folders inside take the root's mode.
#[test]
fn missing_folders_are_created_0750() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("var/lib/server_trust");
    let s = Store::open(&root, &Domain::new("montague.lit").unwrap()).unwrap();
    for dir in [t.path().join("var"), t.path().join("var/lib"), root.clone(), s.dir().to_path_buf()] {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & 0o007, 0, "{} is mode {mode:o}: others can reach the store", dir.display());
        assert_eq!(mode & !0o750, 0, "{} is mode {mode:o}, wider than 0750", dir.display());
    }
}
