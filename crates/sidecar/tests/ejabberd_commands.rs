//! The admin acts as ejabberd commands (mod_server_trust_commands.erl), against real parts:
//! ejabberd 23.01 with the module (`admin_token_file` set), this sidecar, and Prosody peers
//! over s2s (crates/lab/src/ejabberd.rs). Driven through `ejabberdctl` (the lab's ctl wrapper)
//! and through mod_http_api with an OAuth token of `admin@verona.lit` (scope `ejabberd:admin`,
//! the lab's api_permissions for the commands tagged `server_trust`).
//!
//! Every `ejabberdctl` and `curl` line of the README section "Admin commands (ejabberdctl,
//! mod_http_api)" is one of the constants below, and `readme_shows_only_commands_run_here`
//! fails when the README shows one that is not.

use std::fs;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server_trust_lab::ejabberd::{
    Ejabberd, EjabberdCluster, EjabberdLab, EjabberdOptions, HttpReply, VERONA,
};
use server_trust_lab::{MONTAGUE, Stanza, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);

// Prosody peers of the lab (montague.lit is always there).
const CAPULET: &str = "capulet.lit"; // verona's admin asks it (server_trust_request)
const TYBALT: &str = "tybalt.lit"; // denied through mod_http_api
const ROMEO: &str = "romeo.lit"; // the error cases

// The README's commands, exactly as shown there.
const PENDING: &str = "ejabberdctl server_trust_pending verona.lit";
const APPROVE: &str = "ejabberdctl server_trust_approve verona.lit montague.lit";
const SHOW: &str = "ejabberdctl server_trust_show verona.lit montague.lit";
const SET_GROUPS: &str = "ejabberdctl server_trust_set_groups verona.lit montague.lit incidents,ops";
const GROUPS: &str = "ejabberdctl server_trust_groups verona.lit montague.lit";
const LOG: &str = "ejabberdctl server_trust_log verona.lit montague.lit 10";
const LIST: &str = "ejabberdctl server_trust_list verona.lit";
const REVOKE: &str = "ejabberdctl server_trust_revoke verona.lit montague.lit";
const REQUEST: &str = "ejabberdctl server_trust_request verona.lit capulet.lit";
const HELP: &str = "ejabberdctl help server_trust_approve";
const HELP_TAG: &str = "ejabberdctl help server_trust";
const ISSUE_TOKEN: &str = "ejabberdctl oauth_issue_token admin@verona.lit 3600 ejabberd:admin";
const CURL_PENDING: &str = "curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"host\":\"verona.lit\"}' http://127.0.0.1:5280/api/server_trust_pending";
const CURL_DENY: &str = "curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"host\":\"verona.lit\",\"peer\":\"tybalt.lit\"}' http://127.0.0.1:5280/api/server_trust_deny";
const CURL_LOG: &str = "curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"host\":\"verona.lit\",\"peer\":\"tybalt.lit\",\"limit\":10}' http://127.0.0.1:5280/api/server_trust_log";
/// The README's example of a refusal (approving a peer that has not asked).
const REFUSAL: &str = "Error: conflict: sidecar answered 409: no pending request from romeo.lit";
const README_COMMANDS: &[&str] = &[
    PENDING,
    APPROVE,
    SHOW,
    SET_GROUPS,
    GROUPS,
    LOG,
    LIST,
    REVOKE,
    REQUEST,
    HELP,
    HELP_TAG,
    ISSUE_TOKEN,
    CURL_PENDING,
    CURL_DENY,
    CURL_LOG,
];

/// A lab of its own for each test (they compare whole store snapshots, and one stops the
/// sidecar), with the admin commands on and the Prosody peers of this file.
fn lab() -> EjabberdLab {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.admin_commands = true;
    o.prosody_hosts = [CAPULET, TYBALT, ROMEO].map(String::from).to_vec();
    EjabberdLab::start(o)
}

