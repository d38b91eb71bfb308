%%%----------------------------------------------------------------------
%%% File    : mod_server_trust_commands.erl
%%% Purpose : the server-trust admin acts as ejabberd commands (ejabberdctl,
%%%           mod_http_api), carried out by the sidecar's admin API
%%%
%%% This Source Code Form is subject to the terms of the Mozilla Public
%%% License, v. 2.0. If a copy of the MPL was not distributed with this
%%% file, You can obtain one at https://mozilla.org/MPL/2.0/.
%%%
%%% Every command is one call to the sidecar's admin API (GET/POST/PUT
%%% /v1/hosts/HOST/...) with the admin token of the `admin_token_file`
%%% option, read at each call (a rotated file takes effect at once). The
%%% sidecar stays the single writer of the store and the engine decides what
%%% an act may do, so the commands work the same on every node of a cluster
%%% and answer exactly what `server-trust --json` answers: the sidecar's JSON,
%%% passed through as the result string. A refusal (unknown peer, already
%%% decided, sidecar down, no admin token) is an error result carrying the
%%% sidecar's message; nothing here changes anything by itself.
%%%----------------------------------------------------------------------
-module(mod_server_trust_commands).
-author('server-trust').

-export([get_commands_spec/0]).
%% ejabberd_commands callbacks.
-export([list/1, pending/1, show/2, request/2, approve/2, deny/2, revoke/2,
	 groups/2, set_groups/3, log/3]).
