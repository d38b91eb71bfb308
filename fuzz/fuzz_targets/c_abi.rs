//! C ABI call sequences on one engine: arbitrary calls with arbitrary (possibly NULL, non
//! UTF-8, out-of-range) arguments return a status and never crash; trust never appears
//! without an admin act (approve, or request, which pre-approves) in the sequence;
//! `st_is_trusted_n` answers as `st_is_trusted` for the same bytes, and never trusts a name
//! holding a NUL.
#![no_main]
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::ptr::{null, null_mut};

use libfuzzer_sys::fuzz_target;
use server_trust::ffi::*;

fn arg(bytes: &[u8]) -> Option<CString> {
    CString::new(bytes.iter().copied().filter(|b| *b != 0).take(64).collect::<Vec<u8>>()).ok()
}

/// The store root, made once per process and removed at exit. On tmpfs when there is one
/// (`FUZZ_STORE_DIR` overrides): every act writes the store's way (temp file, fsync, rename,
/// fsync of the folder), and on this machine's disk those fsyncs were most of each run's time.
/// The same code runs; only the fsyncs cost nothing here.
fn root() -> &'static CString {
    static ROOT: OnceLock<CString> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::var_os("FUZZ_STORE_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix("server-trust-fuzz-c_abi-")
            .tempdir_in(&base)
            .or_else(|_| tempfile::tempdir())
            .unwrap()
            .keep();
        // libFuzzer ends with exit(), which runs no destructors: remove the root from an
        // atexit handler, or each run would leave up to 1024 host folders in RAM.
        extern "C" fn remove_root() {
            if let Some(r) = ROOT.get() {
                let _ = std::fs::remove_dir_all(r.to_str().unwrap());
            }
        }
        unsafe { libc::atexit(remove_root) };
        CString::new(dir.to_str().unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let mut opts = st_options_default();
    opts.watch = false;
    let mut e = null_mut();
    // A fresh host per input, so inputs do not depend on each other.
    let host = CString::new(format!("h{}.lit", data.len())).unwrap();
    let _ = std::fs::remove_dir_all(std::path::Path::new(root.to_str().unwrap()).join(host.to_str().unwrap()));
    assert_eq!(unsafe { st_engine_open(root.as_ptr(), host.as_ptr(), &opts, &mut e) }, st_status::Ok);
    let mut approved = false;
    for chunk in data.chunks(8).take(32) {
        let (op, rest) = chunk.split_first().unwrap_or((&0, &[]));
        let peer = arg(rest);
        let p = if op & 0x80 != 0 { null() } else { peer.as_ref().map_or(null(), |c| c.as_ptr()) };
        let mut acts = null_mut();
        let st = unsafe {
            match op % 9 {
                0 => st_engine_inbound(e, p, u32::from(*rest.first().unwrap_or(&0)) % 9, null(), &mut acts),
                // A request pre-approves the peer's reciprocal subscribe (an admin act too).
                1 => { approved = true; st_engine_request(e, p, &mut acts) }
                2 => { approved = true; st_engine_approve(e, p, &mut acts) }
                3 => st_engine_deny(e, p, &mut acts),
                4 => st_engine_revoke(e, p, &mut acts),
                5 => st_engine_poll(e, &mut acts),
                // The counted variant must answer as the NUL-terminated one for the same name,
                // and take any bytes (NULs, non-UTF-8): ASan catches a read past them.
                6 => {
                    let mut t = false;
                    let st = st_is_trusted(e, p, null(), &mut t);
                    let np = if op & 0x80 != 0 { null() } else { rest.as_ptr().cast() };
                    let mut tn = false;
                    let stn = st_is_trusted_n(e, np, rest.len(), &mut tn);
                    assert_ne!(stn, st_status::Panic);
                    if !rest.contains(&0) {
                        assert_eq!((stn, tn), (st, t), "st_is_trusted_n vs st_is_trusted on {rest:?}");
                    } else {
                        // A name holding a NUL is never a domain: never trusted, not cut at the NUL.
                        assert!(!tn, "trusted with a NUL: {rest:?}");
                    }
                    st
                }
                7 => { let mut s = 0; st_engine_state(e, p, &mut s) }
                _ => { let (mut n, mut d) = (0, 0); st_transition(u32::from(rest.first().copied().unwrap_or(0)), u32::from(rest.get(1).copied().unwrap_or(0)), u32::from(rest.get(2).copied().unwrap_or(0)), &mut n, &mut d) }
            }
        };
        assert_ne!(st, st_status::Panic, "op {op}");
        for i in 0..unsafe { st_actions_len(acts) } {
            let mut a = std::mem::MaybeUninit::<st_action>::uninit();
            assert_eq!(unsafe { st_actions_get(acts, i, a.as_mut_ptr()) }, st_status::Ok);
            let a = unsafe { a.assume_init() };
            if a.kind == ST_ACTION_TRUST_CHANGED && a.trusted {
                assert!(approved, "trust without an approval call");
            }
        }
        unsafe { st_actions_free(acts) };
    }
    unsafe { st_engine_free(e) };
});