/// Runs a README line `ejabberdctl ARGS...` (words split on spaces) with the lab's wrapper.
fn ctl_line(lab: &EjabberdLab, line: &str) -> Output {
    let args: Vec<&str> =
        line.strip_prefix("ejabberdctl ").expect("an ejabberdctl line").split(' ').collect();
    lab.ejabberd.ctl(&args)
}

/// A README line that must succeed; its stdout parsed as JSON.
fn ctl_json(lab: &EjabberdLab, line: &str) -> Value {
    let out = ctl_line(lab, line);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{line} failed ({}): {text} {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        lab.diagnostics()
    );
    eprintln!("$ {line}\n{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{line} printed no JSON ({e}): {text:?}"))
}

/// The CLI's `--json` answer on the sidecar's store (what the commands must match).
fn cli_json(lab: &EjabberdLab, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&lab.sidecar.cli_text(&all)).unwrap()
}

/// A README `curl` line run by `sh` with `$TOKEN` set, against the lab's mod_http_api
/// address instead of 127.0.0.1; the reply's status and body.
fn curl_line(lab: &EjabberdLab, line: &str, token: &str) -> HttpReply {
    let here = format!("http://{}:5280/", lab.ejabberd.ip);
    let cmd = line.replace("http://127.0.0.1:5280/", &here).replacen(
        "curl -s ",
        "curl -s -w '\\n%{http_code}' ",
        1,
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).env("TOKEN", token).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or_else(|| panic!("{cmd}: {text:?}"));
    HttpReply { status: code.parse().unwrap_or(0), body: body.to_string() }
}

/// mod_http_api's answer for a string result: `{"res": "<the sidecar's JSON>"}`.
fn api_json(r: &HttpReply) -> Value {
    assert_eq!(r.status, 200, "{r:?}");
    let outer: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    serde_json::from_str(outer["res"].as_str().unwrap_or_else(|| panic!("no res: {r:?}"))).unwrap()
}

fn from_verona<'a>(host: &'a str, typ: &'a str) -> impl Fn(&Stanza) -> bool + 'a {
    let p = presence_from(VERONA, typ);
    move |s: &Stanza| s.host == host && p(s)
}

fn count(lab: &EjabberdLab, pred: impl Fn(&Stanza) -> bool) -> usize {
    lab.prosody().received().iter().filter(|s| pred(s)).count()
}

