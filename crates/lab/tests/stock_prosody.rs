//! Self-test of the Prosody lab against STOCK Prosody (no mod_server_trust): proves real s2s
//! between the two lab servers works, and shows the stock behaviour mod_server_trust must
//! override: a server auto-approves ANY subscription request addressed to its host JID.

use std::time::{Duration, Instant};

use server_trust_lab::{Lab, LabOptions};

const T: Duration = Duration::from_secs(10);

#[test]
fn stock_prosody_auto_approves_host_subscription_over_s2s() {
    let t0 = Instant::now();
    let lab = Lab::start(LabOptions::default());
    eprintln!("lab started in {:?} ({} / {})", t0.elapsed(), lab.montague.ip, lab.capulet.ip);
    assert!(lab.montague.is_running() && lab.capulet.is_running());

    let out = lab.montague.shell("lab:ping()");
    assert!(out.status.success(), "lab:ping() failed: {out:?}");

    lab.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='x1'/>");

    // montague recorded what it sent over s2s
    let sent = lab.montague.wait_for("montague sent subscribe x1", T, |s| {
        s.dir == "out" && s.id.as_deref() == Some("x1") && s.is_type("subscribe")
    });
    assert_eq!(sent.to.as_deref(), Some("capulet.lit"));

    // capulet received it over s2s, as a presence to its host JID
    let got = lab.capulet.wait_for("capulet receives subscribe x1 over s2s", T, |s| {
        s.dir == "in" && s.id.as_deref() == Some("x1") && s.is_type("subscribe")
    });
    assert_eq!(got.origin_type, "s2sin", "{}", got.summary());
    assert_eq!(got.origin_from_host.as_deref(), Some("montague.lit"));
    assert_eq!(got.event, "presence/host");
    assert_eq!(got.from.as_deref(), Some("montague.lit"));
    assert_eq!(got.to.as_deref(), Some("capulet.lit"));

    // stock capulet auto-approves: 'subscribed' (same id) goes back to montague
    let back = lab.capulet.wait_for("capulet sends subscribed x1", T, |s| {
        s.dir == "out" && s.id.as_deref() == Some("x1") && s.is_type("subscribed")
    });
    assert_eq!(back.to.as_deref(), Some("montague.lit"));
    let reply = lab.montague.wait_for("montague receives subscribed x1", T, |s| {
        s.dir == "in" && s.id.as_deref() == Some("x1") && s.is_type("subscribed")
    });
    assert!(reply.via_s2s(), "{}", reply.summary());
    assert_eq!(reply.from.as_deref(), Some("capulet.lit"));
    assert_eq!(reply.to.as_deref(), Some("montague.lit"));
    eprintln!("subscribe -> subscribed round trip {:.3}s (prosody clocks)", reply.t - sent.t);

    // Nothing unexpected: capulet never receives an 'unsubscribed' for this request.
    lab.capulet.assert_none_for(
        Duration::from_millis(200),
        |s| s.is_type("unsubscribed"),
        "stock server must not deny",
    );

    // A local message (like an admin notification) is recorded too (origin "local").
    lab.capulet.inject(
        "<message from='capulet.lit' to='admin@capulet.lit' type='chat' id='m1'><body>hello admin</body></message>",
    );
    let m = lab.capulet.wait_for("local message to admin", T, |s| s.id.as_deref() == Some("m1"));
    assert_eq!(m.origin_type, "local");
    assert_eq!(m.body.as_deref(), Some("hello admin"));

    // inject() rejects a non-local 'from'
    let out = lab.montague.shell("lab:send([[<presence from='capulet.lit' to='montague.lit'/>]])");
    assert!(!out.status.success(), "non-local from must fail: {out:?}");

    // restart keeps the record file and s2s comes back
    let t1 = Instant::now();
    lab.capulet.restart();
    eprintln!("capulet restart took {:?}", t1.elapsed());
    assert!(lab.capulet.is_running());
    lab.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='x2'/>");
    lab.montague.wait_for("subscribed x2 after capulet restart", T, |s| {
        s.dir == "in" && s.id.as_deref() == Some("x2") && s.is_type("subscribed")
    });

    let t2 = Instant::now();
    drop(lab);
    eprintln!("lab stopped in {:?}", t2.elapsed());
}

/// Several labs at once in one process get distinct address pairs and do not interfere.
#[test]
fn two_labs_in_parallel() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::start(LabOptions::default()));
        let b = s.spawn(|| Lab::start(LabOptions::default()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let ips = [&a.montague.ip, &a.capulet.ip, &b.montague.ip, &b.capulet.ip];
    for (i, x) in ips.iter().enumerate() {
        assert!(x.starts_with("127."), "{x}");
        for y in &ips[i + 1..] {
            assert_ne!(x, y);
        }
    }
    a.montague.inject("<presence from='montague.lit' to='capulet.lit' type='subscribe' id='pa'/>");
    b.capulet.inject("<presence from='capulet.lit' to='montague.lit' type='subscribe' id='pb'/>");
    a.montague
        .wait_for("lab a: subscribed pa", T, |s| s.id.as_deref() == Some("pa") && s.is_type("subscribed"));
    b.capulet
        .wait_for("lab b: subscribed pb", T, |s| s.id.as_deref() == Some("pb") && s.is_type("subscribed"));
    // no cross-talk
    assert!(b.capulet.received().iter().all(|s| s.id.as_deref() != Some("pa")));
    assert!(a.montague.received().iter().all(|s| s.id.as_deref() != Some("pb")));
}
