%%%----------------------------------------------------------------------
%%% File    : mod_server_trust.erl
%%% Purpose : XEP-0267 Server Buddies for ejabberd, driven by the
%%%           server-trust sidecar (one HTTP service owns the server roster)
%%%
%%% This Source Code Form is subject to the terms of the Mozilla Public
%%% License, v. 2.0. If a copy of the MPL was not distributed with this
%%% file, You can obtain one at https://mozilla.org/MPL/2.0/.
%%%
%%% What happens here:
%%%  * presence from a bare domain JID to a bare host JID (the server
%%%    buddy handshake, XEP-0267) is handed to the per-host worker
%%%    (mod_server_trust_sidecar), which POSTs it to the sidecar, and is
%%%    dropped: ejabberd never answers it itself, so nothing is ever
%%%    auto-approved, whether the sidecar is up or not (fails closed);
%%%  * is_trusted/2,3 answer from an ETS table the worker keeps current
%%%    by long-polling the sidecar: no HTTP round trip per check;
%%%  * with `federation: buddies`, every message, presence and iq crossing
%%%    s2s either way is checked with the engine's `federates_with` rule
%%%    (federates/3): presence between the two host JIDs always passes,
%%%    and so do the evidence queries between them (host_stanza/5);
%%%    anything else only with a trusted peer (in `federation_group`, if
%%%    set); a revoked peer's streams are closed;
%%%  * when the node stops cleanly (and no other node of the cluster serves
%%%    the hosts), `unavailable` goes to the approved peers (on_stopping/0),
%%%    so the "last seen" they show for us is true.
%%%  * evidence at approval time: a peer's `subscribe` carries the facts of
%%%    the s2s stream it came by (how the peer was authenticated, its
%%%    certificate) to the sidecar; the worker sends the queries the sidecar
%%%    asks for and hands their answers back (mod_server_trust_sidecar).
%%%----------------------------------------------------------------------
-module(mod_server_trust).
-author('server-trust').
-behaviour(gen_mod).

%% gen_mod callbacks.
-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1,
	 mod_options/1, mod_doc/0, mod_status/0]).
%% ejabberd_hooks callbacks.
-export([on_host_stanza/1, on_s2s_receive_packet/1, on_s2s_send_packet/1, on_stopping/0]).
%% Called by mod_server_trust_sidecar, by timers and inside s2s_in processes.
-export([trust_removed/2, close_streams/2, close_in_stream/3]).
%% API.
-export([is_trusted/2, is_trusted/3, trusted_peers/1]).
%% ejabberd_commands callbacks.
-export([get_commands_spec/0, cmd_is_trusted/3, cmd_status/1]).

-include("xmpp.hrl").
-include("logger.hrl").
-include("ejabberd_commands.hrl").