fn wait_trusted(lab: &EjabberdLab, peer: &str, scope: Option<&str>, want: bool) {
    let t0 = Instant::now();
    while lab.ejabberd.is_trusted(peer, scope) != want {
        assert!(t0.elapsed() < T, "is_trusted({peer}, {scope:?}) stayed {}\n{}", !want, lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
    }
}

/// The audit records of `peer` (the store's audit.log, JSON lines).
fn audit_of(lab: &EjabberdLab, peer: &str) -> Vec<Value> {
    fs::read_to_string(lab.sidecar.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["peer"] == peer)
        .collect()
}

#[test]
fn ejabberdctl_lists_approves_shows_groups_logs_revokes_and_requests() {
    let lab = lab();
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MONTAGUE, T);

    // pending: the CLI's words and shape.
    let pending = ctl_json(&lab, PENDING);
    assert_eq!(pending, cli_json(&lab, &["pending"]), "{pending}");
    assert!(pending.to_string().contains(MONTAGUE), "{pending}");
    assert_eq!(count(&lab, from_verona(MONTAGUE, "subscribed")), 0, "answered before the decision");

    // approve: the peer gets subscribed (and our subscribe) over s2s.
    let done = ctl_json(&lab, APPROVE);
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["act"], "approve", "{done}");
    assert_eq!(done["peer"], MONTAGUE, "{done}");
    p.wait_for("subscribed from verona.lit", T, from_verona(MONTAGUE, "subscribed"));
    p.wait_for("subscribe from verona.lit", T, from_verona(MONTAGUE, "subscribe"));
    lab.sidecar.wait_state(MONTAGUE, "both", T);
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    wait_trusted(&lab, MONTAGUE, None, true);
    lab.ejabberd.wait_log("the approve, by ejabberdctl", T, |l| {
        l.contains("mod_server_trust (verona.lit): approve montague.lit by ejabberdctl")
    });

    // show, list: as the CLI.
    let show = ctl_json(&lab, SHOW);
    assert_eq!(show, cli_json(&lab, &["show", MONTAGUE]), "{show}");
    assert_eq!(show["entry"]["state"], "both", "{show}");
    let list = ctl_json(&lab, LIST);
    assert_eq!(list, cli_json(&lab, &["list"]), "{list}");

    // groups: set, then get; the scope reaches is_trusted/3 inside ejabberd.
    let set = ctl_json(&lab, SET_GROUPS);
    assert_eq!(set, json!({"peer": MONTAGUE, "groups": ["incidents", "ops"]}), "{set}");
    assert_eq!(ctl_json(&lab, GROUPS), set);
    assert_eq!(cli_json(&lab, &["groups", MONTAGUE]), set);
    wait_trusted(&lab, MONTAGUE, Some("ops"), true);

    // log: who decided (actor ejabberdctl, which the module names to the sidecar), as the CLI tells it.
    let log = ctl_json(&lab, LOG);
    assert_eq!(log, cli_json(&lab, &["log", "--peer", MONTAGUE, "--limit", "10"]), "{log}");
    let approve =
        log.as_array().unwrap().iter().find(|r| r["event"] == "approve").expect("an approve record");
    assert_eq!(approve["actor"], "ejabberdctl", "{log}");
    // "" for every peer, 0 for the CLI's default of 50 records.
    let all: Value =
        serde_json::from_str(&lab.ejabberd.ctl_ok(&["server_trust_log", VERONA, "", "0"])).unwrap();
    assert_eq!(all, cli_json(&lab, &["log"]), "{all}");

    // revoke: unsubscribed over s2s, untrusted at once.
    let before = count(&lab, from_verona(MONTAGUE, "unsubscribed"));
    let done = ctl_json(&lab, REVOKE);
    assert_eq!((done["ok"].clone(), done["act"].clone()), (json!(true), json!("revoke")), "{done}");
    p.wait_for("unsubscribed from verona.lit", T, |s| {
        from_verona(MONTAGUE, "unsubscribed")(s)
            && count(&lab, from_verona(MONTAGUE, "unsubscribed")) > before
    });
    wait_trusted(&lab, MONTAGUE, None, false);
    let revoked = audit_of(&lab, MONTAGUE);
    assert!(
        revoked
            .iter()
            .any(|r| r["event"].as_str().unwrap_or_default().starts_with("revoke")
                && r["actor"] == "ejabberdctl"),
        "{revoked:?}"
    );

    // request: verona.lit asks capulet.lit, whose admin is prompted.
    let done = ctl_json(&lab, REQUEST);
    assert_eq!((done["ok"].clone(), done["act"].clone()), (json!(true), json!("request")), "{done}");
    p.wait_for("subscribe from verona.lit to capulet.lit", T, from_verona(CAPULET, "subscribe"));
    let theirs = p.admin(CAPULET).cli_text(&["--json", "pending"]);
    assert!(theirs.contains(VERONA), "capulet.lit's admin has no request from verona.lit: {theirs}");

    // A name beyond ASCII, spelt as the engine does not: the answer names it as the CLI does.
    let idn = ctl_json(&lab, "ejabberdctl server_trust_show verona.lit BÜCHER.lit.");
    assert_eq!(idn, cli_json(&lab, &["show", "bücher.lit"]), "{idn}");
    // And in a refusal (characters beyond Latin-1 too).
    for peer in ["bücher.lit", "例え.テスト"] {
        let out = lab.ejabberd.ctl(&["server_trust_approve", VERONA, peer]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert_eq!(
            text.trim(),
            format!("Error: conflict: sidecar answered 409: no pending request from {peer}")
        );
    }

    // help documents the commands.
    let help = String::from_utf8_lossy(&ctl_line(&lab, HELP).stdout).into_owned();
    assert!(help.contains("Approve PEER's pending request") && help.contains("server_trust"), "{help}");
    let help = String::from_utf8_lossy(&ctl_line(&lab, HELP_TAG).stdout).into_owned();
    for cmd in
        ["list", "pending", "show", "request", "approve", "deny", "revoke", "groups", "set_groups", "log"]
    {
        assert!(help.contains(&format!("server_trust_{cmd}")), "{HELP_TAG} lacks server_trust_{cmd}: {help}");
    }
}