%% For the ad-hoc commands (mod_server_trust_adhoc) and the WebAdmin page
%% (mod_server_trust_webadmin): one act or call, with the driver named in
%% ejabberd's log.
-export([act/4, call/5]).
%% Trust for a time (the pending form's trust_for): `approve?for=90d`.
-export([approve_for/4]).

-include("logger.hrl").
-include("ejabberd_commands.hrl").

-define(DEFAULT_LOG, 50).
-define(BUSY_WAITS, [100, 200, 400, 800]).

%%%===================================================================
%%% Command definitions
%%%===================================================================
get_commands_spec() ->
	Host = {host, binary},
	Peer = {peer, binary},
	HostDesc = "Host served by mod_server_trust",
	PeerDesc = "Peer server domain",
	Ex = [<<"verona.lit">>, <<"capulet.lit">>],
	Res = {res, string},
	Act = fun(Name, Fun, Desc, Long, Example) ->
			  #ejabberd_commands{
			     name = Name, tags = [server_trust],
			     desc = Desc, longdesc = Long ++ errors_doc(),
			     module = ?MODULE, function = Fun,
			     args = [Host, Peer], args_desc = [HostDesc, PeerDesc],
			     args_example = Ex, result = Res, result_example = Example}
		  end,
	[#ejabberd_commands{
	    name = server_trust_list, tags = [server_trust],
	    desc = "List the server roster of HOST (as server-trust list --json)",
	    longdesc = "Every peer in HOST's server roster with its RFC 6121 state, whether it "
		"is trusted (state from or both) and its groups. JSON, the words of "
		"`server-trust --json list`." ++ errors_doc(),
	    module = ?MODULE, function = list,
	    args = [Host], args_desc = [HostDesc], args_example = [<<"verona.lit">>],
	    result = Res,
	    result_example = "[{\"approved_at\":\"2026-12-07T22:11:15Z\",\"groups\":[],\"note\":\"\","
		"\"peer\":\"capulet.lit\",\"pre_approved\":false,\"state\":\"both\",\"trusted\":true}]"},
	 #ejabberd_commands{
	    name = server_trust_pending, tags = [server_trust],
	    desc = "List the subscription requests of HOST waiting for a decision",
	    longdesc = "The pending request files of HOST, oldest first, as "
		"`server-trust --json pending`. Decide with server_trust_approve or "
		"server_trust_deny." ++ errors_doc(),
	    module = ?MODULE, function = pending,
	    args = [Host], args_desc = [HostDesc], args_example = [<<"verona.lit">>],
	    result = Res,
	    result_example = "[{\"decision\":\"pending\",\"first_seen\":\"2026-12-07T22:11:14Z\","
		"\"last_seen\":\"2026-12-07T22:11:14Z\",\"peer\":\"capulet.lit\","
		"\"stanza_id\":\"YPvtYgCwLQ\",\"times_seen\":1}]"},
	 Act(server_trust_show, show,
	     "Show what HOST knows of PEER: state, groups, request, stanzas waiting",
	     "As `server-trust --json show PEER`.",
	     "{\"entry\":{\"state\":\"both\",\"groups\":[],...},\"history\":[...],"
	     "\"peer\":\"capulet.lit\",\"pending\":null,\"waiting\":[]}"),
	 Act(server_trust_request, request,
	     "Ask PEER to become a server buddy of HOST (sends subscribe)",
	     "HOST's subscribe to PEER, as `server-trust request PEER`: the only way a "
	     "subscription request leaves this server. Recorded in the audit log with "
	     "actor api.",
	     "{\"act\":\"request\",\"detail\":\"done: 1 subscription stanza(s) accepted by the "
	     "XMPP server\",\"ok\":true,\"peer\":\"capulet.lit\",\"state\":\"none+pending-out\"}"),
	 Act(server_trust_approve, approve,
	     "Approve PEER's pending request to HOST (sends subscribed)",
	     "As `server-trust approve PEER`: PEER gets subscribed (and HOST's own "
	     "subscribe, reciprocate = true) and becomes trusted. Only a pending "
	     "request can be approved: after a deny, or without a request, the "
	     "answer is an error and nothing changes. Recorded in the audit log with "
	     "actor api.",
	     "{\"act\":\"approve\",\"detail\":\"done: 2 subscription stanza(s) accepted by the "
	     "XMPP server\",\"ok\":true,\"peer\":\"capulet.lit\",\"state\":\"from+pending-out\"}"),
	 Act(server_trust_deny, deny,
	     "Deny PEER's pending request to HOST (sends unsubscribed)",
	     "As `server-trust deny PEER`. Recorded in the audit log with actor api.",
	     "{\"act\":\"deny\",\"detail\":\"done: 1 subscription stanza(s) accepted by the "
	     "XMPP server\",\"ok\":true,\"peer\":\"capulet.lit\",\"state\":\"none\"}"),
	 Act(server_trust_revoke, revoke,
	     "Revoke HOST's trust in PEER (sends unsubscribed and unsubscribe)",
	     "As `server-trust revoke PEER`: PEER leaves HOST's trusted set at once. "
	     "Recorded in the audit log with actor api.",
	     "{\"act\":\"revoke\",\"detail\":\"done: 2 subscription stanza(s) accepted by the "
	     "XMPP server\",\"ok\":true,\"peer\":\"capulet.lit\",\"state\":\"none\"}"),
	 Act(server_trust_groups, groups,
	     "Show PEER's groups in HOST's server roster",
	     "As `server-trust --json groups PEER`.",
	     "{\"groups\":[\"incidents\"],\"peer\":\"capulet.lit\"}"),
	 #ejabberd_commands{
	    name = server_trust_set_groups, tags = [server_trust],
	    desc = "Replace PEER's groups in HOST's server roster",
	    longdesc = "As `server-trust groups PEER --set GROUPS`: GROUPS is a "
		"comma-separated list, \"\" clears. The peer must be in the roster. "
		"Recorded in the audit log with actor api." ++ errors_doc(),
	    module = ?MODULE, function = set_groups,
	    args = [Host, Peer, {groups, binary}],
	    args_desc = [HostDesc, PeerDesc, "Comma-separated groups (\"\" clears)"],
	    args_example = [<<"verona.lit">>, <<"capulet.lit">>, <<"incidents,ops">>],
	    result = Res,
	    result_example = "{\"groups\":[\"incidents\",\"ops\"],\"peer\":\"capulet.lit\"}"},
	 #ejabberd_commands{
	    name = server_trust_log, tags = [server_trust],
	    desc = "Show HOST's audit log (who decided what, when)",
	    longdesc = "As `server-trust --json log --peer PEER --limit LIMIT`: the last "
		"LIMIT records (0: 50, at most 10000), of PEER only unless PEER is "
		"\"\". Each record names its actor (peer, cli, file, api, engine, ...): "
		"these commands act as api." ++ errors_doc(),
	    module = ?MODULE, function = log,
	    args = [Host, Peer, {limit, integer}],
	    args_desc = [HostDesc, "Only this peer (\"\" for all)", "Records (0 for 50)"],
	    args_example = [<<"verona.lit">>, <<"capulet.lit">>, 10],
	    result = Res,
	    result_example = "[{\"actor\":\"api\",\"event\":\"approve\",\"from\":\"none+pending-in\","
		"\"peer\":\"capulet.lit\",\"time\":\"2026-12-07T22:11:15Z\",\"to\":\"from\"}]"}].