%% Before mod_announce (50) and ejabberd_local's bounce (100), which would
%% otherwise see (and silently drop) the presence.
-define(HOST_STANZA_PRIO, 40).
%% Before every other handler of these hooks (ejabberd's own run at 50 and up).
-define(S2S_FILTER_PRIO, 10).
%% How long a revoked peer's streams stay up after the trusted set shrank: the
%% sidecar sends the revoke's unsubscribe and unsubscribed through send_stanza
%% on its own, possibly just after the long poll answered; this lets them be
%% written first (an s2s_out process writes what it was routed before it
%% handles our stream error).
-define(CLOSE_DELAY, timer:seconds(2)).
%% At a clean stop: how long the goodbye presences get to leave through the
%% s2s streams before ejabberd stops them.
-define(GOODBYE_FLUSH, 2000).
%% Global hook: ejabberd_app:prep_stop runs it before it stops the listeners
%% and s2s.
-define(STOPPING_PRIO, 50).
%% The persistent term of the hosts' federation policies (federates/3).
-define(POLICY, {?MODULE, federation}).
%% The queries the engine sends a new requester (server_trust::evidence::QUERIES).
-define(EVIDENCE_NS, [<<"http://jabber.org/protocol/disco#info">>, <<"jabber:iq:version">>]).
%% The packet meta key of a subscribe's stream facts (with_session/3).
-define(SESSION, server_trust_session).

-type peer() :: binary().

%%%===================================================================
%%% gen_mod callbacks
%%%===================================================================
-spec start(binary(), gen_mod:opts()) -> ok | {error, term()}.
start(Host, Opts) ->
	case mod_server_trust_sidecar:start(Host, Opts) of
		{ok, _Pid} ->
			set_policy(Host, policy(Opts)),
			hooks(Host, add),
			mod_server_trust_webadmin:hooks(Host, add),
			case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
				false ->
					ejabberd_commands:register_commands(get_commands_spec()),
					ejabberd_hooks:add(ejabberd_stopping, ?MODULE, on_stopping, ?STOPPING_PRIO);
				true -> ok
			end,
			ok = mod_server_trust_adhoc:start(Host),
			?INFO_MSG("mod_server_trust (~ts): presence to the host JID goes to ~ts, "
				  "federation: ~ts", [Host, mod_server_trust_opt(Host, sidecar_url),
						      federation_text(Host)]),
			ok;
		{error, _} = Err ->
			Err
	end.

-spec stop(binary()) -> ok.
stop(Host) ->
	mod_server_trust_adhoc:stop(Host),
	hooks(Host, delete),
	set_policy(Host, undefined),
	mod_server_trust_webadmin:hooks(Host, delete),
	case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
		false ->
			ejabberd_hooks:delete(ejabberd_stopping, ?MODULE, on_stopping, ?STOPPING_PRIO),
			ejabberd_commands:unregister_commands(get_commands_spec());
		true -> ok
	end,
	mod_server_trust_sidecar:stop(Host).

-spec reload(binary(), gen_mod:opts(), gen_mod:opts()) -> ok.
reload(Host, NewOpts, _OldOpts) ->
	set_policy(Host, policy(NewOpts)),
	mod_server_trust_sidecar:reload(Host, NewOpts).

-spec depends(binary(), gen_mod:opts()) -> [{module(), hard | soft}].
depends(_Host, _Opts) ->
	[{mod_adhoc, soft}].

mod_opt_type(sidecar_url) ->
	econf:url([http, https]);
mod_opt_type(token_file) ->
	econf:file();
mod_opt_type(admin_token_file) ->
	econf:file();
mod_opt_type(timeout) ->
	econf:timeout(second);
mod_opt_type(connect_timeout) ->
	econf:timeout(second);
mod_opt_type(queue_max) ->
	econf:pos_int();
mod_opt_type(federation) ->
	econf:enum([all, buddies]);
mod_opt_type(federation_group) ->
	%% The engine's rule for a group name: 1 to 64 characters, no comma.
	econf:binary("^[^,]{1,64}$");
mod_opt_type(access_adhoc) ->
	econf:acl().

mod_options(_Host) ->
	[{sidecar_url, <<"http://127.0.0.1:5267">>},
	 {token_file, undefined},
	 {admin_token_file, undefined},
	 {timeout, timer:seconds(5)},
	 {connect_timeout, timer:seconds(2)},
	 {queue_max, 1000},
	 {federation, all},
	 {federation_group, undefined},
	 {access_adhoc, configure}].

mod_doc() ->
	#{desc =>
	      [<<"XEP-0267 Server Buddies: presence between server domain "
		 "JIDs is handed to the server-trust sidecar, which keeps "
		 "the server roster and asks the admins; subscription "
		 "requests are never auto-approved.">>],
	  opts =>
	      [{sidecar_url, #{value => "URL", desc => <<"Base URL of the sidecar.">>}},
	       {token_file, #{value => "Path", desc => <<"File holding the sidecar's hook bearer token.">>}},
	       {admin_token_file, #{value => "Path",
				    desc => <<"File holding the sidecar's admin token: turns on the "
					      "server_trust_* admin commands (approve, deny, ...), which "
					      "anyone allowed to run them can then use. Unset: they "
					      "answer an error.">>}},
	       {timeout, #{value => "timeout()", desc => <<"Timeout of one request.">>}},
	       {connect_timeout, #{value => "timeout()", desc => <<"TCP connect timeout.">>}},
	       {queue_max, #{value => "Number", desc => <<"Presences kept for retry while the sidecar is down, in each lane: "
						 "subscription presence, and probes and availability.">>}},
	       {federation, #{value => "all | buddies",
			      desc => <<"buddies: every message, presence and iq crossing s2s, "
					"either way, passes only with a trusted peer; presence "
					"between the two host JIDs (the XEP-0267 handshake and "
					"probes) always passes, so any server can still ask, and "
					"so do the disco#info and software version queries "
					"between them and their answers (the evidence an admin "
					"sees with a request). A "
					"refused message, iq get/set or subscription request gets "
					"a policy-violation error, other refused stanzas are "
					"dropped. A revoked peer's s2s streams are closed. Streams "
					"and dialback are never refused.">>}},
	       {federation_group, #{value => "Group",
				    desc => <<"With federation: buddies, only trusted peers in "
					      "this group (e.g. federate). Set with federation: all, "
					      "it is read as buddies (fails closed) and logged.">>}},
	       {access_adhoc, #{value => "AccessName",
				desc => <<"Who may list and run the XEP-0050 ad-hoc commands "
					  "(request, pending, revoke; they need admin_token_file). "
					  "Default: configure, mod_configure's rule.">>}}],
	  example =>
	      ["modules:",
	       "  mod_server_trust:",
	       "    sidecar_url: \"http://127.0.0.1:5267\"",
	       "    token_file: \"/etc/ejabberd/server-trust-hook.token\""]}.