#[test]
fn mod_http_api_denies_and_refuses_a_second_decision() {
    let lab = lab();
    let p = lab.prosody();
    let token = lab.ejabberd.ctl_ok(&ISSUE_TOKEN.split(' ').skip(1).collect::<Vec<_>>());
    let token = token.split('\t').next().unwrap().trim().to_string();
    p.admin(TYBALT).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(TYBALT, T);

    // The sidecar's own OAuth token (scopes send_stanza, send_message) may not decide.
    let sidecar_token = fs::read_to_string(&lab.sidecar.api_token_file).unwrap();
    let r = lab.ejabberd.api(
        "server_trust_deny",
        sidecar_token.trim(),
        r#"{"host":"verona.lit","peer":"tybalt.lit"}"#,
    );
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    assert!(lab.sidecar.wait_pending(TYBALT, T).contains("decision = \"pending\""));

    let pending = api_json(&curl_line(&lab, CURL_PENDING, &token));
    assert_eq!(pending, cli_json(&lab, &["pending"]));
    assert!(pending.to_string().contains(TYBALT), "{pending}");

    let done = api_json(&curl_line(&lab, CURL_DENY, &token));
    assert_eq!((done["ok"].clone(), done["act"].clone()), (json!(true), json!("deny")), "{done}");
    p.wait_for("unsubscribed from verona.lit", T, from_verona(TYBALT, "unsubscribed"));
    lab.ejabberd.wait_log("the deny, by mod_http_api", T, |l| {
        l.contains("mod_server_trust (verona.lit): deny tybalt.lit by mod_http_api")
    });

    // Approve after the deny: 409 with the sidecar's message; nothing changes, nothing sent.
    let store = lab.sidecar.store_snapshot();
    let r = lab.ejabberd.api("server_trust_approve", &token, r#"{"host":"verona.lit","peer":"tybalt.lit"}"#);
    assert_eq!(r.status, 409, "{r:?}");
    let err: Value = serde_json::from_str(&r.body).unwrap();
    let msg = err["message"].as_str().unwrap_or_default();
    // The engine's "already decided": who decided first, and that nothing changed.
    assert!(msg.starts_with("sidecar answered 409: tybalt.lit: `deny` by http-api at "), "{r:?}");
    assert!(msg.ends_with(" came first (carried out); the first decision stands, nothing changed"), "{r:?}");
    assert_eq!(err["code"], 409, "{r:?}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.sidecar.store_snapshot(), store, "a refused approve changed the store");
    assert_eq!(count(&lab, from_verona(TYBALT, "subscribed")), 0);

    // The store lock held by another process (the CLI, an editor's tool). The sidecar never
    // waits for it: it answers 503 at once, and the command tries again for 1.5 s.
    p.admin(ROMEO).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(ROMEO, T);
    let approve_romeo = r#"{"host":"verona.lit","peer":"romeo.lit"}"#;
    let lock = fs::File::open(lab.sidecar.store.join(VERONA).join(".lock")).unwrap();
    // Held all along: a clear error within a few seconds, nothing done (httpc, which the
    // commands used first, sent the request again every second for as long as the lock was
    // held).
    lock.lock().unwrap();
    let t0 = Instant::now();
    let r = lab.ejabberd.api("server_trust_approve", &token, approve_romeo);
    let took = t0.elapsed();
    lock.unlock().unwrap();
    assert_eq!(r.status, 500, "{r:?}");
    let err: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(err["code"], 503, "{r:?}");
    assert!(
        err["message"].as_str().unwrap().starts_with("sidecar answered 503: the store is locked by "),
        "{r:?}"
    );
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "{took:?}");
    assert!(lab.sidecar.wait_pending(ROMEO, T).contains("decision = \"pending\""));
    // Held for a moment: tried again, and approved once the lock is free.
    lock.lock().unwrap();
    let held = thread::spawn(move || {
        thread::sleep(Duration::from_millis(700));
        drop(lock);
    });
    let t0 = Instant::now();
    let done = api_json(&lab.ejabberd.api("server_trust_approve", &token, approve_romeo));
    assert_eq!((done["ok"].clone(), done["act"].clone()), (json!(true), json!("approve")), "{done}");
    assert!(t0.elapsed() >= Duration::from_millis(600), "approved while the lock was held: {done}");
    held.join().unwrap();
    p.wait_for("subscribed from verona.lit to romeo.lit", T, from_verona(ROMEO, "subscribed"));

    // log over mod_http_api: the deny, actor http-api.
    let log = api_json(&curl_line(&lab, CURL_LOG, &token));
    assert_eq!(log, cli_json(&lab, &["log", "--peer", TYBALT, "--limit", "10"]));
    assert!(
        log.as_array().unwrap().iter().any(|r| r["event"] == "deny" && r["actor"] == "http-api"),
        "{log}"
    );
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let lab = lab();
    let store = lab.sidecar.store_snapshot();
    let err = |args: &[&str]| {
        let out = lab.ejabberd.ctl(args);
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "ejabberdctl {args:?} succeeded: {text}");
        eprintln!("$ ejabberdctl {}\n{text}", args.join(" "));
        text
    };
    // No request from romeo.lit: nothing to approve.
    let text = err(&["server_trust_approve", VERONA, ROMEO]);
    assert_eq!(text.trim(), REFUSAL);
    // Not a domain; a host the module does not serve; groups of a peer not in the roster.
    let text = err(&["server_trust_approve", VERONA, "romeo@romeo.lit"]);
    assert!(text.contains("sidecar answered 400"), "{text}");
    let text = err(&["server_trust_list", "elsinore.lit"]);
    assert!(text.contains("mod_server_trust does not run on elsinore.lit"), "{text}");
    let text = err(&["server_trust_set_groups", VERONA, ROMEO, "x"]);
    assert!(text.contains("sidecar answered 409"), "{text}");
    assert_eq!(lab.sidecar.store_snapshot(), store, "a refused command changed the store");

    // The hook token cannot approve: the same call with it in admin_token_file is refused.
    let admin = fs::read(&lab.ejabberd.admin_token_file).unwrap();
    fs::write(&lab.ejabberd.admin_token_file, fs::read(&lab.ejabberd.hook_token_file).unwrap()).unwrap();
    let text = err(&["server_trust_pending", VERONA]);
    assert!(text.contains("sidecar answered 403"), "{text}");
    // Two lines: refused before anything reaches a request header.
    fs::write(&lab.ejabberd.admin_token_file, "0123456789abcdef0123456789abcdef\r\nX-Evil: 1\n").unwrap();
    let text = err(&["server_trust_pending", VERONA]);
    assert!(text.contains("not one line of printable ASCII"), "{text}");
    fs::write(&lab.ejabberd.admin_token_file, admin).unwrap();

    // The sidecar down: an error naming it, not a crash; back up, the commands work again.
    lab.sidecar.stop();
    let text = err(&["server_trust_pending", VERONA]);
    lab.sidecar.start();
    assert!(text.contains("Error: sidecar_unavailable: cannot reach the sidecar at http://"), "{text}");
    assert!(text.contains(": econnrefused"), "{text}");
    ctl_json(&lab, PENDING);
}

