//! ejabberd benchmarks: a real ejabberd 23.01 (`verona.lit`) with mod_server_trust, the real
//! `server-trust-sidecar` and a real Prosody 0.12 (`montague.lit` plus one virtual host per
//! run) over s2s on loopback (`crates/lab/src/ejabberd.rs`). Figures are printed, never
//! asserted. Goals and latest figures: `benches/README.md`.
//!
//! ```text
//! cargo bench --bench ejabberd                      # all four
//! EJ_BENCH_RUNS=40 EJ_BENCH_EVENTS=20000 EJ_BENCH_N=50000 EJ_BENCH_ROUNDS=400 cargo bench --bench ejabberd
//! ```
//!
//! 1. approval latency: `server-trust approve PEER` on verona's store -> `subscribed` recorded
//!    by the Prosody host PEER over s2s (one distinct Prosody host per run, each with its own
//!    pending request), split at ejabberd's log line of the sidecar's `send_stanza` call.
//!    Each approval waits, as an admin does, until the request's evidence is recorded (its
//!    queries opened verona's stream to the peer: warm); then `EJ_BENCH_COLD` runs (default
//!    a quarter of `EJ_BENCH_RUNS`) on peers whose stream verona closed first, as its
//!    `s2s_timeout` (default 1 h idle) does: cold;
//! 2. hook events per second from inside the node: presences routed with
//!    `ejabberd_router:route/1` (the path an s2s stanza takes) through mod_server_trust's hook,
//!    its worker, HTTP, the sidecar and the engine, until the worker counted them delivered;
//!    and the same sidecar fed by an httpc keep-alive client inside the node;
//! 3. `mod_server_trust:is_trusted/2` vs a bare `ets:lookup/2` on the module's table, timed
//!    with `timer:tc` loops of a compiled helper inside the node, interleaved in rounds;
//! 4. the sidecar's resident memory idle and after each 10k events;
//! 5. buddies-only federation per stanza, in a second lab with `federation: buddies`
//!    (montague.lit approved both ways): (a) end to end, montague's Prosody writes N chat
//!    messages to juliet@verona.lit straight onto its established s2s stream, counted and
//!    dropped on verona by a helper hook on `s2s_receive_packet` that runs after the module's
//!    (first post -> last arrival, per stanza); (b) inside the node, `run_fold` of
//!    `s2s_receive_packet` and of `s2s_send_packet` for a message from / to a buddy. Each
//!    with the module's two s2s hooks in place (the policy) and deleted (no policy), in
//!    alternating rounds on the same node. Goal: (a) with the policy within 1.2x of without.
//!    `EJ_BENCH_ONLY=federation` runs this part alone; `EJ_BENCH_FED_N` (messages per round,
//!    default 5000), `EJ_BENCH_FED_ROUNDS` (default 8), `EJ_BENCH_FED_MICRO_N` (default 100000).

use std::collections::BTreeSet;
use std::fs;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use server_trust_lab::ejabberd::{self, EjabberdLab, EjabberdOptions, VERONA};
use server_trust_lab::stats::stats;
use server_trust_lab::{MONTAGUE, TrustAdmin};

const WAIT: Duration = Duration::from_secs(30);
/// Issue 16, item 5.
const GOAL_P95_MS: f64 = 25.0;
const GOAL_EVENTS_PER_S: f64 = 5_000.0;
const GOAL_TRUST_RATIO: f64 = 2.0;
const GOAL_RSS_MIB: f64 = 20.0;

/// The helper loaded into the node (compiled with the module's flags by the lab).
const HELPER: &str = r#"-module(st_bench).
-export([trust/4, route/4, http/5, fed_hooks/2, fed_micro/4, fed_reset/0, fed_count/0, count_in/1,
	 fed_counting/2]).
-include("xmpp.hrl").

loop_empty(0) -> ok;
loop_empty(N) -> loop_empty(N - 1).
loop_ets(_, _, 0) -> ok;
loop_ets(T, P, N) -> _ = ets:lookup(T, P), loop_ets(T, P, N - 1).
loop_trusted(_, _, 0) -> ok;
loop_trusted(H, P, N) -> _ = mod_server_trust:is_trusted(H, P), loop_trusted(H, P, N - 1).
loop_lookup(_, _, 0) -> ok;
loop_lookup(H, P, N) -> _ = mod_server_trust_sidecar:lookup(H, P), loop_lookup(H, P, N - 1).
loop_nameprep(_, 0) -> ok;
loop_nameprep(P, N) -> _ = jid:nameprep(P), loop_nameprep(P, N - 1).

