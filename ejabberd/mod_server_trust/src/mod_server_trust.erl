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
%%%  * with `federation: buddies`, s2s is refused with peers that are
%%%    neither trusted nor in a handshake this host started.
%%%----------------------------------------------------------------------
-module(mod_server_trust).
-author('server-trust').
-behaviour(gen_mod).

%% gen_mod callbacks.
-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1,
	 mod_options/1, mod_doc/0, mod_status/0]).
%% ejabberd_hooks callbacks.
-export([on_host_stanza/1, on_user_send_packet/1, on_s2s_allow_host/3]).
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
-define(USER_SEND_PRIO, 90).
-define(ALLOW_HOST_PRIO, 50).

-type peer() :: binary().

%%%===================================================================
%%% gen_mod callbacks
%%%===================================================================
-spec start(binary(), gen_mod:opts()) -> ok | {error, term()}.
start(Host, Opts) ->
	case mod_server_trust_sidecar:start(Host, Opts) of
		{ok, _Pid} ->
			hooks(Host, add),
			mod_server_trust_webadmin:hooks(Host, add),
			case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
				false -> ejabberd_commands:register_commands(get_commands_spec());
				true -> ok
			end,
			ok = mod_server_trust_adhoc:start(Host),
			?INFO_MSG("mod_server_trust (~ts): presence to the host JID goes to ~ts, "
				  "federation: ~ts", [Host, mod_server_trust_opt(Host, sidecar_url),
						      mod_server_trust_opt(Host, federation)]),
			ok;
		{error, _} = Err ->
			Err
	end.

-spec stop(binary()) -> ok.
stop(Host) ->
	mod_server_trust_adhoc:stop(Host),
	hooks(Host, delete),
	mod_server_trust_webadmin:hooks(Host, delete),
	case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
		false -> ejabberd_commands:unregister_commands(get_commands_spec());
		true -> ok
	end,
	mod_server_trust_sidecar:stop(Host).

-spec reload(binary(), gen_mod:opts(), gen_mod:opts()) -> ok.
reload(Host, NewOpts, _OldOpts) ->
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
			      desc => <<"buddies: s2s only with trusted peers and peers "
					"this host is in a handshake with.">>}},
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
	ejabberd_hooks:Op(user_send_packet, Host, ?MODULE, on_user_send_packet, ?USER_SEND_PRIO),
	ejabberd_hooks:Op(s2s_allow_host, Host, ?MODULE, on_s2s_allow_host, ?ALLOW_HOST_PRIO),
	ok.

%%%===================================================================
%%% ejabberd_hooks callbacks
%%%===================================================================

%% Presence addressed to the bare host JID. ejabberd_local runs this hook for
%% stanzas to the host that are neither iq nor result/error.
-spec on_host_stanza(stanza()) -> ok | stop.
on_host_stanza(#presence{to = #jid{luser = <<>>, lresource = <<>>, lserver = Host},
			 from = #jid{luser = <<>>, lresource = <<>>, lserver = Peer},
			 type = Type, id = Id}) when Peer /= Host ->
	mod_server_trust_sidecar:presence(Host, Peer, Type, Id),
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

%% The sidecar sends the host JID's presence with mod_http_api send_stanza,
%% which runs this hook: it tells the `federation: buddies` check which
%% untrusted peers this host is in a handshake with.
-spec on_user_send_packet({stanza(), map()}) -> {stanza(), map()}.
on_user_send_packet({#presence{from = #jid{luser = <<>>, lresource = <<>>, lserver = Host},
			       to = #jid{luser = <<>>, lresource = <<>>, lserver = Peer},
			       type = Type}, _State} = Acc) when Host /= Peer ->
	mod_server_trust_sidecar:host_sent(Host, Peer, Type),
	Acc;
on_user_send_packet(Acc) ->
	Acc.

%% s2s_allow_host is asked when an outgoing s2s stream is opened and when an
%% incoming one has authenticated; it cannot see stanzas. With
%% `federation: buddies` we allow trusted peers, plus peers this host
%% addressed with its own subscription presence (our admin requested them,
%% approved them, or we are telling them we revoked/denied) so that the
%% handshake can complete. A server we never addressed cannot open s2s with
%% us, so in this mode new buddies are always invited by our admin first.
-spec on_s2s_allow_host(allow | deny, binary(), binary()) -> allow | deny | {stop, deny}.
on_s2s_allow_host(allow, Host, Peer) ->
	case mod_server_trust_opt(Host, federation) of
		all ->
			allow;
		buddies ->
			case is_trusted(Host, Peer) orelse
				mod_server_trust_sidecar:in_handshake(Host, Peer) of
				true ->
					allow;
				false ->
					?INFO_MSG("mod_server_trust (~ts): refused s2s with ~ts "
						  "(federation: buddies, not a server buddy)", [Host, Peer]),
					{stop, deny}
			end
	end;
on_s2s_allow_host(Acc, _Host, _Peer) ->
	Acc.

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