/// The commands go through the one sidecar, so they act the same from every node: node 2
/// approves, node 1 revokes, both nodes' trust checks follow.
#[test]
fn every_node_of_a_cluster_runs_the_commands() {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.admin_commands = true;
    let c = EjabberdCluster::start(o);
    let keep = KeepOnPanic(&c);
    let p = c.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    c.sidecar.wait_pending(MONTAGUE, T);

    let pending: Vec<String> = c.nodes.iter().map(|n| n.ctl_ok(&["server_trust_pending", VERONA])).collect();
    assert_eq!(pending[0], pending[1]);
    assert!(pending[0].contains(MONTAGUE), "{pending:?}");
    let done: Value =
        serde_json::from_str(&c.nodes[1].ctl_ok(&["server_trust_approve", VERONA, MONTAGUE])).unwrap();
    assert_eq!(done["ok"], true, "{done}");
    p.admin(MONTAGUE).wait_state(VERONA, "both", T);
    for n in &c.nodes {
        wait_node_trusted(&c, n, true);
    }
    c.nodes[0].ctl_ok(&["server_trust_revoke", VERONA, MONTAGUE]);
    for n in &c.nodes {
        wait_node_trusted(&c, n, false);
    }
    drop(keep);
}

fn wait_node_trusted(c: &EjabberdCluster, n: &Ejabberd, want: bool) {
    let t0 = Instant::now();
    while n.is_trusted(MONTAGUE, None) != want {
        assert!(
            t0.elapsed() < T,
            "{}: is_trusted(montague.lit) stayed {}\n{}",
            n.node,
            !want,
            c.diagnostics()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Keeps the cluster's folder (logs) when the test fails.
struct KeepOnPanic<'a>(&'a EjabberdCluster);

impl Drop for KeepOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.keep_dir();
        }
    }
}