%% ns per call of: an empty loop, ets:lookup on the module's table, is_trusted/2, the
%% module's table lookup alone (persistent_term + ets:lookup, no check of the name's form),
%% one jid:nameprep. Rounds rounds of N calls each, the loops one after the other in every
%% round (so a busy moment of the machine falls on all of them alike): the least time of
%% each, and the median over the rounds of that round's is_trusted / ets:lookup ratio
%% (empty loop subtracted).
trust(Host, Peer, N, Rounds) ->
	Tab = gen_mod:get_module_proc(Host, mod_server_trust_peers),
	Ns = fun(F) -> element(1, timer:tc(F)) * 1000 / N end,
	Rs = [{Ns(fun() -> loop_empty(N) end), Ns(fun() -> loop_ets(Tab, Peer, N) end),
	       Ns(fun() -> loop_trusted(Host, Peer, N) end), Ns(fun() -> loop_lookup(Host, Peer, N) end),
	       Ns(fun() -> loop_nameprep(Peer, N) end)} || _ <- lists:seq(1, Rounds)],
	Min = fun(I) -> lists:min([element(I, R) || R <- Rs]) end,
	Ratios = lists:sort([(T - E) / (L - E) || {E, L, T, _, _} <- Rs]),
	lists:flatten(io_lib:format("empty=~.1f ets=~.1f is_trusted=~.1f lookup=~.1f nameprep=~.1f "
		"median_ratio=~.2f result=~p ets_result=~p",
		[Min(1), Min(2), Min(3), Min(4), Min(5), lists:nth((length(Ratios) + 1) div 2, Ratios),
		 mod_server_trust:is_trusted(Host, Peer), ets:lookup(Tab, Peer) /= []])).

status(Host) -> mod_server_trust_sidecar:status(Host).

%% Routes N presences (available/unavailable in turn) from Peers distinct bare domains
%% <Prefix><i>.lit to the bare host JID, as ejabberd_s2s_in hands them to the router, then
%% waits until the worker has delivered all of them to the sidecar (202) or lost some.
route(Host, Prefix, N, Peers) ->
	S0 = status(Host),
	D0 = maps:get(delivered, S0), L0 = maps:get(lost, S0),
	To = jid:make(Host),
	T0 = erlang:monotonic_time(microsecond),
	lists:foreach(
	  fun(I) ->
		  From = jid:make(<<Prefix/binary, (integer_to_binary(I rem Peers))/binary, ".lit">>),
		  Type = case I rem 2 of 0 -> available; 1 -> unavailable end,
		  ejabberd_router:route(#presence{from = From, to = To, type = Type,
						  id = <<"b", (integer_to_binary(I))/binary>>})
	  end, lists:seq(1, N)),
	T1 = erlang:monotonic_time(microsecond),
	{D, L} = wait_done(Host, D0 + N, L0, erlang:monotonic_time(millisecond) + 600000),
	T2 = erlang:monotonic_time(microsecond),
	lists:flatten(io_lib:format("routed_us=~p done_us=~p delivered=~p lost=~p",
				    [T1 - T0, T2 - T0, D - D0, L - L0])).

wait_done(Host, Want, L0, Deadline) ->
	S = status(Host),
	D = maps:get(delivered, S), L = maps:get(lost, S),
	case D + (L - L0) >= Want orelse erlang:monotonic_time(millisecond) > Deadline of
		true -> {D, L};
		false -> timer:sleep(5), wait_done(Host, Want, L0, Deadline)
	end.

