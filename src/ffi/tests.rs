//! The C ABI called the way C would: misuse gives statuses, many threads share one handle.

use super::*;
use std::ffi::{CStr, CString, c_char};
use std::ptr::{null, null_mut};

#[test]
fn transition_rejects_out_of_range_and_null() {
    let (mut n, mut d) = (99, 99);
    unsafe {
        assert_eq!(st_transition(9, 0, 0, &mut n, &mut d), st_status::OutOfRange);
        assert_eq!(st_transition(0, 2, 0, &mut n, &mut d), st_status::OutOfRange);
        assert_eq!(st_transition(0, 0, 4, &mut n, &mut d), st_status::OutOfRange);
        assert_eq!((n, d), (99, 99), "outputs untouched on error");
        assert_eq!(st_transition(0, 0, 0, null_mut(), &mut d), st_status::NullParameter);
        assert_eq!(st_transition(0, 0, 0, &mut n, &mut d), st_status::Ok);
    }
    assert_eq!((n, d), (ST_SUBSCRIPTION_NONE_PENDING_IN, ST_DISPOSITION_DELIVER));
}

#[test]
fn null_and_bad_utf8_are_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut e = null_mut();
    unsafe {
        assert_eq!(st_engine_open(null(), c"a.lit".as_ptr(), null(), &mut e), st_status::NullParameter);
        assert_eq!(
            st_engine_open(root.as_ptr(), c"alice@a.lit".as_ptr(), null(), &mut e),
            st_status::InvalidDomain
        );
        assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
        let bad = [0xffu8, 0xfe, 0];
        let mut t = true;
        assert_eq!(st_is_trusted(e, bad.as_ptr().cast(), null(), &mut t), st_status::InvalidUtf8);
        assert_eq!(st_is_trusted(null(), c"b.lit".as_ptr(), null(), &mut t), st_status::NullParameter);
        assert_eq!(st_is_trusted(e, c"b.lit".as_ptr(), null(), null_mut()), st_status::NullParameter);
        let mut out = null_mut();
        assert_eq!(st_engine_approve(e, c"b.lit".as_ptr(), &mut out), st_status::NoPendingRequest);
        let mut buf = [0 as c_char; 64];
        let mut n = 0;
        assert_eq!(st_last_error(buf.as_mut_ptr(), buf.len(), &mut n), st_status::Ok);
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), "no pending request from b.lit");
        assert_eq!(st_engine_inbound(e, c"b.lit".as_ptr(), 7, null(), &mut out), st_status::OutOfRange);
        assert_eq!(
            st_engine_inbound(e, c"bob@b.lit".as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
            st_status::InvalidDomain
        );
        assert_eq!(st_actions_len(null()), 0);
        st_actions_free(null_mut());
        st_engine_free(e);
        st_engine_free(null_mut());
    }
}

