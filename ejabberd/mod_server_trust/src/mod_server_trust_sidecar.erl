%%%----------------------------------------------------------------------
%%% File    : mod_server_trust_sidecar.erl
%%% Purpose : mod_server_trust's per-host worker: the only process that
%%%           talks HTTP to the server-trust sidecar
%%%
%%% This Source Code Form is subject to the terms of the Mozilla Public
%%% License, v. 2.0. If a copy of the MPL was not distributed with this
%%% file, You can obtain one at https://mozilla.org/MPL/2.0/.
%%%
%%% One gen_server per host (under ejabberd_gen_mod_sup), three jobs, all
%%% asynchronous httpc requests so the worker never blocks:
%%%  * presence: POST /v1/hook/presence, one at a time in arrival order from
%%%    a bounded queue; kept and retried with backoff while the sidecar is
%%%    unreachable (or answers 429/5xx); when the queue is full the oldest is
%%%    dropped and logged as lost. The stanza itself was dropped by the hook
%%%    already, so a lost one is simply never answered: never approved.
%%%  * trusted set: long poll GET /v1/hook/trusted?host=H&since=G&wait=25,
%%%    mirrored into a public ETS table (read_concurrency) that
%%%    mod_server_trust:is_trusted/2,3 read without any message passing.
%%%    Long poll rather than push: every node of a cluster keeps its own
%%%    copy this way and the sidecar needs to know nothing about the nodes.
%%%  * hello: POST /v1/hook/hello at start and whenever the long poll comes
%%%    back after a failure (sidecar restarted): the sidecar then sends our
%%%    presence to approved peers and probes those that approved us.
%%%----------------------------------------------------------------------
-module(mod_server_trust_sidecar).
-author('server-trust').
-behaviour(gen_server).

%% API (called by mod_server_trust and its hooks).
-export([start/2, stop/1, reload/2, presence/4, host_sent/3, in_handshake/2,
	 lookup/2, trusted/1, status/1]).
%% gen_server callbacks.
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
	 code_change/3]).

-include("logger.hrl").

-define(POLL_WAIT, 25).                 %% seconds the sidecar may hold a poll
-define(POLL_SLACK, 10000).             %% ms on top of POLL_WAIT before we give up
-define(MIN_DELAY, 200).                %% retry backoff: 0.2 s doubling ...
-define(MAX_DELAY, 5000).               %% ... up to 5 s (the sidecar is local)
-define(WARN_EVERY, 10000).             %% at most one warning per kind per 10 s
-define(HANDSHAKE_TTL, 60000).          %% s2s allowance after an unsubscribe etc.
-define(HANDSHAKE_MAX, 10000).          %% bound on remembered handshake peers
-define(SERVER_ERROR_TRIES, 5).         %% 500s for one presence before it is given up
-define(TYPES, [subscribe, subscribed, unsubscribe, unsubscribed, probe,
		available, unavailable]).