errors_doc() ->
	" Needs mod_server_trust's admin_token_file. Errors (exit status 1 in "
	"ejabberdctl; mod_http_api: 409 for an act the roster does not allow, e.g. "
	"already decided or not in the roster; 404 for a host not served; 400 for "
	"a bad domain; 500 with code 503 when the sidecar cannot be reached or the "
	"store stays locked by another process for 1.5 s) carry the sidecar's "
	"message and change nothing.".

%%%===================================================================
%%% Commands
%%%===================================================================
list(Host) -> call(via(), Host, get, [<<"roster">>], none).
pending(Host) -> call(via(), Host, get, [<<"pending">>], none).
show(Host, Peer) -> peer_call(via(), Host, Peer, get, [], none).
request(Host, Peer) -> act(via(), Host, Peer, <<"request">>).
approve(Host, Peer) -> act(via(), Host, Peer, <<"approve">>).
deny(Host, Peer) -> act(via(), Host, Peer, <<"deny">>).
revoke(Host, Peer) -> act(via(), Host, Peer, <<"revoke">>).
groups(Host, Peer) -> peer_call(via(), Host, Peer, get, [<<"groups">>], none).

%% The CLI's `--set` list: comma-separated, blanks trimmed, empty ones dropped.
set_groups(Host, Peer, List) ->
	Via = via(),
	Groups = [G || G0 <- binary:split(List, <<",">>, [global]),
		       G <- [string:trim(G0)], G /= <<>>],
	case peer_call(Via, Host, Peer, put, [<<"groups">>], #{<<"groups">> => Groups}) of
		{error, _, _, _} = Err ->
			Err;
		Ok ->
			?INFO_MSG("mod_server_trust (~ts): groups of ~ts set to ~ts by ~ts",
				  [Host, Peer, List, Via]),
			Ok
	end.

log(Host, Peer, Limit) ->
	Via = via(),
	N = case Limit of
		    L when is_integer(L), L > 0 -> L;
		    _ -> ?DEFAULT_LOG
	    end,
	Query = [{<<"limit">>, integer_to_binary(N)} | [{<<"peer">>, Peer} || Peer /= <<>>]],
	call(Via, Host, get, [<<"log">>], none, Query).

act(Via, Host, Peer, Act) ->
	case peer_call(Via, Host, Peer, post, [Act], #{}) of
		{error, _, _, _} = Err ->
			Err;
		Ok ->
			%% ejabberd's own log says which driver decided, as the audit
			%% log does (actor/0).
			?INFO_MSG("mod_server_trust (~ts): ~ts ~ts by ~ts",
				  [Host, Act, Peer, Via]),
			Ok
	end.

%% Approves Peer's request for a time only (For: 90d, 12h, 2w); the sidecar
%% checks the time and refuses one that is not, approving nothing.
approve_for(Via, Host, <<>>, _For) ->
	fail(Via, invalid_parameter, 400, <<"peer: empty">>, Host);
approve_for(Via, Host, Peer, For) ->
	case call(Via, Host, post, [<<"peers">>, Peer, <<"approve">>], #{}, [{<<"for">>, For}]) of
		{error, _, _, _} = Err ->
			Err;
		Ok ->
			?INFO_MSG("mod_server_trust (~ts): approve ~ts for ~ts by ~ts",
				  [Host, Peer, For, Via]),
			Ok
	end.

peer_call(Via, Host, <<>>, _Method, _Rest, _Body) ->
	fail(Via, invalid_parameter, 400, <<"peer: empty">>, Host);
peer_call(Via, Host, Peer, Method, Rest, Body) ->
	call(Via, Host, Method, [<<"peers">>, Peer | Rest], Body).

call(Via, Host, Method, Path, Body) ->
	call(Via, Host, Method, Path, Body, []).

call(Via, Host0, Method, Path, Body, Query) ->
	case served(Host0) of
		{error, Msg} ->
			fail(Via, not_exists, 404, Msg, Host0);
		{ok, Host} ->
			case admin_token(Host) of
				{error, Msg} ->
					fail(Via, admin_token, 503, Msg, Host);
				{ok, Token} ->
					Url = url(Host, Path, Query),
					put(server_trust_actor, actor(Via)),
					Answer = http(Host, Method, Url, Token, Body),
					erase(server_trust_actor),
					answer(Via, Host, Answer)
			end
	end.

%% A host this node serves with the module (nameprepped, as the sidecar
%% names it).
served(Host0) ->
	case jid:nameprep(Host0) of
		error ->
			{error, <<"host: not a domain">>};
		Host ->
			case gen_mod:is_loaded(Host, mod_server_trust) of
				true -> {ok, Host};
				false -> {error, unicode:characters_to_binary(
						   io_lib:format("mod_server_trust does not run on ~ts", [Host]))}
			end
	end.

%% The sidecar's admin token, from the file named by admin_token_file.
%% The hook token (token_file) is never used here: the sidecar refuses it on
%% the admin endpoints, and it must, since every presence carries it.
admin_token(Host) ->
	case gen_mod:get_module_opt(Host, mod_server_trust, admin_token_file) of
		undefined ->
			{error, unicode:characters_to_binary(
				  io_lib:format("admin commands are off on ~ts: set mod_server_trust's "
						"admin_token_file to the sidecar's admin token file", [Host]))};
		File ->
			case file:read_file(File) of
				{ok, Bin} ->
					%% One line of printable ASCII, as the sidecar
					%% asks of its tokens (nothing else reaches the
					%% request's header).
					T = string:trim(Bin),
					case T /= <<>> andalso
						lists:all(fun(C) -> C > 32 andalso C < 127 end,
							  binary_to_list(T)) of
						true -> {ok, T};
						false -> {error, unicode:characters_to_binary(
								   io_lib:format("admin_token_file ~ts: not one line of "
										 "printable ASCII", [File]))}
					end;
				{error, Why} ->
					{error, unicode:characters_to_binary(
						  io_lib:format("cannot read admin_token_file ~ts: ~ts",
								[File, file:format_error(Why)]))}
			end
	end.

url(Host, Path, Query) ->
	Base = string:trim(binary_to_list(
			     gen_mod:get_module_opt(Host, mod_server_trust, sidecar_url)),
			   trailing, "/"),
	Segs = [[$/ | pct(S)] || S <- [<<"v1">>, <<"hosts">>, Host | Path]],
	Q = case Query of
		    [] -> "";
		    _ -> [$? | lists:join($&, [[pct(K), $=, pct(V)] || {K, V} <- Query])]
	    end,
	lists:flatten([Base, Segs, Q]).

%% Percent-encodes everything but RFC 3986 unreserved characters: a peer
%% name never adds a path segment or a query parameter.
pct(Bin) ->
	lists:flatten(
	  [case C of
		   _ when C >= $a, C =< $z; C >= $A, C =< $Z; C >= $0, C =< $9;
			  C == $-; C == $.; C == $_; C == $~ -> C;
		   _ -> io_lib:format("%~2.16.0B", [C])
	   end || <<C>> <= Bin]).

%% One request on its own connection (gen_tcp, `Connection: close`), not
%% httpc: httpc answers a 503 that carries Retry-After (the sidecar's "store
%% locked by another process") by sending the request again a second later,
%% for as long as the 503s come, so a lock held for long would hold the
%% command as long. Here a 503 is tried again a bounded number of times
%% (?BUSY_WAITS) and the whole exchange has the module's `timeout`.
http(Host, Method, Url, Token, Body) ->
	Timeout = gen_mod:get_module_opt(Host, mod_server_trust, timeout),
	ConnectTimeout = gen_mod:get_module_opt(Host, mod_server_trust, connect_timeout),
	Payload = case Body of
			  none -> <<>>;
			  _ -> jiffy:encode(Body)
		  end,
	busy(fun() -> exchange(Method, Url, Token, Payload, ConnectTimeout, Timeout) end,
	     ?BUSY_WAITS).

%% 503: the store lock is held by another process (the CLI, for milliseconds;
%% the sidecar never waits for it) or the sidecar's connections are all taken.
%% Nothing was done, so the call is made again, 0.1 s later doubling, 1.5 s in
%% all, before the 503 is the answer.
busy(Call, Waits) ->
	case {Call(), Waits} of
		{{ok, {{_, 503, _}, _, _}}, [Ms | More]} ->
			timer:sleep(Ms),
			busy(Call, More);
		{Result, _} ->
			Result
	end.

-spec exchange(get | post | put, string(), binary(), binary(), pos_integer(), pos_integer()) ->
	{ok, {{string(), integer(), binary()}, [{term(), binary()}], binary()}} | {error, term()}.
exchange(Method, Url, Token, Payload, ConnectTimeout, Timeout) ->
	case uri_string:parse(Url) of
		#{scheme := "http", host := H, path := Path} = U ->
			Port = maps:get(port, U, 80),
			Target = case maps:get(query, U, "") of
					 "" -> Path;
					 Q -> Path ++ "?" ++ Q
				 end,
			Deadline = erlang:monotonic_time(millisecond) + Timeout,
			Family = case inet:parse_address(H) of
					 {ok, {_, _, _, _, _, _, _, _}} -> [inet6];
					 _ -> []
				 end,
			case gen_tcp:connect(H, Port, Family ++ [binary, {active, false}, {packet, http_bin}],
					     ConnectTimeout) of
				{ok, S} ->
					%% Once the request is sent the sidecar may have acted:
					%% a failure from here on is {no_answer, _}, not "unreachable".
					try
						ok = gen_tcp:send(S, request_head(Method, H, Port, Target, Token,
										  Payload)),
						response(S, Deadline)
					catch
						error:{badmatch, {error, Why}} -> {error, {no_answer, Why}};
						error:Why -> {error, {no_answer, {bad_response, Why}}}
					after
						gen_tcp:close(S)
					end;
				{error, _} = Err ->
					Err
			end;
		_ ->
			{error, admin_commands_need_an_http_sidecar_url}
	end.

request_head(Method, H, Port, Target, Token, Payload) ->
	M = string:uppercase(atom_to_list(Method)),
	Len = case {Method, Payload} of
		      {get, <<>>} -> [];
		      _ -> ["Content-Type: application/json\r\nContent-Length: ",
			    integer_to_list(byte_size(Payload)), "\r\n"]
	      end,
	[M, " ", Target, " HTTP/1.1\r\nHost: ", H, ":", integer_to_list(Port),
	 "\r\nAuthorization: Bearer ", Token, "\r\nX-Server-Trust-Actor: ", actor(),
	 "\r\nConnection: close\r\n", Len, "\r\n",
	 Payload].

%% @doc The audit log's actor for a call by Via (the sidecar accepts only api,
%% ejabberdctl, http-api, adhoc and webadmin): the ad-hoc commands pass
%% <<"ad-hoc command of JID">>, the WebAdmin page webadmin, the commands the
%% driver they found on the stack.
actor(webadmin) -> <<"webadmin">>;
actor(<<"ad-hoc", _/binary>>) -> <<"adhoc">>;
actor(ejabberdctl) -> <<"ejabberdctl">>;
actor(mod_http_api) -> <<"http-api">>;
actor(_) -> <<"api">>.

%% The actor of the call under way (set by call/6 around the request).
actor() ->
	case get(server_trust_actor) of
		A when is_binary(A) -> A;
		_ -> <<"api">>
	end.

response(S, Deadline) ->
	{ok, {http_response, Vsn, Code, Reason}} = gen_tcp:recv(S, 0, left(Deadline)),
	Headers = headers(S, Deadline, []),
	ok = inet:setopts(S, [{packet, raw}]),
	Raw = body(S, Deadline, []),
	Body = case lists:keyfind('Transfer-Encoding', 1, Headers) of
		       {_, <<"chunked">>} -> unchunk(Raw, []);
		       _ -> Raw
	       end,
	{ok, {{Vsn, Code, Reason}, Headers, Body}}.

headers(S, Deadline, Acc) ->
	case gen_tcp:recv(S, 0, left(Deadline)) of
		{ok, {http_header, _, Name, _, Value}} -> headers(S, Deadline, [{Name, Value} | Acc]);
		{ok, http_eoh} -> lists:reverse(Acc);
		{ok, Other} -> error({badmatch, {error, {bad_header, Other}}});
		{error, _} = Err -> error({badmatch, Err})
	end.

%% Until the sidecar closes the connection (Connection: close).
body(S, Deadline, Acc) ->
	case gen_tcp:recv(S, 0, left(Deadline)) of
		{ok, Data} -> body(S, Deadline, [Data | Acc]);
		{error, closed} -> iolist_to_binary(lists:reverse(Acc));
		{error, _} = Err -> error({badmatch, Err})
	end.

unchunk(Bin, Acc) ->
	case binary:split(Bin, <<"\r\n">>) of
		[SizeLine, Rest] ->
			[Hex | _] = binary:split(SizeLine, <<";">>),
			case binary_to_integer(string:trim(Hex), 16) of
				0 -> iolist_to_binary(lists:reverse(Acc));
				N -> <<Chunk:N/binary, "\r\n", More/binary>> = Rest,
				     unchunk(More, [Chunk | Acc])
			end;
		_ ->
			iolist_to_binary(lists:reverse(Acc))
	end.

left(Deadline) ->
	max(0, Deadline - erlang:monotonic_time(millisecond)).

%% The body as it came (UTF-8): mod_http_api puts it in a JSON string, and
%% ejabberdctl prints its bytes one for one (the ctl's output is latin1), so
%% names beyond ASCII come out as the CLI prints them.
answer(_Via, _Host, {ok, {{_, Code, _}, _Headers, Body}}) when Code >= 200, Code < 300 ->
	Body;
answer(Via, Host, {ok, {{_, Code, _}, _Headers, Body}}) ->
	Msg = try jiffy:decode(Body, [return_maps]) of
		      #{<<"error">> := M} when is_binary(M) -> M;
		      _ -> utf8(Body)
	      catch _:_ -> utf8(Body)
	      end,
	{Atom, Status} = case Code of
				 409 -> {conflict, 409};
				 404 -> {not_exists, 404};
				 400 -> {invalid_parameter, 400};
				 C when C == 401; C == 403; C == 429 -> {admin_token, 503};
				 C -> {sidecar_error, C}
			 end,
	fail(Via, Atom, Status, unicode:characters_to_binary(
				  io_lib:format("sidecar answered ~p: ~ts", [Code, Msg])), Host);
answer(Via, Host, {error, {no_answer, Why}}) ->
	fail(Via, sidecar_unavailable, 503,
	     unicode:characters_to_binary(
	       io_lib:format("no answer from the sidecar (~0p): an act may have been carried out "
			     "all the same, see server_trust_show", [Why])), Host);
answer(Via, Host, {error, Why}) ->
	Url = gen_mod:get_module_opt(Host, mod_server_trust, sidecar_url),
	fail(Via, sidecar_unavailable, 503,
	     unicode:characters_to_binary(io_lib:format("cannot reach the sidecar at ~ts: ~0p",
					    [Url, Why])), Host).

%% Not from the sidecar, maybe (a proxy's page): printable whatever it holds.
utf8(Bin) ->
	case unicode:characters_to_binary(Bin) of
		B when is_binary(B) -> B;
		_ -> <<"(an answer that is not UTF-8)">>
	end.

%% An error result: ejabberdctl prints "Error: Atom: Msg" and exits 1;
%% mod_http_api answers 409 (conflict), 404 (not_exists) or 500 with Code in
%% the body, and 400 for a bad argument (a throw is its only way to say 400).
fail(mod_http_api, invalid_parameter, _Code, Msg, _Host) ->
	throw({invalid_parameter, Msg});
fail(_Via, Atom, Code, Msg, Host) ->
	?DEBUG("mod_server_trust (~ts): command refused: ~ts", [Host, Msg]),
	{error, Atom, Code, Msg}.

%% @doc The driver that runs the command in this process: ejabberdctl,
%% mod_http_api or erlang (anything else, e.g. a shell). ejabberd 23.01 does
%% not hand a command its caller, but both drivers wait for the result on
%% their own stack (not a tail call), so it can be read there.
-spec via() -> ejabberdctl | mod_http_api | erlang.
via() ->
	{current_stacktrace, Stack} = erlang:process_info(self(), current_stacktrace),
	Mods = [M || {M, _F, _A, _L} <- Stack],
	case {lists:member(ejabberd_ctl, Mods), lists:member(mod_http_api, Mods)} of
		{true, _} -> ejabberdctl;
		{_, true} -> mod_http_api;
		_ -> erlang
	end.
