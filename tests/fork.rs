//! Prosody daemonizes (fork) after loading modules: the engine's inotify thread stays in the
//! parent. The child's poll() must still see decisions. One test per binary, so the fork
//! happens with no other test thread holding locks.

use server_trust::store::Decision;
use server_trust::{Action, Actor, Config, Domain, Engine, PresenceKind, Store};

#[test]
fn poll_sees_decisions_after_fork() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), "capulet.lit", Config::default()).unwrap();
    e.poll().unwrap();
    e.inbound("montague.lit", PresenceKind::Subscribe, None).unwrap();
    e.poll().unwrap();
    assert!(e.poll().unwrap().is_empty());
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child: another process (the CLI) approves; the child's poll must act on it.
        let store = Store::open(dir.path(), &Domain::new("capulet.lit").unwrap()).unwrap();
        store.set_decision(&Domain::new("montague.lit").unwrap(), Decision::Approve, Actor::Cli).unwrap();
        let mut ok = false;
        for _ in 0..200 {
            let acts = e.poll().unwrap_or_default();
            if acts.iter().any(|a| matches!(a, Action::Send { kind: PresenceKind::Subscribed, .. })) {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child never saw the approval (status {status})"
    );
}