%% The sidecar's hook fed from inside the node by Conc processes over httpc keep-alive
%% connections (the module itself opens one connection per request, one at a time).
http(Url, Token, Host, N, Conc) ->
	Profile = st_bench_httpc,
	_ = inets:start(httpc, [{profile, Profile}]),
	ok = httpc:set_options([{max_sessions, Conc}, {max_keep_alive_length, 100000},
				{keep_alive_timeout, 60000}], Profile),
	Hdrs = [{"authorization", "Bearer " ++ binary_to_list(Token)}],
	Self = self(),
	Per = N div Conc,
	T0 = erlang:monotonic_time(microsecond),
	Pids = [spawn_link(fun() ->
		Bad = lists:foldl(
			fun(I, Acc) ->
				Body = iolist_to_binary(["{\"host\":\"", Host, "\",\"from\":\"k",
					integer_to_list(I rem 1000), ".lit\",\"type\":\"",
					case I rem 2 of 0 -> "available"; 1 -> "unavailable" end,
					"\",\"id\":\"k", integer_to_list(I), "\"}"]),
				case httpc:request(post, {Url ++ "/v1/hook/presence", Hdrs, "application/json", Body},
						   [{timeout, 30000}], [{body_format, binary}], Profile) of
					{ok, {{_, 202, _}, _, _}} -> Acc;
					_ -> Acc + 1
				end
			end, 0, lists:seq(C * Per, C * Per + Per - 1)),
		Self ! {done, self(), Bad} end) || C <- lists:seq(0, Conc - 1)],
	Bad = lists:sum([receive {done, P, B} -> B end || P <- Pids]),
	T1 = erlang:monotonic_time(microsecond),
	_ = inets:stop(httpc, Profile),
	lists:flatten(io_lib:format("events=~p us=~p failed=~p", [Per * Conc, T1 - T0, Bad])).

%% --- 5. federation ---
%% mod_server_trust's two s2s hooks in place (On: the policy) or deleted (no policy).
%% Deleted first either way, so the handlers are never in twice.
fed_hooks(Host, On) ->
	Hooks = [{s2s_receive_packet, on_s2s_receive_packet}, {s2s_send_packet, on_s2s_send_packet}],
	[ejabberd_hooks:delete(H, Host, mod_server_trust, F, 10) || {H, F} <- Hooks],
	[ejabberd_hooks:add(H, Host, mod_server_trust, F, 10) || On, {H, F} <- Hooks],
	ok.

%% The counting hook for the end-to-end runs: after the module's (priority 90), messages
%% with an id "fb-..." are counted (count, first and last arrival) and dropped.
fed_counting(Host, On) ->
	persistent_term:put(st_bench_fed, atomics:new(3, [{signed, true}])),
	Op = case On of true -> add; false -> delete end,
	ejabberd_hooks:Op(s2s_receive_packet, Host, ?MODULE, count_in, 90),
	ok.