#[test]
fn status_strings_cover_every_value() {
    for s in [
        0, 1000, 1001, 1002, 1003, 1004, 1005, 2000, 2001, 2002, 2003, 3000, 3001, 3002, 3003, 3004, 3005,
        9000,
    ] {
        let text = unsafe { CStr::from_ptr(st_status_str(s)) }.to_str().unwrap();
        assert_ne!(text, "unknown status");
    }
    assert_eq!(unsafe { CStr::from_ptr(st_status_str(1234)) }.to_str().unwrap(), "unknown status");
    assert_eq!(unsafe { CStr::from_ptr(st_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// One handle, many threads: lookups run while another thread changes the roster.
#[test]
fn handle_is_usable_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut opts = st_options_default();
    opts.watch = false;
    let mut e = null_mut();
    assert_eq!(unsafe { st_engine_open(root.as_ptr(), c"c.lit".as_ptr(), &opts, &mut e) }, st_status::Ok);
    struct Handle(*mut st_engine);
    unsafe impl Send for Handle {}
    unsafe impl Sync for Handle {}
    let h = std::sync::Arc::new(Handle(e));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let peer = CString::new(format!("w{t}-{i}.lit")).unwrap();
                    let mut out = null_mut();
                    unsafe {
                        assert_eq!(
                            st_engine_inbound(
                                h.0,
                                peer.as_ptr(),
                                ST_PRESENCE_TYPE_SUBSCRIBE,
                                null(),
                                &mut out
                            ),
                            st_status::Ok
                        );
                        st_actions_free(out);
                        assert_eq!(st_engine_approve(h.0, peer.as_ptr(), &mut out), st_status::Ok);
                        st_actions_free(out);
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                for i in 0..20_000 {
                    let peer = CString::new(format!("w0-{}.lit", i % 50)).unwrap();
                    let mut t = false;
                    assert_eq!(unsafe { st_is_trusted(h.0, peer.as_ptr(), null(), &mut t) }, st_status::Ok);
                    seen += t as usize;
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    for t in 0..2 {
        for i in 0..50 {
            let peer = CString::new(format!("w{t}-{i}.lit")).unwrap();
            let mut trusted = false;
            unsafe { st_is_trusted(h.0, peer.as_ptr(), null(), &mut trusted) };
            assert!(trusted, "{peer:?}");
        }
    }
    unsafe { st_engine_free(h.0) };
}

fn last_error() -> String {
    let mut buf = [0 as c_char; 256];
    assert_eq!(unsafe { st_last_error(buf.as_mut_ptr(), buf.len(), null_mut()) }, st_status::Ok);
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_string()
}

#[test]
fn open_failure_is_explained_without_a_handle_and_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a.lit")).unwrap();
    std::fs::write(dir.path().join("a.lit/roster.toml"), "[peers.\"b.lit\"]\nstate = \"maybe\"\n").unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut e = null_mut();
    let st = unsafe { st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e) };
    assert_eq!(st, st_status::StoreCorrupt);
    assert!(e.is_null(), "nothing written on failure");
    let msg = last_error();
    assert!(msg.contains("roster.toml:2"), "{msg}");
    // An argument error right after replaces the message: it always matches the last status.
    let mut opts = st_options_default();
    opts.max_pending = 0;
    let st = unsafe { st_engine_open(root.as_ptr(), c"c.lit".as_ptr(), &opts, &mut e) };
    assert_eq!(st, st_status::InvalidOption);
    assert!(last_error().contains("max_pending"), "{}", last_error());
    assert_eq!(
        unsafe { st_engine_open(null(), c"c.lit".as_ptr(), null(), &mut e) },
        st_status::NullParameter
    );
    assert_eq!(last_error(), "a required pointer was NULL");
}

#[test]
fn presence_types_have_one_number_and_one_name() {
    for t in 0..7 {
        let name = unsafe { CStr::from_ptr(st_presence_type_name(t)) };
        let mut back = 99;
        assert_eq!(unsafe { st_presence_type_parse(name.as_ptr(), &mut back) }, st_status::Ok);
        assert_eq!(back, t, "{name:?}");
    }
    assert!(st_presence_type_name(7).is_null());
    let mut t = 99;
    assert_eq!(unsafe { st_presence_type_parse(null(), &mut t) }, st_status::Ok);
    assert_eq!(t, ST_PRESENCE_TYPE_AVAILABLE);
    assert_eq!(unsafe { st_presence_type_parse(c"error".as_ptr(), &mut t) }, st_status::UnknownName);
    assert_eq!(
        unsafe { CStr::from_ptr(st_subscription_name(ST_SUBSCRIPTION_NONE_PENDING_IN)) },
        c"none+pending-in"
    );
    assert!(st_subscription_name(9).is_null());
}

#[test]
fn is_trusted_n_answers_as_is_trusted_from_a_counted_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut e = null_mut();
    let last_error = || {
        let mut buf = [0 as c_char; 128];
        let mut n = 0;
        assert_eq!(unsafe { st_last_error(buf.as_mut_ptr(), buf.len(), &mut n) }, st_status::Ok);
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_string()
    };
    unsafe {
        assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
        let mut out = null_mut();
        assert_eq!(
            st_engine_inbound(e, c"b.lit".as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
            st_status::Ok
        );
        st_actions_free(out);
        assert_eq!(st_engine_approve(e, c"b.lit".as_ptr(), &mut out), st_status::Ok);
        st_actions_free(out);
        // Names inside a larger buffer, not NUL-terminated where they end.
        let buf = b"b.litc.litB.LIT";
        for (range, want) in [(0..5, true), (5..10, false), (10..15, true), (0..4, false)] {
            let name = &buf[range.clone()];
            let (mut t, mut t_n) = (!want, !want);
            let c = CString::new(name).unwrap();
            assert_eq!(st_is_trusted(e, c.as_ptr(), null(), &mut t), st_status::Ok);
            assert_eq!(st_is_trusted_n(e, name.as_ptr().cast(), name.len(), &mut t_n), st_status::Ok);
            assert_eq!((t, t_n), (want, want), "{:?}", std::str::from_utf8(name));
        }
        // Failures set their status and st_last_error, never a stale message.
        let mut t = true;
        assert_eq!(st_is_trusted_n(e, [0xffu8, 0xfe].as_ptr().cast(), 2, &mut t), st_status::InvalidUtf8);
        assert!(last_error().contains("UTF-8"), "{}", last_error());
        assert_eq!(st_is_trusted_n(e, null(), 0, &mut t), st_status::NullParameter);
        assert!(last_error().to_lowercase().contains("null"), "{}", last_error());
        assert_eq!(st_is_trusted_n(e, c"b.lit".as_ptr(), usize::MAX, &mut t), st_status::OutOfRange);
        assert!(last_error().contains("out of range"), "{}", last_error());
        assert_eq!(st_is_trusted_n(null(), c"b.lit".as_ptr(), 5, &mut t), st_status::NullParameter);
        assert_eq!(st_is_trusted_n(e, c"b.lit".as_ptr(), 5, null_mut()), st_status::NullParameter);
        assert!(t, "out untouched on error");
        st_engine_free(e);
    }
}

/// The five trust checks (`Engine::is_trusted`, `is_trusted_bytes`, `st_is_trusted` with and
/// without a scope, `st_is_trusted_n`) agree on every spelling: the normal-form fast path
/// must not miss a peer written another way, nor trust what normalises to a stranger.
#[test]
fn trust_checks_agree_on_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut e = null_mut();
    unsafe {
        assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
        let mut out = null_mut();
        for (peer, approve) in [(c"b.lit", true), (c"b\xc3\xbccher.de", true), (c"pending.lit", false)] {
            assert_eq!(
                st_engine_inbound(e, peer.as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
                st_status::Ok
            );
            st_actions_free(out);
            if approve {
                assert_eq!(st_engine_approve(e, peer.as_ptr(), &mut out), st_status::Ok);
                st_actions_free(out);
            }
        }
        let engine = &(*e).engine;
        let names: [(&[u8], bool); 14] = [
            (b"b.lit", true),
            (b"B.LIT", true),
            (b"b.lit.", true),
            (b"b\xef\xbd\xa1lit", true), // halfwidth ideographic full stop
            ("bücher.de".as_bytes(), true),
            (b"xn--bcher-kva.de", true),
            (b"XN--BCHER-KVA.DE", true),
            ("BÜCHER.de".as_bytes(), true),
            (b"pending.lit", false),
            (b"PENDING.LIT", false),
            (b"stranger-with-a-long-name.example.net", false),
            (b"xn--zz.lit", false),
            (b"alice@b.lit", false),
            (b"b.lit/resource", false),
        ];
        for (name, want) in names {
            let text = std::str::from_utf8(name).unwrap();
            let c = CString::new(name).unwrap();
            let (mut t, mut t_n, mut t_scoped) = (!want, !want, true);
            assert_eq!(st_is_trusted(e, c.as_ptr(), null(), &mut t), st_status::Ok);
            assert_eq!(st_is_trusted_n(e, name.as_ptr().cast(), name.len(), &mut t_n), st_status::Ok);
            assert_eq!(st_is_trusted(e, c.as_ptr(), c"no-such-group".as_ptr(), &mut t_scoped), st_status::Ok);
            let got = (engine.is_trusted(text, None), engine.is_trusted_bytes(name), t, t_n, t_scoped);
            assert_eq!(got, (want, Some(want), want, want, false), "{text:?}");
        }
        // Not UTF-8, on the fast path's side of the check too: a status, not an answer.
        for bad in [&b"b.li\xff"[..], b"\xc3", b"b\xc3.lit"] {
            let (c, mut t) = (CString::new(bad).unwrap(), true);
            assert_eq!(st_is_trusted(e, c.as_ptr(), null(), &mut t), st_status::InvalidUtf8, "{bad:?}");
            assert_eq!(st_is_trusted_n(e, bad.as_ptr().cast(), bad.len(), &mut t), st_status::InvalidUtf8);
            assert_eq!(engine.is_trusted_bytes(bad), None);
            assert!(t, "out untouched on error");
        }
        st_engine_free(e);
    }
}

/// A C host's approve after a CLI deny is refused with its own status, and the message names
/// the deny, who recorded it and when (issue 14, defect 1).
#[test]
fn an_approve_after_a_recorded_deny_is_already_decided() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut e = null_mut();
    let mut out = null_mut();
    unsafe {
        assert_eq!(st_engine_open(root.as_ptr(), c"a.lit".as_ptr(), null(), &mut e), st_status::Ok);
        assert_eq!(
            st_engine_inbound(e, c"b.lit".as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
            st_status::Ok
        );
        st_actions_free(out);
        let store = crate::admin::open_store(dir.path(), Some("a.lit")).unwrap();
        let peer = crate::Domain::new("b.lit").unwrap();
        crate::admin::decide(&store, &peer, crate::store::Decision::Deny, crate::Actor::Cli).unwrap();
        out = null_mut();
        assert_eq!(st_engine_approve(e, c"b.lit".as_ptr(), &mut out), st_status::AlreadyDecided);
        assert!(out.is_null());
        let msg = last_error();
        assert!(msg.starts_with("b.lit: `deny` by cli at "), "{msg}");
        st_engine_free(e);
    }
}

#[test]
fn federation_group_lets_an_approved_peer_in_the_group_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = CString::new(dir.path().to_str().unwrap()).unwrap();
    let (mut e, mut out, mut yes) = (null_mut(), null_mut(), false);
    unsafe {
        let s = st_engine_open_federated(
            root.as_ptr(),
            c"a.lit".as_ptr(),
            null(),
            ST_FEDERATION_BUDDIES,
            c"federate".as_ptr(),
            &mut e,
        );
        assert_eq!(s, st_status::Ok);
        assert_eq!(
            st_engine_inbound(e, c"b.lit".as_ptr(), ST_PRESENCE_TYPE_SUBSCRIBE, null(), &mut out),
            st_status::Ok
        );
        st_actions_free(out);
        assert_eq!(st_engine_approve(e, c"b.lit".as_ptr(), &mut out), st_status::Ok);
        st_actions_free(out);
        assert_eq!(st_engine_federates_with(e, c"b.lit".as_ptr(), false, &mut yes), st_status::Ok);
        assert!(!yes, "approved but not in the group");
        (*e).engine.set_groups("b.lit", vec!["federate".into()], crate::engine::Actor::Api).unwrap();
        assert_eq!(st_engine_federates_with(e, c"b.lit".as_ptr(), false, &mut yes), st_status::Ok);
        assert!(yes, "approved and in the group");
        let bad = [0xffu8, 0];
        assert_eq!(st_engine_federates_with(e, bad.as_ptr().cast(), true, &mut yes), st_status::InvalidUtf8);
        st_engine_free(e);
    }
}