#[test]
fn readme_shows_only_commands_run_here() {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ejabberd/mod_server_trust/README.md"))
            .unwrap();
    let section = readme
        .split_once("Admin commands (ejabberdctl, mod_http_api)\n")
        .expect("README section \"Admin commands (ejabberdctl, mod_http_api)\"")
        .1;
    let mut shown = 0;
    let mut joined = String::new();
    for line in section.lines() {
        // A shell line continued with a backslash is one command.
        if let Some(part) = line.strip_suffix('\\') {
            joined.push_str(part.trim_start());
            continue;
        }
        let cmd = std::mem::take(&mut joined) + line.trim_start();
        let cmd = cmd.split("  #").next().unwrap().trim_end();
        if cmd.starts_with("ejabberdctl ") || cmd.starts_with("curl ") {
            shown += 1;
            assert!(README_COMMANDS.contains(&cmd), "the README shows a command no test runs: {cmd}");
        }
    }
    assert_eq!(
        shown,
        README_COMMANDS.len(),
        "the README shows {shown} commands, the tests run {}",
        README_COMMANDS.len()
    );
    assert!(section.contains(&format!("\n{REFUSAL}\n")), "the README's refusal is not {REFUSAL:?}");
}

/// Figures, not a test (`-- --ignored --nocapture`): how long a command takes through
/// mod_http_api and through ejabberdctl, against the sidecar's admin API called directly.
#[test]
#[ignore]
fn measure() {
    let lab = lab();
    let token = lab.ejabberd.issue_admin_api_token();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let time = |n: usize, f: &dyn Fn() -> u16| {
        median(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    assert_eq!(f(), 200);
                    t.elapsed()
                })
                .collect(),
        )
    };
    let direct = time(200, &|| lab.sidecar.admin_api("GET", "/v1/hosts/verona.lit/pending", "").status);
    let api =
        time(200, &|| lab.ejabberd.api("server_trust_pending", &token, r#"{"host":"verona.lit"}"#).status);
    let ctl = time(10, &|| if ctl_line(&lab, PENDING).status.success() { 200 } else { 500 });
    eprintln!("pending, median / p90 of 200 (ctl: 10) calls:");
    eprintln!("  sidecar admin API directly: {:?} / {:?}", direct.0, direct.1);
    eprintln!("  mod_http_api server_trust_pending: {:?} / {:?}", api.0, api.1);
    eprintln!("  ejabberdctl server_trust_pending: {:?} / {:?}", ctl.0, ctl.1);
}