-spec mod_status() -> string().
mod_status() ->
	lists:flatten(
	  [io_lib:format("~ts: ~p trusted peers, sidecar ~ts, ~p queued; ",
			 [H, maps:get(peers, S), maps:get(sidecar, S), maps:get(queued, S)])
	   || H <- ejabberd_option:hosts(), gen_mod:is_loaded(H, ?MODULE),
	      S <- [mod_server_trust_sidecar:status(H)]]).

mod_server_trust_opt(Host, Opt) ->
	gen_mod:get_module_opt(Host, ?MODULE, Opt).

-spec hooks(binary(), add | delete) -> ok.
hooks(Host, Op) ->
	ejabberd_hooks:Op(local_send_to_resource_hook, Host, ?MODULE, on_host_stanza, ?HOST_STANZA_PRIO),
	ejabberd_hooks:Op(s2s_receive_packet, Host, ?MODULE, on_s2s_receive_packet, ?S2S_FILTER_PRIO),
	ejabberd_hooks:Op(s2s_send_packet, Host, ?MODULE, on_s2s_send_packet, ?S2S_FILTER_PRIO),
	ok.

%%%===================================================================
%%% ejabberd_hooks callbacks
%%%===================================================================

%% Presence addressed to the bare host JID. ejabberd_local runs this hook for
%% stanzas to the host that are neither iq nor result/error.
-spec on_host_stanza(stanza()) -> ok | stop.
on_host_stanza(#presence{to = #jid{luser = <<>>, lresource = <<>>, lserver = Host},
			 from = #jid{luser = <<>>, lresource = <<>>, lserver = Peer},
			 type = Type, id = Id} = Pkt) when Peer /= Host ->
	mod_server_trust_sidecar:presence(Host, Peer, Type, Id, xmpp:get_meta(Pkt, ?SESSION, undefined)),
	stop;
on_host_stanza(#presence{to = #jid{luser = <<>>, lresource = <<>>, lserver = Host},
			 from = From, type = Type}) ->
	%% A user or a full JID (or the host itself) cannot take part in a server
	%% roster: drop it here, explicitly, so no later handler can answer it.
	?DEBUG("mod_server_trust (~ts): dropped ~ts presence from non-domain JID ~ts",
	       [Host, Type, jid:encode(From)]),
	stop;
on_host_stanza(_Stanza) ->
	ok.

%% --- a clean stop -------------------------------------------------------

%% The node is stopping cleanly (SIGTERM, `ejabberdctl stop`): for each host
%% the sidecar's engine gives the presences to send (`unavailable` to the
%% peers we approved; it notes every peer as last seen now), and they are
%% routed here, while s2s still runs: the HTTP API the sidecar would send
%% through stops next. Prosody does the same on server-stopping. Not while
%% other nodes of the cluster run: they still serve the hosts.
-spec on_stopping() -> ok.
on_stopping() ->
	case ejabberd_cluster:get_nodes() of
		[_, _ | _] = Nodes ->
			?INFO_MSG("mod_server_trust: ~p stops, ~p other node(s) still serve the hosts: "
				  "no unavailable to the server buddies", [node(), length(Nodes) - 1]);
		_ ->
			Hosts = [H || H <- ejabberd_option:hosts(), gen_mod:is_loaded(H, ?MODULE)],
			Pids = lists:usort(lists:flatmap(fun goodbye/1, Hosts)),
			flush(Pids, erlang:monotonic_time(millisecond) + ?GOODBYE_FLUSH)
	end,
	ok.