count_in({#message{id = <<"fb-", _/binary>>}, State}) ->
	A = persistent_term:get(st_bench_fed),
	T = os:system_time(microsecond),
	atomics:add(A, 1, 1),
	_ = atomics:compare_exchange(A, 2, 0, T),
	atomics:put(A, 3, T),
	{stop, {drop, State}};
count_in(Acc) ->
	Acc.

fed_reset() ->
	A = persistent_term:get(st_bench_fed),
	[atomics:put(A, I, 0) || I <- [1, 2, 3]],
	"fedbench reset".

fed_count() ->
	A = persistent_term:get(st_bench_fed),
	lists:flatten(io_lib:format("got=~p first=~p last=~p", [atomics:get(A, 1), atomics:get(A, 2), atomics:get(A, 3)])).

loop_in(_, _, _, 0) -> ok;
loop_in(H, P, S, N) -> _ = ejabberd_hooks:run_fold(s2s_receive_packet, H, {P, S}, []), loop_in(H, P, S, N - 1).
loop_out(_, _, 0) -> ok;
loop_out(H, P, N) -> _ = ejabberd_hooks:run_fold(s2s_send_packet, H, P, []), loop_out(H, P, N - 1).

%% ns per run_fold of s2s_receive_packet (a message from romeo@Peer to juliet@Host) and of
%% s2s_send_packet (one back), without the module's hooks and with them, in Rounds rounds of
%% N each: the least of each, and the median of the rounds' ratios (with / without).
fed_micro(Host, Peer, N, Rounds) ->
	In = #message{from = jid:make(<<"romeo">>, Peer, <<>>), to = jid:make(<<"juliet">>, Host, <<>>),
		      type = chat, id = <<"fbm">>, body = [#text{data = <<"x">>}]},
	Out = #message{from = jid:make(<<"juliet">>, Host, <<>>), to = jid:make(<<"romeo">>, Peer, <<>>),
		       type = chat, id = <<"fbm">>, body = [#text{data = <<"x">>}]},
	State = #{lserver => Host, remote_server => Peer},
	Ns = fun(F) -> element(1, timer:tc(F)) * 1000 / N end,
	Rs = [begin
		      ok = fed_hooks(Host, false),
		      OffIn = Ns(fun() -> loop_in(Host, In, State, N) end),
		      OffOut = Ns(fun() -> loop_out(Host, Out, N) end),
		      ok = fed_hooks(Host, true),
		      OnIn = Ns(fun() -> loop_in(Host, In, State, N) end),
		      OnOut = Ns(fun() -> loop_out(Host, Out, N) end),
		      {OffIn, OffOut, OnIn, OnOut}
	      end || _ <- lists:seq(1, Rounds)],
	Min = fun(I) -> lists:min([element(I, R) || R <- Rs]) end,
	Med = fun(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)) end,
	%% Still a buddy, still passing: the checks answered true.
	{Passed, _} = ejabberd_hooks:run_fold(s2s_receive_packet, Host, {In, State}, []),
	lists:flatten(io_lib:format("off_in=~.1f off_out=~.1f on_in=~.1f on_out=~.1f "
		"median_ratio_in=~.2f median_ratio_out=~.2f passed=~p",
		[Min(1), Min(2), Min(3), Min(4), Med([C / A || {A, _, C, _} <- Rs]),
		 Med([D / B || {_, B, _, D} <- Rs]), Passed /= drop])).
"#;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok()).map_or(default, |v| v as usize)
}

/// `key=value` fields of a helper's answer.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

fn rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Unix time of an ejabberd log line `2026-11-27 08:43:09.031445+00:00 [info] ...` (UTC).
fn log_time(line: &str) -> Option<f64> {
    let (date, rest) = line.split_once(' ')?;
    let time = rest.split_once('+')?.0;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (h, rest) = time.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    // days from civil (Howard Hinnant)
    let (y, mo, da) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(
        days as f64 * 86400.0
            + h.parse::<f64>().ok()? * 3600.0
            + m.parse::<f64>().ok()? * 60.0
            + s.parse::<f64>().ok()?,
    )
}

struct Run {
    total: f64,
    cli: f64,
    sidecar: f64,
    s2s: f64,
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// Every peer asks; returns once each request's evidence is recorded (both queries answered,
/// or recorded as unanswered), as an admin would see it before deciding.
fn ask(lab: &EjabberdLab, peers: &[String]) {
    let p = lab.prosody();
    for peer in peers {
        p.admin(peer).cli(&["request", VERONA]);
    }
    let mut want: BTreeSet<&str> = peers.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    while !want.is_empty() {
        assert!(t0.elapsed() < WAIT, "no evidence for {want:?}\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(100));
        let v: Value = serde_json::from_slice(&lab.sidecar.cli(&["--json", "pending"]).stdout).unwrap();
        for req in v.as_array().unwrap() {
            let ev = &req["evidence"];
            let has = |field: &str, short: &str| !ev[field].is_null() || !ev["unanswered"][short].is_null();
            if has("contacts", "disco#info") && has("software", "version") {
                want.remove(req["peer"].as_str().unwrap_or_default());
            }
        }
    }
}

/// Closes verona's outgoing s2s streams to `peer`, as its `s2s_timeout` does to an idle one,
/// and waits until they are gone.
fn close_streams(lab: &EjabberdLab, peer: &str) {
    let r = lab.ejabberd.eval(&format!(
        "Ps = ejabberd_s2s:get_connections_pids({{<<\"{VERONA}\">>, <<\"{peer}\">>}}), \
         [ejabberd_s2s_out:stop_async(P) || P <- Ps], \
         W = fun W(0) -> gone; W(N) -> case ejabberd_s2s:get_connections_pids({{<<\"{VERONA}\">>, <<\"{peer}\">>}}) of \
         [] -> closed; _ -> timer:sleep(20), W(N - 1) end end, {{length(Ps), W(250)}}."
    ));
    assert!(r.starts_with("{1,closed}"), "closing verona's stream to {peer}: {r}");
}

/// Series 1: each peer is approved with the CLI and timed (`cold`: its stream closed first).
fn approvals(lab: &EjabberdLab, peers: &[String], cold: bool) -> Vec<Run> {
    let p = lab.prosody();
    let mut seed = now().to_bits() | 1;
    let mut runs = Vec::new();
    for peer in peers {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if cold {
            close_streams(lab, peer);
        }
        thread::sleep(Duration::from_millis(seed % 300));
        let t0 = now();
        lab.sidecar.cli(&["approve", peer]);
        let t_cli = now();
        let got = p.wait_for(&format!("subscribed from verona.lit to {peer}"), WAIT, |s| {
            s.host == *peer && s.via_s2s() && s.is_type("subscribed") && s.from.as_deref() == Some(VERONA)
        });
        // ejabberd logs the sidecar's API call (with its arguments) when it runs it.
        let call = lab.ejabberd.wait_log(&format!("send_stanza subscribed to {peer}"), WAIT, |l| {
            l.contains("API call send_stanza")
                && l.contains("'subscribed'")
                && l.contains(&format!("\"{peer}\""))
        });
        let t_api = log_time(&call).unwrap_or(t_cli);
        runs.push(Run { total: got.t - t0, cli: t_cli - t0, sidecar: t_api - t_cli, s2s: got.t - t_api });
    }
    runs
}

/// One end-to-end round of part 5: seconds per stanza, montague's first write -> verona's
/// last arrival.
fn federation_round(lab: &EjabberdLab, n: usize) -> f64 {
    let p = lab.prosody();
    lab.ejabberd.eval("st_bench:fed_reset().");
    let lua = format!(
        ">local st = require'util.stanza' local now = require'util.time'.now \
         local out = prosody.hosts['montague.lit'].s2sout['{VERONA}'] \
         if not (out and out.type == 's2sout') then return 'fedbench no-stream' end \
         local t0 = now() for i = 1, {n} do out.sends2s(st.message({{ from = 'romeo@montague.lit', \
         to = 'juliet@{VERONA}', type = 'chat', id = 'fb-'..i }}):text_tag('body', 'x')) end \
         return ('fedbench t0=%.6f'):format(t0)"
    );
    let out = p.shell(&lua);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("no-stream"), "montague has no s2s stream to verona:\n{text}");
    let t0: f64 = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("t0="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no t0 in {text}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = lab.ejabberd.eval("st_bench:fed_count().");
        if field(&c, "got") as usize >= n {
            return (field(&c, "last") / 1e6 - t0) / n as f64;
        }
        assert!(Instant::now() < deadline, "verona got {c}, of {n}\n{}", lab.diagnostics());
        thread::sleep(Duration::from_millis(200));
    }
}

/// Part 5: buddies-only federation per stanza, a lab of its own.
fn federation_bench() {
    let n = env_usize("EJ_BENCH_FED_N", 5000).max(1);
    let rounds = env_usize("EJ_BENCH_FED_ROUNDS", 8).max(1);
    let micro_n = env_usize("EJ_BENCH_FED_MICRO_N", 100_000).max(1);
    let mut o = EjabberdOptions::new(ejabberd::sidecar_bin());
    o.federation = "buddies".into();
    eprintln!("[bench] 5. federation: starting ejabberd (federation: buddies) + sidecar + Prosody");
    let lab = EjabberdLab::start(o);
    let p = lab.prosody();
    p.admin(MONTAGUE).cli(&["request", VERONA]);
    lab.sidecar.wait_pending(MONTAGUE, WAIT);
    lab.sidecar.cli(&["approve", MONTAGUE]);
    lab.sidecar.wait_state(MONTAGUE, "both", WAIT);
    p.admin(MONTAGUE).wait_state(VERONA, "both", WAIT);
    let t0 = Instant::now();
    while !lab.ejabberd.is_trusted(MONTAGUE, None) {
        assert!(t0.elapsed() < WAIT, "montague never trusted inside ejabberd");
        thread::sleep(Duration::from_millis(100));
    }
    let src = lab.dir.join("st_bench.erl");
    fs::write(&src, HELPER).unwrap();
    lab.ejabberd.load_erl(&src);
    lab.ejabberd.eval(&format!("st_bench:fed_counting(<<\"{VERONA}\">>, true)."));
    // Warm-up (and the check that the policy lets a buddy through: every message arrives).
    federation_round(&lab, n.min(1000));
    let mut e2e: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut micro = Vec::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 { [false, true] } else { [true, false] };
        for on in order {
            lab.ejabberd.eval(&format!("st_bench:fed_hooks(<<\"{VERONA}\">>, {on})."));
            e2e[usize::from(on)].push(federation_round(&lab, n));
        }
        lab.ejabberd.eval(&format!("st_bench:fed_hooks(<<\"{VERONA}\">>, true)."));
        eprintln!(
            "[bench] 5. round {}: no policy {:.1} us/stanza, policy {:.1} us/stanza",
            r + 1,
            e2e[0][r] * 1e6,
            e2e[1][r] * 1e6
        );
    }
    micro
        .push(lab.ejabberd.eval(&format!(
            "st_bench:fed_micro(<<\"{VERONA}\">>, <<\"{MONTAGUE}\">>, {micro_n}, {rounds})."
        )));
    drop(lab);

    println!();
    println!(
        "== 5. Buddies-only federation per stanza: montague (Prosody) -> verona (ejabberd) over s2s, {n} chat messages per round, {rounds} rounds each =="
    );
    let summary = |v: &[f64]| {
        let mut us: Vec<f64> = v.iter().map(|x| x * 1e6).collect();
        us.sort_by(f64::total_cmp);
        (us[us.len() / 2], us[0], us[us.len() - 1])
    };
    let st = [summary(&e2e[0]), summary(&e2e[1])];
    for (i, label) in ["no policy (hooks deleted)", "federation: buddies"].iter().enumerate() {
        let (p50, min, max) = st[i];
        println!(
            "  {label:<26} us/stanza p50 {p50:>7.2}  min {min:>7.2}  max {max:>7.2}  ({:.0} stanzas/s at p50)",
            1e6 / p50
        );
    }
    let ratio = st[1].0 / st[0].0;
    let paired = {
        let mut r: Vec<f64> = e2e[1].iter().zip(&e2e[0]).map(|(b, o)| b / o).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!(
        "  policy / no policy: {ratio:.3}x (p50s), {paired:.3}x (median of the rounds' ratios)   goal <= 1.2x: {}",
        verdict(ratio <= 1.2 && paired <= 1.2)
    );
    for line in &micro {
        let (fi, fo, ni, no) =
            (field(line, "off_in"), field(line, "off_out"), field(line, "on_in"), field(line, "on_out"));
        println!("  inside the node, ns per run_fold (least of {rounds} rounds of N = {micro_n}):");
        println!(
            "    s2s_receive_packet, a message from a buddy: no policy {fi:>7.1}  policy {ni:>7.1}  -> the check adds {:>6.1} ns",
            ni - fi
        );
        println!(
            "    s2s_send_packet, a message to a buddy:      no policy {fo:>7.1}  policy {no:>7.1}  -> the check adds {:>6.1} ns",
            no - fo
        );
        println!(
            "    both checks of one stanza: {:.1} ns = {:.2}% of the end-to-end p50 with the policy  ({line})",
            (ni - fi) + (no - fo),
            ((ni - fi) + (no - fo)) / (st[1].0 * 1e3) * 100.0
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: skip there.
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("EJABBERD_BENCH").is_none() {
        println!("ejabberd bench: skipped (run with `cargo bench --bench ejabberd`)");
        return;
    }
    let only = std::env::var("EJ_BENCH_ONLY").unwrap_or_default();
    if only == "federation" {
        ejabberd::require_installed();
        federation_bench();
        return;
    }
    let runs = env_usize("EJ_BENCH_RUNS", 24).max(1);
    let cold_runs = env_usize("EJ_BENCH_COLD", runs / 4);
    let events = env_usize("EJ_BENCH_EVENTS", 10_000).max(2);
    let peers_n = env_usize("EJ_BENCH_PEERS", 1_000).max(1);
    let n = env_usize("EJ_BENCH_N", 20_000).max(1);
    let rounds = env_usize("EJ_BENCH_ROUNDS", 200).max(1);
    ejabberd::require_installed();
    let bin = ejabberd::sidecar_bin();
    let peers: Vec<String> = (0..runs).map(|i| format!("r{i}.lit")).collect();
    let cold_peers: Vec<String> = (0..cold_runs).map(|i| format!("c{i}.lit")).collect();
    let mut o = EjabberdOptions::new(bin);
    o.prosody_hosts = peers.iter().chain(&cold_peers).cloned().collect();
    // The peers publish contact addresses and answer version queries: the evidence.
    o.contact_info = true;
    // Every routed event must be kept while the worker sends (the default is 1000).
    o.queue_max = (events as u32).saturating_mul(2).max(1000);
    eprintln!("[bench] starting ejabberd + sidecar + Prosody ({} virtual hosts)", o.prosody_hosts.len() + 1);
    let lab = EjabberdLab::start(o);
    let sidecar_pid: u32 = fs::read_to_string(&lab.sidecar.pidfile).unwrap().trim().parse().unwrap();
    thread::sleep(Duration::from_secs(1));
    let rss_idle = rss_mib(sidecar_pid);

    eprintln!("[bench] 1. approval latency, {} runs warm, {} cold", peers.len(), cold_peers.len());
    ask(&lab, &peers);
    let approval = approvals(&lab, &peers, false);
    ask(&lab, &cold_peers);
    let cold = approvals(&lab, &cold_peers, true);

    eprintln!("[bench] 3. is_trusted vs ets:lookup, {rounds} rounds of N = {n}");
    let src = lab.dir.join("st_bench.erl");
    fs::write(&src, HELPER).unwrap();
    lab.ejabberd.load_erl(&src);
    let trusted_peer = &peers[0];
    // Wait until the module's copy has the approved peers.
    let t0 = Instant::now();
    while !lab.ejabberd.is_trusted(trusted_peer, None) {
        assert!(t0.elapsed() < WAIT, "{trusted_peer} never trusted inside ejabberd");
        thread::sleep(Duration::from_millis(100));
    }
    let trust: Vec<(String, String)> = [trusted_peer.as_str(), "stranger.example"]
        .iter()
        .map(|peer| {
            let line = lab
                .ejabberd
                .eval(&format!("st_bench:trust(<<\"{VERONA}\">>, <<\"{peer}\">>, {n}, {rounds})."));
            (peer.to_string(), line)
        })
        .collect();

    eprintln!("[bench] 2. hook events through the module, 2 x {events} events from {peers_n} peers");
    let mut through = Vec::new();
    let mut rss_after = Vec::new();
    for round in 0..2 {
        let line = lab
            .ejabberd
            .eval(&format!("st_bench:route(<<\"{VERONA}\">>, <<\"m{round}p\">>, {events}, {peers_n})."));
        through.push(line);
        thread::sleep(Duration::from_millis(500));
        rss_after.push(rss_mib(sidecar_pid));
    }
    eprintln!("[bench] 2b. the sidecar's hook from an httpc keep-alive client inside the node");
    let mut keepalive = Vec::new();
    for conc in [1, 4] {
        let line = lab.ejabberd.eval(&format!(
            "st_bench:http(\"http://{}\", <<\"{}\">>, \"{VERONA}\", {events}, {conc}).",
            lab.sidecar.addr, lab.sidecar.hook_token
        ));
        keepalive.push((conc, line));
        thread::sleep(Duration::from_millis(500));
        rss_after.push(rss_mib(sidecar_pid));
    }
    let status = lab.ejabberd.ctl_ok(&["server_trust_status", VERONA]);
    drop(lab);

    println!();
    println!(
        "== 1. Approval latency: `server-trust approve` on verona (ejabberd) -> `subscribed` recorded by the Prosody host (ms), after the evidence is in =="
    );
    let t = stats(approval.iter().map(|r| r.total));
    let c = stats(approval.iter().map(|r| r.cli));
    let s = stats(approval.iter().map(|r| r.sidecar));
    let x = stats(approval.iter().map(|r| r.s2s));
    println!(
        "{:>4} runs  p50 {:>6.1}  p95 {:>6.1}  max {:>6.1}  mean {:>6.1}   goal p95 <= {GOAL_P95_MS:.0}: {}",
        approval.len(),
        t.p50,
        t.p95,
        t.max,
        t.mean,
        verdict(t.p95 <= GOAL_P95_MS)
    );
    println!(
        "  cli     (spawn -> exit of the CLI)                        p50 {:>6.1}  p95 {:>6.1}  max {:>6.1}",
        c.p50, c.p95, c.max
    );
    println!(
        "  sidecar (CLI exit -> ejabberd logs send_stanza)           p50 {:>6.1}  p95 {:>6.1}  max {:>6.1}",
        s.p50, s.p95, s.max
    );
    println!(
        "  s2s     (send_stanza -> Prosody records it)               p50 {:>6.1}  p95 {:>6.1}  max {:>6.1}",
        x.p50, x.p95, x.max
    );
    if !cold.is_empty() {
        let t = stats(cold.iter().map(|r| r.total));
        let s = stats(cold.iter().map(|r| r.sidecar));
        let x = stats(cold.iter().map(|r| r.s2s));
        println!(
            "  cold: {} runs with verona's stream to the peer closed first (as s2s_timeout does): total p50 {:>6.1}  \
             p95 {:>6.1}  max {:>6.1}; sidecar p50 {:.1} p95 {:.1}; s2s (new stream) p50 {:.1} p95 {:.1}",
            cold.len(),
            t.p50,
            t.p95,
            t.max,
            s.p50,
            s.p95,
            x.p50,
            x.p95
        );
    }

    println!();
    println!(
        "== 2. Hook events per second into the sidecar, measured inside ejabberd ({events} events, {peers_n} peers) =="
    );
    for (i, line) in through.iter().enumerate() {
        let done = field(line, "done_us") / 1e6;
        let rate = field(line, "delivered") / done;
        println!(
            "  via the module (router -> hook -> worker -> HTTP -> engine), round {}: {:>7.0} events/s  \
             (routing {:.0} ms, all delivered after {:.0} ms, lost {})   goal >= {GOAL_EVENTS_PER_S:.0}/s: {}",
            i + 1,
            rate,
            field(line, "routed_us") / 1e3,
            done * 1e3,
            field(line, "lost"),
            verdict(rate >= GOAL_EVENTS_PER_S)
        );
    }
    for (conc, line) in &keepalive {
        let rate = field(line, "events") / (field(line, "us") / 1e6);
        println!(
            "  httpc keep-alive client in the node, {conc} connection(s):        {:>7.0} events/s  (failed {})",
            rate,
            field(line, "failed")
        );
    }
    println!("  module status afterwards: {status}");

    println!();
    println!(
        "== 3. Trust check inside ejabberd (ns/call, least of {rounds} interleaved rounds of N = {n} calls, empty loop not subtracted) =="
    );
    for (peer, line) in &trust {
        let e = field(line, "empty");
        let ratio = (field(line, "is_trusted") - e) / (field(line, "ets") - e);
        println!(
            "  {peer:<18} is_trusted/2 {:>7.1}  ets:lookup {:>7.1}  empty {:>5.1}  -> {:.2}x (loop subtracted)   goal <= {GOAL_TRUST_RATIO}x: {}",
            field(line, "is_trusted"),
            field(line, "ets"),
            e,
            ratio,
            verdict(ratio <= GOAL_TRUST_RATIO)
        );
        let median = field(line, "median_ratio");
        println!(
            "  {:<18} median over the rounds of each round's ratio: {median:.2}x   goal <= {GOAL_TRUST_RATIO}x: {}",
            "",
            verdict(median <= GOAL_TRUST_RATIO)
        );
        println!(
            "  {:<18} parts: the module's table lookup alone (persistent_term + ets:lookup) {:>7.1}, one jid:nameprep {:>7.1}",
            "",
            field(line, "lookup"),
            field(line, "nameprep"),
        );
        println!("  {:<18} ({line})", "");
    }

    println!();
    println!("== 4. Sidecar resident memory (MiB) ==");
    let max_after = rss_after.iter().cloned().fold(0.0, f64::max);
    println!(
        "  idle {rss_idle:.1}; after the approvals and each {events}-event round: {}   goal <= {GOAL_RSS_MIB:.0} MiB, flat: {}",
        rss_after.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(", "),
        verdict(max_after <= GOAL_RSS_MIB && rss_after.last().unwrap() - rss_after[0] < 2.0)
    );
    if only != "approval" {
        federation_bench();
    }
}