-record(state,
	{host                    :: binary(),
	 tab                     :: atom(),
	 profile                 :: atom(),
	 url                     :: string(),
	 token_file              :: binary() | undefined,
	 token = <<>>            :: binary(),
	 timeout                 :: pos_integer(),
	 connect_timeout         :: pos_integer(),
	 queue_max               :: pos_integer(),
	 queue = queue:new()     :: queue:queue(map()),
	 qlen = 0                :: non_neg_integer(),
	 inflight                :: undefined | {reference(), map()},
	 retry_timer             :: undefined | reference(),
	 retry_delay = ?MIN_DELAY :: pos_integer(),
	 poll                    :: undefined | reference(),
	 poll_timer              :: undefined | reference(),
	 poll_delay = ?MIN_DELAY :: pos_integer(),
	 generation = null       :: term(),
	 sidecar = unknown       :: unknown | up | down,
	 hello_due = true        :: boolean(),
	 hello                   :: undefined | reference(),
	 hello_timer             :: undefined | reference(),
	 hello_delay = ?MIN_DELAY :: pos_integer(),
	 delivered = 0           :: non_neg_integer(),
	 lost = 0                :: non_neg_integer(),
	 warned = #{}            :: #{atom() => {integer(), non_neg_integer()}}}).

%%%===================================================================
%%% API
%%%===================================================================
-spec start(binary(), gen_mod:opts()) -> {ok, pid()} | {error, term()}.
start(Host, Opts) ->
	gen_mod:start_child(?MODULE, Host, Opts).

-spec stop(binary()) -> ok.
stop(Host) ->
	_ = gen_mod:stop_child(?MODULE, Host),
	persistent_term:erase({?MODULE, Host}),
	ok.

-spec reload(binary(), gen_mod:opts()) -> ok.
reload(Host, Opts) ->
	gen_server:cast(proc(Host), {reload, Opts}).

%% From the local_send_to_resource_hook: never blocks the router.
-spec presence(binary(), binary(), atom(), binary()) -> ok.
presence(Host, Peer, Type, Id) ->
	case lists:member(Type, ?TYPES) of
		true -> gen_server:cast(proc(Host), {presence, Peer, Type, Id});
		false -> ok
	end.

%% The host JID is sending presence to Peer (user_send_packet, before the
%% stanza is routed, so the s2s check that follows already sees it).
-spec host_sent(binary(), binary(), atom()) -> ok.
host_sent(Host, Peer, Type) ->
	case table(Host) of
		undefined ->
			ok;
		Tab ->
			Key = {handshake, Peer},
			Now = erlang:monotonic_time(millisecond),
			Until = case Type of
					T when T == subscribe; T == subscribed -> infinity;
					T when T == unsubscribe; T == unsubscribed -> Now + ?HANDSHAKE_TTL;
					_ ->
						case ets:lookup(Tab, Key) of
							[{_, infinity}] -> infinity;
							_ -> Now + ?HANDSHAKE_TTL
						end
				end,
			case ets:info(Tab, size) < ?HANDSHAKE_MAX orelse ets:member(Tab, Key) of
				true -> ets:insert(Tab, {Key, Until});
				false -> ok
			end,
			ok
	end.

-spec in_handshake(binary(), binary()) -> boolean().
in_handshake(Host, Peer) ->
	case table(Host) of
		undefined ->
			false;
		Tab ->
			case ets:lookup(Tab, {handshake, Peer}) of
				[{_, infinity}] -> true;
				[{_, Until}] -> erlang:monotonic_time(millisecond) < Until;
				[] -> false
			end
	end.

%% Trust lookup for mod_server_trust:is_trusted/2,3 (Host and Peer nameprepped):
%% no_table when Host has no table (not served here, or not in normal form).
-spec lookup(binary(), binary()) -> {ok, [binary()]} | error | no_table.
lookup(Host, Peer) ->
	case table(Host) of
		undefined ->
			no_table;
		Tab ->
			try ets:lookup(Tab, Peer) of
				[{_, Groups}] -> {ok, Groups};
				[] -> error
			catch error:badarg ->   %% worker restarting: fail closed
				error
			end
	end.

-spec trusted(binary()) -> [{binary(), [binary()]}].
trusted(Host) ->
	case table(Host) of
		undefined ->
			[];
		Tab ->
			try lists:sort(ets:select(Tab, [{{'$1', '$2'}, [{is_binary, '$1'}], [{{'$1', '$2'}}]}]))
			catch error:badarg -> []
			end
	end.

-spec status(binary()) -> map().
status(Host) ->
	try gen_server:call(proc(Host), status, 5000)
	catch exit:_ ->
		#{sidecar => <<"worker not running">>, generation => null,
		  queued => 0, delivered => 0, lost => 0, peers => 0}
	end.

%%%===================================================================
%%% gen_server callbacks
%%%===================================================================
init([Host, Opts]) ->
	process_flag(trap_exit, true),
	Tab = gen_mod:get_module_proc(Host, mod_server_trust_peers),
	ets:new(Tab, [named_table, public, set, {read_concurrency, true}]),
	persistent_term:put({?MODULE, Host}, Tab),
	Profile = gen_mod:get_module_proc(Host, mod_server_trust_httpc),
	{ok, _} = start_profile(Profile),
	State = configure(#state{host = Host, tab = Tab, profile = Profile}, Opts),
	self() ! poll,
	{ok, send_hello(State)}.

handle_call(status, _From, #state{} = S) ->
	{reply, #{sidecar => atom_to_binary(S#state.sidecar, utf8),
		  generation => S#state.generation,
		  queued => S#state.qlen + case S#state.inflight of undefined -> 0; _ -> 1 end,
		  delivered => S#state.delivered,
		  lost => S#state.lost,
		  peers => length(trusted(S#state.host))}, S};
handle_call(_Request, _From, State) ->
	{reply, {error, badarg}, State}.

handle_cast({presence, Peer, Type, Id}, State) ->
	Item = #{peer => Peer, type => Type,
		 body => json(#{<<"host">> => State#state.host, <<"from">> => Peer,
				<<"type">> => atom_to_binary(Type, utf8),
				<<"id">> => case Id of <<>> -> null; _ -> Id end})},
	{noreply, send_next(enqueue(Item, State))};
handle_cast({reload, Opts}, State) ->
	State1 = configure(State, Opts),
	%% Start a fresh poll against the (maybe new) URL.
	_ = cancel(State1#state.poll, State1),
	{noreply, schedule_poll(0, State1#state{poll = undefined})};
handle_cast(_Msg, State) ->
	{noreply, State}.

handle_info({http, {Ref, Result}}, #state{inflight = {Ref, Item}} = State) ->
	{noreply, send_next(presence_result(classify(Result), Item, State#state{inflight = undefined}))};
handle_info({http, {Ref, Result}}, #state{poll = Ref} = State) ->
	{noreply, poll_result(classify(Result), State#state{poll = undefined})};
handle_info({http, {Ref, Result}}, #state{hello = Ref} = State) ->
	{noreply, hello_result(classify(Result), State#state{hello = undefined})};
handle_info({http, _Stale}, State) ->
	{noreply, State};
handle_info(retry, State) ->
	{noreply, send_next(State#state{retry_timer = undefined})};
handle_info(poll, State) ->
	{noreply, start_poll(State#state{poll_timer = undefined})};
handle_info(hello, State) ->
	{noreply, send_hello(State#state{hello_timer = undefined})};
handle_info(_Info, State) ->
	{noreply, State}.

terminate(_Reason, #state{host = Host, profile = Profile} = State) ->
	case State#state.qlen + case State#state.inflight of undefined -> 0; _ -> 1 end of
		0 -> ok;
		N -> ?WARNING_MSG("mod_server_trust (~ts): stopping with ~p presence(s) not yet "
				  "delivered to the sidecar: lost (never approved)", [Host, N])
	end,
	_ = inets:stop(httpc, Profile),
	ok.

code_change(_OldVsn, State, _Extra) ->
	{ok, State}.

%%%===================================================================
%%% Internal functions
%%%===================================================================
proc(Host) ->
	gen_mod:get_module_proc(Host, ?MODULE).

table(Host) ->
	persistent_term:get({?MODULE, Host}, undefined).

start_profile(Profile) ->
	R = case inets:start(httpc, [{profile, Profile}]) of
		    {ok, Pid} -> {ok, Pid};
		    {error, {already_started, Pid}} -> {ok, Pid};
		    Err -> Err
	    end,
	%% A fresh connection per request: a parked long poll must never hold
	%% up a presence POST behind it on a shared keep-alive connection.
	ok = httpc:set_options([{max_keep_alive_length, 0}, {keep_alive_timeout, 0},
				{max_pipeline_length, 0}, {max_sessions, 8}], Profile),
	R.

configure(State, Opts) ->
	TokenFile = gen_mod:get_opt(token_file, Opts),
	Url = string:trim(binary_to_list(gen_mod:get_opt(sidecar_url, Opts)), trailing, "/"),
	State1 = State#state{url = Url, token_file = TokenFile,
			     timeout = gen_mod:get_opt(timeout, Opts),
			     connect_timeout = gen_mod:get_opt(connect_timeout, Opts),
			     queue_max = gen_mod:get_opt(queue_max, Opts)},
	read_token(State1).

read_token(#state{token_file = undefined, host = Host} = State) ->
	?WARNING_MSG("mod_server_trust (~ts): no token_file set; the sidecar will refuse "
		     "our requests", [Host]),
	State#state{token = <<>>};
read_token(#state{token_file = File, host = Host} = State) ->
	case file:read_file(File) of
		{ok, Bin} ->
			State#state{token = string:trim(Bin)};
		{error, Why} ->
			?WARNING_MSG("mod_server_trust (~ts): cannot read token_file ~ts: ~ts",
				     [Host, File, file:format_error(Why)]),
			State#state{token = <<>>}
	end.

json(Map) ->
	iolist_to_binary(jiffy:encode(Map)).

headers(#state{token = <<>>}) -> [];
headers(#state{token = T}) -> [{"authorization", "Bearer " ++ binary_to_list(T)}].

http_opts(Timeout, State) ->
	[{timeout, Timeout}, {connect_timeout, State#state.connect_timeout}].

post(Path, Body, State) ->
	Req = {State#state.url ++ Path, headers(State), "application/json", Body},
	request(post, Req, State#state.timeout, State).

request(Method, Req, Timeout, State) ->
	case httpc:request(Method, Req, http_opts(Timeout, State),
			   [{sync, false}, {body_format, binary}], State#state.profile) of
		{ok, Ref} -> {ok, Ref};
		{error, Why} -> {error, Why}
	end.

cancel(undefined, _State) -> ok;
cancel(Ref, State) -> httpc:cancel_request(Ref, State#state.profile).

%% ok | {retry, Why} (sidecar down, overloaded, 5xx) | {refused, Code, Body}
classify({{_, Code, _}, _Headers, Body}) when Code >= 200, Code < 300 ->
	{ok, Body};
classify({{_, Code, _}, _Headers, _Body}) when Code == 429; Code == 502; Code == 503; Code == 504 ->
	{retry, io_lib:format("HTTP ~p", [Code])};
classify({{_, Code, _}, _Headers, Body}) when Code >= 500 ->
	{server_error, Code, Body};
classify({{_, Code, _}, _Headers, Body}) ->
	{refused, Code, Body};
classify({error, Why}) ->
	{retry, io_lib:format("~p", [Why])}.

%% --- presence queue ----------------------------------------------------
queued(#state{qlen = N, inflight = undefined}) -> N;
queued(#state{qlen = N}) -> N + 1.

enqueue(Item, #state{queue_max = Max} = State) ->
	case queued(State) >= Max of
		false ->
			State#state{queue = queue:in(Item, State#state.queue), qlen = State#state.qlen + 1};
		true ->
			%% Full. Something is lost; its stanza was dropped already, so it is
			%% simply never answered. Availability and probes go first (the hello
			%% after an outage exchanges them again), subscription requests last;
			%% the oldest of a kind first (the one in flight may be arriving now).
			{Lost, Q} = evict(Item, State#state.queue),
			lost(Lost, io_lib:format("retry queue full (queue_max ~p)", [Max]),
			     State#state{queue = Q}, lost)
	end.

evict(Item, Q) ->
	IsStatus = fun(#{type := T}) -> lists:member(T, [available, unavailable, probe]) end,
	L = queue:to_list(Q),
	case lists:search(IsStatus, L) of
		{value, Old} ->
			{Old, queue:from_list(lists:delete(Old, L) ++ [Item])};
		false ->
			case IsStatus(Item) orelse L == [] of
				true -> {Item, Q};
				false -> {hd(L), queue:from_list(tl(L) ++ [Item])}
			end
	end.

%% Kind: the rate-limit bucket (a full queue and refusals are reported apart).
lost(#{peer := Peer, type := Type}, Why, #state{host = Host} = State, Kind) ->
	State1 = State#state{lost = State#state.lost + 1},
	warn(Kind, "mod_server_trust (~ts): ~ts: lost ~ts presence from ~ts (never approved; "
	     "~p lost so far)", [Host, Why, Type, Peer, State1#state.lost], State1).

send_next(#state{inflight = undefined, retry_timer = undefined, qlen = N} = State) when N > 0 ->
	{{value, Item}, Q} = queue:out(State#state.queue),
	State1 = State#state{queue = Q, qlen = N - 1},
	case post("/v1/hook/presence", maps:get(body, Item), State1) of
		{ok, Ref} ->
			State1#state{inflight = {Ref, Item}};
		{error, Why} ->
			presence_result({retry, io_lib:format("~p", [Why])}, Item, State1)
	end;
send_next(State) ->
	State.

presence_result({ok, _}, _Item, State) ->
	State#state{retry_delay = ?MIN_DELAY, delivered = State#state.delivered + 1};
presence_result({retry, Why}, Item, #state{host = Host} = State) ->
	%% Back to the front: order is kept, nothing is skipped.
	State1 = State#state{queue = queue:in_r(Item, State#state.queue), qlen = State#state.qlen + 1},
	State2 = warn(presence_retry, "mod_server_trust (~ts): sidecar did not take ~ts presence "
		      "from ~ts (~ts); ~p queued, retrying", [Host, maps:get(type, Item),
							      maps:get(peer, Item), Why, queued(State1)], State1),
	Delay = State2#state.retry_delay,
	State2#state{retry_timer = erlang:send_after(Delay, self(), retry),
		     retry_delay = min(Delay * 2, ?MAX_DELAY)};
presence_result({server_error, Code, Body}, Item, State) ->
	%% Retried like an outage, but a presence the sidecar keeps failing on must
	%% not hold up the ones behind it for ever.
	case maps:get(errors, Item, 0) + 1 of
		N when N >= ?SERVER_ERROR_TRIES ->
			lost(Item, io_lib:format("sidecar failed on it ~p times (HTTP ~p ~ts)",
						 [N, Code, snippet(Body)]), State, refused);
		N ->
			presence_result({retry, io_lib:format("HTTP ~p", [Code])}, Item#{errors => N}, State)
	end;
presence_result({refused, Code, Body}, Item, State) ->
	%% 4xx: retrying would not change the answer.
	State1 = maybe_reread_token(Code, State),
	lost(Item, io_lib:format("sidecar refused it (HTTP ~p ~ts)", [Code, snippet(Body)]),
	     State1#state{retry_delay = ?MIN_DELAY}, refused).

maybe_reread_token(Code, State) when Code == 401; Code == 403 -> read_token(State);
maybe_reread_token(_Code, State) -> State.

%% Sidecar reachable again: send what waited, now.
flush_now(#state{retry_timer = undefined} = State) ->
	send_next(State);
flush_now(#state{retry_timer = T} = State) ->
	_ = erlang:cancel_timer(T),
	send_next(State#state{retry_timer = undefined, retry_delay = ?MIN_DELAY}).

%% --- trusted set (long poll) -------------------------------------------
start_poll(#state{poll = undefined, host = Host} = State) ->
	Since = case State#state.generation of
			null -> "-1";
			G when is_integer(G) -> integer_to_list(G);
			G when is_binary(G) -> quote(G);
			G -> quote(iolist_to_binary(jiffy:encode(G)))
		end,
	Url = State#state.url ++ "/v1/hook/trusted?host=" ++ quote(Host)
		++ "&since=" ++ Since ++ "&wait=" ++ integer_to_list(?POLL_WAIT),
	case request(get, {Url, headers(State)}, ?POLL_WAIT * 1000 + ?POLL_SLACK, State) of
		{ok, Ref} -> State#state{poll = Ref};
		{error, Why} -> poll_result({retry, io_lib:format("~p", [Why])}, State)
	end;
start_poll(State) ->
	State.

quote(Bin) ->
	uri_string:quote(binary_to_list(Bin)).

schedule_poll(Delay, State) ->
	State#state{poll_timer = erlang:send_after(Delay, self(), poll)}.

poll_result({ok, Body}, #state{host = Host} = State) ->
	try jiffy:decode(Body, [return_maps]) of
		#{<<"generation">> := G, <<"peers">> := Peers} when is_list(Peers) ->
			N = mirror(State#state.tab, [{nameprep(P), [X || X <- Gs, is_binary(X)]}
						     || #{<<"peer">> := P} = E <- Peers, is_binary(P),
							Gs <- [maps:get(<<"groups">>, E, [])], is_list(Gs)]),
			case State#state.sidecar of
				up -> ok;
				_ -> ?INFO_MSG("mod_server_trust (~ts): sidecar reachable, ~p trusted "
					       "peer(s), generation ~p", [Host, N, G])
			end,
			State1 = State#state{generation = G, sidecar = up, poll_delay = ?MIN_DELAY},
			State2 = case State1#state.hello_due of
					 true -> send_hello(cancel_hello_timer(State1));
					 false -> State1
				 end,
			start_poll(flush_now(State2));
		_ ->
			poll_failed("unexpected trusted-set reply", State)
	catch _:_ ->
		poll_failed("trusted-set reply is not JSON", State)
	end;
poll_result({retry, Why}, State) ->
	poll_failed(Why, State);
poll_result({server_error, Code, Body}, State) ->
	poll_failed(io_lib:format("HTTP ~p ~ts", [Code, snippet(Body)]), State);
poll_result({refused, Code, Body}, State) ->
	poll_failed(io_lib:format("HTTP ~p ~ts", [Code, snippet(Body)]),
		    maybe_reread_token(Code, State#state{poll_delay = ?MAX_DELAY})).

%% The trusted set is kept as it was (a sidecar restart must not make every
%% buddy untrusted for a moment); only the sidecar changes it.
poll_failed(Why, #state{host = Host} = State) ->
	State1 = warn(poll, "mod_server_trust (~ts): trusted-set poll failed: ~ts; keeping "
		      "the last known set (~p peers), retrying",
		      [Host, Why, length(trusted(Host))], State),
	Delay = State1#state.poll_delay,
	%% generation = null: the next poll asks with since=-1, which the sidecar
	%% answers at once, so a restarted sidecar is noticed (and greeted) at
	%% once instead of after a parked poll.
	schedule_poll(Delay, State1#state{sidecar = down, hello_due = true, generation = null,
					  poll_delay = min(Delay * 2, ?MAX_DELAY)}).

%% Key by key, so a concurrent reader never sees a half-empty table.
mirror(Tab, Entries) ->
	New = maps:from_list([E || {P, _} = E <- Entries, P /= error]),
	Old = ets:select(Tab, [{{'$1', '_'}, [{is_binary, '$1'}], ['$1']}]),
	[ets:delete(Tab, P) || P <- Old, not maps:is_key(P, New)],
	ets:insert(Tab, maps:to_list(New)),
	Now = erlang:monotonic_time(millisecond),
	ets:select_delete(Tab, [{{{handshake, '_'}, '$1'},
				 [{is_integer, '$1'}, {'<', '$1', Now}], [true]}]),
	maps:size(New).

nameprep(P) ->
	case jid:nameprep(P) of
		error -> error;
		L -> L
	end.

%% --- hello ---------------------------------------------------------------
send_hello(#state{hello = undefined, hello_timer = undefined, host = Host} = State) ->
	Body = json(#{<<"host">> => Host, <<"node">> => atom_to_binary(node(), utf8)}),
	case post("/v1/hook/hello", Body, State) of
		{ok, Ref} -> State#state{hello = Ref, hello_due = false};
		{error, Why} -> hello_result({retry, io_lib:format("~p", [Why])}, State)
	end;
send_hello(State) ->
	State.

cancel_hello_timer(#state{hello_timer = undefined} = State) ->
	State;
cancel_hello_timer(#state{hello_timer = T} = State) ->
	_ = erlang:cancel_timer(T),
	State#state{hello_timer = undefined, hello_delay = ?MIN_DELAY}.

hello_result({ok, _}, State) ->
	State#state{hello_delay = ?MIN_DELAY};
hello_result(Failure, #state{host = Host} = State) ->
	Why = case Failure of
		      {retry, W} -> W;
		      {server_error, Code, Body} -> io_lib:format("HTTP ~p ~ts", [Code, snippet(Body)]);
		      {refused, Code, Body} -> io_lib:format("HTTP ~p ~ts", [Code, snippet(Body)])
	      end,
	State1 = warn(hello, "mod_server_trust (~ts): hello to the sidecar failed: ~ts; retrying",
		      [Host, Why], State),
	Delay = State1#state.hello_delay,
	State1#state{hello_due = true, hello_timer = erlang:send_after(Delay, self(), hello),
		     hello_delay = min(Delay * 2, ?MAX_DELAY)}.

%% --- logging -------------------------------------------------------------
%% One warning per kind per WARN_EVERY ms; the next one says how many were
%% held back.
warn(Kind, Fmt, Args, #state{warned = W} = State) ->
	Now = erlang:monotonic_time(millisecond),
	case maps:get(Kind, W, {Now - ?WARN_EVERY, 0}) of
		{Last, Held} when Now - Last >= ?WARN_EVERY ->
			Suffix = case Held of
					 0 -> "";
					 _ -> io_lib:format(" (~p similar warnings held back)", [Held])
				 end,
			?WARNING_MSG(Fmt ++ "~ts", Args ++ [Suffix]),
			State#state{warned = W#{Kind => {Now, 0}}};
		{Last, Held} ->
			State#state{warned = W#{Kind => {Last, Held + 1}}}
	end.

snippet(Body) when is_binary(Body), byte_size(Body) > 200 ->
	<<(binary:part(Body, 0, 200))/binary, "...">>;
snippet(Body) when is_binary(Body) ->
	Body;
snippet(Body) ->
	io_lib:format("~p", [Body]).