goodbye(Host) ->
	Presences = mod_server_trust_sidecar:goodbye(Host),
	From = jid:make(Host),
	?INFO_MSG("mod_server_trust (~ts): stopping: ~p presence(s) to server buddies",
		  [Host, length(Presences)]),
	lists:flatmap(
	  fun({Peer, Type}) ->
		  ejabberd_router:route(#presence{from = From, to = jid:make(Peer), type = Type}),
		  ejabberd_s2s:get_connections_pids({Host, Peer})
	  end, Presences).

%% Until the s2s_out processes the goodbyes went to have taken them from
%% their mailboxes (an established stream writes a stanza as it takes it),
%% at most until Deadline.
flush(Pids, Deadline) ->
	Busy = [P || P <- Pids, erlang:process_info(P, message_queue_len) /= {message_queue_len, 0},
		     is_process_alive(P)],
	case Busy /= [] andalso erlang:monotonic_time(millisecond) < Deadline of
		true -> timer:sleep(20), flush(Busy, Deadline);
		false -> ok
	end.

%% --- buddies-only federation ----------------------------------------------

%% The engine's `Engine::federates_with(peer, host_stanza)` rule, mirrored here
%% on the ETS copy of the engine's trusted set (keep the two the same): with
%% `federation: all` always; otherwise what passes between the two host JIDs
%% (host_stanza/5: the XEP-0267 handshake and probes, so a stranger can still
%% ask, and the evidence queries) when Peer is a valid name, anything else
%% only with a trusted peer, in `federation_group` when one is set. A group
%% with `federation: all` counts as buddies: the engine refuses that pair, and
%% refusing here fails closed.
%% The policy is read from a persistent term written at start and reload: two
%% gen_mod:get_module_opt/3 calls per stanza cost ~1 us (benches/README.md).
-spec federates(binary(), binary(), boolean()) -> boolean().
federates(Host, Peer, HostStanza) ->
	case persistent_term:get(?POLICY, #{}) of
		#{Host := open} -> true;
		#{Host := _} when HostStanza -> normalise(Peer) /= error;
		#{Host := {buddies, undefined}} -> is_trusted(Host, Peer);
		#{Host := {buddies, Group}} -> is_trusted(Host, Peer, Group);
		_ -> federates(policy(gen_mod:get_module_opts(Host, ?MODULE)), Host, Peer, HostStanza)
	end.

%% The same from the options (a host whose policy term is not written yet).
federates(open, _Host, _Peer, _HostStanza) -> true;
federates(_, _Host, Peer, true) -> normalise(Peer) /= error;
federates({buddies, undefined}, Host, Peer, false) -> is_trusted(Host, Peer);
federates({buddies, Group}, Host, Peer, false) -> is_trusted(Host, Peer, Group).

%% `federation` and `federation_group` as federates/3 reads them: open, or buddies in
%% a group or not (a group with `federation: all` counts as buddies: fails closed).
policy(Opts) ->
	case {gen_mod:get_opt(federation, Opts), gen_mod:get_opt(federation_group, Opts)} of
		{all, undefined} -> open;
		{_, Group} -> {buddies, Group}
	end.

%% One persistent term for all hosts (a small map, as the sidecar worker's tables),
%% written only when a host starts, reloads or stops.
set_policy(Host, Policy) ->
	global:trans({{?MODULE, policy}, self()},
		     fun() ->
			     Old = persistent_term:get(?POLICY, #{}),
			     New = case Policy of
					   undefined -> maps:remove(Host, Old);
					   _ -> Old#{Host => Policy}
				   end,
			     case New == Old of
				     true -> ok;
				     false -> persistent_term:put(?POLICY, New)
			     end
		     end, [node()]).

%% Every stanza a remote server sent us (after its stream authenticated and
%% from/to were checked), before it is routed; LServer is the host the
%% recipient belongs to. Dialback and stream elements never come this way.
-spec on_s2s_receive_packet({stanza() | drop, ejabberd_s2s_in:state()}) ->
	  {stanza() | drop, ejabberd_s2s_in:state()} | {stop, {drop, ejabberd_s2s_in:state()}}.
on_s2s_receive_packet({Pkt, State} = Acc) when ?is_stanza(Pkt) ->
	From = xmpp:get_from(Pkt),
	To = xmpp:get_to(Pkt),
	Host = case persistent_term:get(?POLICY, #{}) of
		       #{(To#jid.lserver) := _} -> To#jid.lserver;  % a host itself: no route lookup
		       _ -> ejabberd_router:host_of_route(To#jid.lserver)
	       end,
	Peer = From#jid.lserver,
	HostStanza = host_stanza(Pkt, From, Peer, To, Host),
	case federates(Host, Peer, HostStanza) of
		true when HostStanza ->
			{with_session(Pkt, Peer, State), State};
		true ->
			Acc;
		false ->
			?DEBUG("mod_server_trust (~ts): refused ~ts from ~ts: not a server buddy",
			       [Host, element(1, Pkt), jid:encode(From)]),
			refuse(Pkt, Host, Peer),
			{stop, {drop, State}}
	end;
on_s2s_receive_packet(Acc) ->
	Acc.

%% Every stanza from this host (its users and the host JID) to a remote server,
%% after ejabberd_s2s picked (or opened) the stream, before it is queued there.
-spec on_s2s_send_packet(stanza() | drop) -> stanza() | drop | {stop, drop}.
on_s2s_send_packet(Pkt) when ?is_stanza(Pkt) ->
	case xmpp:get_meta(Pkt, server_trust_refusal, false) of
		true ->
			Pkt;  % our own policy-violation answer to a refused stanza
		false ->
			From = xmpp:get_from(Pkt),
			To = xmpp:get_to(Pkt),
			Host = From#jid.lserver,
			Peer = To#jid.lserver,
			case federates(Host, Peer, host_stanza(Pkt, From, Host, To, Peer)) of
				true ->
					Pkt;
				false ->
					?DEBUG("mod_server_trust (~ts): refused ~ts to ~ts: not a server buddy",
					       [Host, element(1, Pkt), jid:encode(To)]),
					refuse(Pkt, Host, Peer),
					{stop, drop}
			end
	end;
on_s2s_send_packet(Pkt) ->
	Pkt.

%% What passes between the bare domain JIDs A and B whoever they are: the
%% engine's `Federation::host_stanza(name, type, ns)` rule, mirrored (keep the
%% two the same). Presence (the XEP-0267 handshake and probes); an iq get
%% asking for disco#info or the software version (the evidence gathered when a
%% request arrives, either way: its first child's namespace); and iq results
%% and errors (their answers).
host_stanza(Pkt, #jid{luser = <<>>, lresource = <<>>, lserver = A}, A,
	    #jid{luser = <<>>, lresource = <<>>, lserver = B}, B) ->
	case Pkt of
		#presence{} -> true;
		#iq{type = get, sub_els = [El | _]} -> lists:member(xmpp:get_ns(El), ?EVIDENCE_NS);
		#iq{type = T} -> T == result orelse T == error;
		_ -> false
	end;
host_stanza(_Pkt, _From, _A, _To, _B) ->
	false.

%% A peer's `subscribe` takes along what the stream it came by tells about
%% the peer (read by on_host_stanza/1 for the sidecar): `certificate` when its
%% certificate is valid for Peer (what SASL EXTERNAL checks), else `dialback`,
%% the only other way ejabberd authenticates an s2s peer (no DANE); and the
%% certificate itself (DER), if it sent one. Nothing else is looked at, so
%% other stanzas cost nothing here.
with_session(#presence{type = subscribe} = Pkt, Peer, #{socket := Socket} = State) ->
	%% Whatever goes wrong here costs the evidence, never the subscribe.
	Auth = try stream_auth(Peer, State) catch _:_ -> undefined end,
	Cert = try peer_cert(Socket) catch _:_ -> undefined end,
	case Auth of
		undefined -> Pkt;
		_ -> xmpp:put_meta(Pkt, ?SESSION, #{auth => Auth, cert => Cert})
	end;
with_session(Pkt, _Peer, _State) ->
	Pkt.

stream_auth(Peer, State) ->
	case xmpp_stream_pkix:authenticate(State#{remote_server => Peer}) of
		{ok, _} -> <<"certificate">>;
		{error, _, _} -> <<"dialback">>
	end.

peer_cert(Socket) ->
	case xmpp_socket:get_peer_certificate(Socket, otp) of
		{ok, C} -> public_key:pkix_encode('OTPCertificate', C, otp);
		_ -> undefined
	end.

%% A refused message, iq request or subscription request is answered with a
%% policy-violation error (to the remote sender, or to our user who wrote to a
%% stranger); anything else refused is dropped without a word.
refuse(Pkt, Host, Peer) ->
	case answered(Pkt) of
		true ->
			Text = <<Host/binary, " federates with its server buddies only, and ",
				 Peer/binary, " is not one">>,
			%% cancel, as Prosody answers: retrying as it is will not help.
			Why = (xmpp:err_policy_violation(Text, xmpp:get_lang(Pkt)))#stanza_error{type = cancel},
			Err = xmpp:make_error(Pkt, Why),
			ejabberd_router:route(xmpp:put_meta(Err, server_trust_refusal, true));
		false ->
			ok
	end.

answered(#message{type = error}) -> false;
answered(#message{}) -> true;
answered(#iq{type = T}) -> T == get orelse T == set;
answered(#presence{type = subscribe}) -> true;
answered(_) -> false.

%% Called by the worker when peers left Host's trusted set (revoked, denied
%% after approval, or removed by the admin). With `federation: buddies`, their
%% s2s streams with Host are closed ?CLOSE_DELAY later, if they are still not
%% trusted then; from now on their stanzas are refused anyway.
-spec trust_removed(binary(), [binary()]) -> ok.
trust_removed(_Host, []) ->
	ok;
trust_removed(Host, Peers) ->
	case {mod_server_trust_opt(Host, federation), mod_server_trust_opt(Host, federation_group)} of
		{all, undefined} -> ok;
		_ -> [{ok, _} = timer:apply_after(?CLOSE_DELAY, ?MODULE, close_streams, [Host, P])
		      || P <- Peers],
		     ok
	end.

%% Closes Host's s2s streams with Peer with a policy-violation stream error:
%% the outgoing ones ejabberd_s2s knows for {Host, Peer}, and the incoming ones
%% where Peer authenticated (each s2s_in process checks its own state).
-spec close_streams(binary(), binary()) -> ok.
close_streams(Host, Peer) ->
	case gen_mod:is_loaded(Host, ?MODULE) andalso not federates(Host, Peer, false) of
		false ->
			ok;
		true ->
			?INFO_MSG("mod_server_trust (~ts): closing s2s streams with ~ts "
				  "(federation: buddies, no longer a server buddy)", [Host, Peer]),
			Err = xmpp:serr_policy_violation(<<"No longer a server buddy of ", Host/binary>>,
							 <<"en">>),
			[ejabberd_s2s_out:send(Pid, Err)
			 || Pid <- ejabberd_s2s:get_connections_pids({Host, Peer})],
			[ejabberd_s2s_in:update_state(Pid, {?MODULE, close_in_stream, [Host, Peer]})
			 || {_, Pid, _, _} <- in_streams(), is_pid(Pid)],
			ok
	end.

in_streams() ->
	try supervisor:which_children(ejabberd_s2s_in_sup)
	catch _:_ -> []
	end.

%% Runs inside an s2s_in process (ejabberd_s2s_in:update_state/2).
close_in_stream(#{server_host := Host, auth_domains := Domains} = State, Host, Peer) ->
	case sets:is_element(Peer, Domains) of
		true ->
			Err = xmpp:serr_policy_violation(<<"No longer a server buddy of ", Host/binary>>,
							 <<"en">>),
			ejabberd_s2s_in:send(State, Err);
		false ->
			State
	end;
close_in_stream(State, _Host, _Peer) ->
	State.

federation_text(Host) ->
	case {mod_server_trust_opt(Host, federation), mod_server_trust_opt(Host, federation_group)} of
		{all, undefined} -> <<"all">>;
		{all, G} ->
			?ERROR_MSG("mod_server_trust (~ts): federation_group ~ts is set but federation "
				   "is all: federating as buddies in group ~ts (set federation: buddies)",
				   [Host, G, G]),
			<<"buddies, group ", G/binary>>;
		{buddies, undefined} -> <<"buddies">>;
		{buddies, G} -> <<"buddies, group ", G/binary>>
	end.

%%%===================================================================
%%% API
%%%===================================================================

%% @doc True when Host's admin approved Peer (Peer is in Host's server roster
%% with a subscription from Peer). Reads the local ETS copy; false when the
%% module is not running on Host or the copy is not loaded yet. Peer may be
%% spelt any way the server-trust engine accepts (case, a trailing dot,
%% ideographic full stops, A-labels for U-labels): the answer is the same.
-spec is_trusted(binary(), peer() | jid()) -> boolean().
is_trusted(Host, Peer) when is_binary(Host), is_binary(Peer) ->
	%% The common case first, with nothing but the table lookup: Peer as given
	%% (routed JIDs are in normal form already).
	case mod_server_trust_sidecar:member(Host, Peer) of
		true -> true;
		false -> not normal(Peer) andalso lookup_normalised(Host, Peer) /= error;
		no_table -> not (normal(Host) andalso normal(Peer))
				andalso lookup_normalised(Host, Peer) /= error
	end;
is_trusted(Host, Peer) ->
	lookup(Host, Peer) /= error.

%% @doc Like is_trusted/2, and Peer carries the group Scope (e.g. <<"incidents">>).
-spec is_trusted(binary(), peer() | jid(), binary()) -> boolean().
is_trusted(Host, Peer, Scope) ->
	case lookup(Host, Peer) of
		{ok, Groups} -> lists:member(Scope, Groups);
		error -> false
	end.

%% @doc The trusted peers of Host with their groups, sorted.
-spec trusted_peers(binary()) -> [{peer(), [binary()]}].
trusted_peers(Host) ->
	mod_server_trust_sidecar:trusted(Host).

lookup(Host, #jid{luser = <<>>, lresource = <<>>, lserver = Peer}) ->
	lookup(Host, Peer);
lookup(_Host, #jid{}) ->
	error;
lookup(Host, Peer) when is_binary(Host), is_binary(Peer) ->
	case mod_server_trust_sidecar:lookup(Host, Peer) of
		{ok, _} = Found -> Found;
		error ->  % Host named a table, so it is in normal form already
			case normal(Peer) of
				true -> error;
				false -> lookup_normalised(Host, Peer)
			end;
		no_table ->
			case normal(Host) andalso normal(Peer) of
				true -> error;
				false -> lookup_normalised(Host, Peer)
			end
	end;
lookup(_Host, _Peer) ->
	error.

lookup_normalised(Host, Peer) ->
	case {normalise(Host), normalise(Peer)} of
		{error, _} -> error;
		{_, error} -> error;
		{LHost, LPeer} ->
			case mod_server_trust_sidecar:lookup(LHost, LPeer) of
				{ok, _} = Found -> Found;
				_ -> error
			end
	end.

%% False when normalise/1 may change Name (so a lookup that missed must try
%% again): a byte above 127, an uppercase ASCII letter, a "--" (A-labels
%% become U-labels) or a trailing dot. The same test as the engine's
%% Domain::may_change_when_normalised. Every miss (a stranger) runs it, so it takes four
%% bytes a step, each test on all four at once: no byte above 127 (then
%% the sums below never carry from one byte into the next), none in A..Z
%% (+63 sets bit 7 from $A up, +37 from $Z + 1 up), none a hyphen (xor
%% makes it a zero byte, and +127 sets bit 7 of every other one). A word
%% holding a hyphen goes a byte at a time, where "--" is seen. Only four
%% bytes left ending in a dot stop the word step, so the last byte is
%% always looked at.
-define(HIGH, 16#80808080).
-define(KEEPS(C), (C < $A orelse (C > $Z andalso C < 128))).
normal(<<_:24, $.>>) -> false;
normal(<<W:32, Rest/binary>>)
  when W band ?HIGH =:= 0,
       (W + 16#3f3f3f3f) band bnot (W + 16#25252525) band ?HIGH =:= 0,
       (((W bxor 16#2d2d2d2d) + 16#7f7f7f7f) bor (W bxor 16#2d2d2d2d)) band ?HIGH =:= ?HIGH ->
	normal(Rest);
normal(<<$-, $-, _/binary>>) -> false;
normal(<<$.>>) -> false;
normal(<<C, Rest/binary>>) when ?KEEPS(C) -> normal(Rest);
normal(<<>>) -> true;
normal(_) -> false.

%% Name as the engine spells it (RFC 7622 3.2): one trailing dot dropped,
%% the ideographic full stops read as dots, nameprep (case, NFKC), A-labels
%% as U-labels; error for what the engine refuses as a name (an empty
%% label, a failed nameprep or A-label).
normalise(Name) ->
	N = byte_size(Name) - 1,
	Bare = case Name of
		       <<B:N/binary, $.>> -> B;
		       _ -> Name
	       end,
	Dots = binary:replace(Bare, [<<16#3002/utf8>>, <<16#ff0e/utf8>>, <<16#ff61/utf8>>], <<".">>,
			      [global]),
	case jid:nameprep(Dots) of
		error ->
			error;
		Prepped ->
			Labels = binary:split(Prepped, <<".">>, [global]),
			case lists:member(<<>>, Labels) of
				true -> error;
				false -> ulabels(Labels, [])
			end
	end.

ulabels([], Acc) ->
	iolist_to_binary(lists:join(<<".">>, lists:reverse(Acc)));
ulabels([<<"xn--", Puny/binary>> | Rest], Acc) ->
	%% punycode comes with the idna application (erlang-idna); without it an
	%% A-label stays as it is, which a trusted U-label never matches.
	try unicode:characters_to_binary(punycode:decode(binary_to_list(Puny))) of
		U when is_binary(U) ->
			case jid:nameprep(U) of
				U -> ulabels(Rest, [U | Acc]);
				_ -> error   % not what an A-label of a valid U-label decodes to
			end;
		_ -> error
	catch _:_ ->
		ulabels(Rest, [<<"xn--", Puny/binary>> | Acc])
	end;
ulabels([L | Rest], Acc) ->
	ulabels(Rest, [L | Acc]).

%%%===================================================================
%%% ejabberd_commands
%%%===================================================================
%% The trust checks here; the admin acts in mod_server_trust_commands.
get_commands_spec() ->
	[#ejabberd_commands{
	    name = server_trust_is_trusted, tags = [s2s, server_trust],
	    desc = "Is PEER a trusted server buddy of HOST (optionally in group SCOPE, \"\" = any)?",
	    module = ?MODULE, function = cmd_is_trusted,
	    args = [{host, binary}, {peer, binary}, {scope, binary}],
	    args_example = [<<"verona.lit">>, <<"montague.lit">>, <<"">>],
	    result = {trusted, atom}, result_example = true},
	 #ejabberd_commands{
	    name = server_trust_status, tags = [s2s, server_trust],
	    desc = "Trusted peers, sidecar state and retry queue of HOST",
	    module = ?MODULE, function = cmd_status,
	    args = [{host, binary}],
	    args_example = [<<"verona.lit">>],
	    result = {status, string}}
	 | mod_server_trust_commands:get_commands_spec()].

cmd_is_trusted(Host, Peer, <<>>) -> is_trusted(Host, Peer);
cmd_is_trusted(Host, Peer, Scope) -> is_trusted(Host, Peer, Scope).

cmd_status(Host) ->
	case gen_mod:is_loaded(Host, ?MODULE) of
		false ->
			"not loaded";
		true ->
			S = mod_server_trust_sidecar:status(Host),
			lists:flatten(
			  io_lib:format("sidecar=~ts generation=~p queued=~p delivered=~p lost=~p "
					"dropped=~p superseded=~p trusted=~ts",
					[maps:get(sidecar, S), maps:get(generation, S),
					 maps:get(queued, S), maps:get(delivered, S), maps:get(lost, S),
					 maps:get(dropped, S), maps:get(superseded, S),
					 lists:join(",", [P || {P, _} <- trusted_peers(Host)])]))
	end.
