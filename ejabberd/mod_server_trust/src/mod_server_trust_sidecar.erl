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
%%%  * presence: POST /v1/hook/presence, one at a time, each peer's in
%%%    arrival order, peers served round-robin; kept and retried with backoff
%%%    while the sidecar is unreachable (or answers 429/5xx). Two bounded
%%%    lanes: subscription presence (subscribe, subscribed, unsubscribe,
%%%    unsubscribed), where a newer one replaces what it supersedes for the
%%%    same peer, and which nothing else can displace; and probes and
%%%    availability, which may be dropped (counted; the hello after an outage
%%%    exchanges them again), the busiest peer's first. The stanza itself was
%%%    dropped by the hook already, so a lost one is simply never answered:
%%%    never approved.
%%%  * trusted set: long poll GET /v1/hook/trusted?host=H&since=G&wait=25,
%%%    mirrored into a public ETS table (read_concurrency) that
%%%    mod_server_trust:is_trusted/2,3 read without any message passing.
%%%    Long poll rather than push: every node of a cluster keeps its own
%%%    copy this way and the sidecar needs to know nothing about the nodes.
%%%  * hello: POST /v1/hook/hello at start and whenever the long poll comes
%%%    back after a failure (sidecar restarted): the sidecar then sends our
%%%    presence to approved peers and probes those that approved us.
%%%  * evidence: when the sidecar's answer to a presence names queries (a new
%%%    request was recorded), they are sent from the host JID with
%%%    ejabberd_router:route_iq/4; each answer (the reply stanza's XML, or
%%%    null after ?ANSWER_TIMEOUT) goes to POST /v1/hook/evidence. Best
%%%    effort: a query or answer that cannot be delivered leaves that piece of
%%%    evidence shown as missing, and decides nothing.
%%%----------------------------------------------------------------------
-module(mod_server_trust_sidecar).
-author('server-trust').
-behaviour(gen_server).

%% API (called by mod_server_trust and its hooks).
-export([start/2, stop/1, reload/2, presence/4, presence/5, member/2, lookup/2, trusted/1,
	 status/1, goodbye/1]).
%% gen_server callbacks.
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
	 code_change/3]).

-include("logger.hrl").
-include("xmpp.hrl").

-define(POLL_WAIT, 25).                 %% seconds the sidecar may hold a poll
-define(POLL_SLACK, 10000).             %% ms on top of POLL_WAIT before we give up
-define(MIN_DELAY, 200).                %% retry backoff: 0.2 s doubling ...
-define(MAX_DELAY, 5000).               %% ... up to 5 s (the sidecar is local)
-define(WARN_EVERY, 10000).             %% at most one warning per kind per 10 s
-define(SERVER_ERROR_TRIES, 5).         %% 500s for one presence before it is given up
-define(GOODBYE_TIMEOUT, 3000).         %% ms the node's stop waits for the sidecar, at most
-define(TYPES, [subscribe, subscribed, unsubscribe, unsubscribed, probe,
		available, unavailable]).
%% Evidence: the queries the engine may ask for (server_trust::evidence::QUERIES),
%% how long an answer is waited for (evidence::ANSWER_TIMEOUT), queries waiting
%% at most (a flood of new requests is bounded by the engine's max_pending; this
%% bounds the worker whatever it is set to), and tries of one answer's POST.
-define(EVIDENCE_NS, [<<"http://jabber.org/protocol/disco#info">>, <<"jabber:iq:version">>]).
-define(ANSWER_TIMEOUT, 10000).
-define(MAX_ASKING, 1000).
-define(EVIDENCE_TRIES, 3).
%% The engine reads replies of up to 64 KiB; one byte more says "over 64 KiB".
-define(MAX_REPLY, 65537).

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
	 %% The retry queue: per peer its subscription items (at most a few, a
	 %% list) and its droppable ones (a queue, and how many), each in arrival
	 %% order; an item's `seq` orders the two lanes of a peer against each
	 %% other. `ring`: the peers with items in round-robin order (a peer is in
	 %% `peers` iff it is in `ring`); `nsub`/`ndrop`: the items in each lane;
	 %% `subs`: the queued subscription items by age (Seq => Peer); `drops`:
	 %% {N, Peer} for the peers with N > 0 droppable items (the busiest is the
	 %% largest).
	 peers = #{}             :: #{binary() => {[map()], queue:queue(map()), non_neg_integer()}},
	 ring = queue:new()      :: queue:queue(binary()),
	 nsub = 0                :: non_neg_integer(),
	 ndrop = 0               :: non_neg_integer(),
	 subs = gb_trees:empty() :: gb_trees:tree(non_neg_integer(), binary()),
	 drops = gb_sets:new()   :: gb_sets:set({pos_integer(), binary()}),
	 seq = 0                 :: non_neg_integer(),
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
	 dropped = 0             :: non_neg_integer(),
	 superseded = 0          :: non_neg_integer(),
	 %% Evidence queries waiting for their answer, and answers being POSTed
	 %% (request => {body, tries so far}).
	 asking = 0              :: non_neg_integer(),
	 answers = #{}           :: #{reference() => {binary(), pos_integer()}},
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
	set_table(Host, undefined),
	ok.

-spec reload(binary(), gen_mod:opts()) -> ok.
reload(Host, Opts) ->
	gen_server:cast(proc(Host), {reload, Opts}).

%% From the local_send_to_resource_hook: never blocks the router.
-spec presence(binary(), binary(), atom(), binary()) -> ok.
presence(Host, Peer, Type, Id) ->
	presence(Host, Peer, Type, Id, undefined).

%% The same with what the s2s stream told about the peer (a subscribe's
%% `auth` and `cert`, see mod_server_trust:with_session/3), or undefined.
-spec presence(binary(), binary(), atom(), binary(), undefined | map()) -> ok.
presence(Host, Peer, Type, Id, Session) ->
	case lists:member(Type, ?TYPES) of
		true -> gen_server:cast(proc(Host), {presence, Peer, Type, Id, Session});
		false -> ok
	end.

%% mod_server_trust:is_trusted/2: is Peer (as given) in Host's table?
-spec member(binary(), binary()) -> boolean() | no_table.
member(Host, Peer) ->
	case table(Host) of
		undefined ->
			no_table;
		Tab ->
			try ets:member(Tab, Peer)
			catch error:badarg ->   %% worker restarting: fail closed
				false
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

%% The node stops cleanly: POST /v1/hook/goodbye, synchronously (the stop
%% waits, at most ?GOODBYE_TIMEOUT), and the presences the engine wants sent,
%% [{Peer, Type}], for mod_server_trust to route. Nothing when the sidecar is
%% unreachable (logged): the peers then learn we are gone when s2s closes.
-spec goodbye(binary()) -> [{binary(), atom()}].
goodbye(Host) ->
	try gen_server:call(proc(Host), goodbye, ?GOODBYE_TIMEOUT + 1000)
	catch exit:_ -> []
	end.

-spec status(binary()) -> map().
status(Host) ->
	try gen_server:call(proc(Host), status, 5000)
	catch exit:_ ->
		#{sidecar => <<"worker not running">>, generation => null,
		  queued => 0, delivered => 0, lost => 0, dropped => 0, superseded => 0,
		  peers => 0}
	end.

%%%===================================================================
%%% gen_server callbacks
%%%===================================================================
init([Host, Opts]) ->
	process_flag(trap_exit, true),
	Tab = gen_mod:get_module_proc(Host, mod_server_trust_peers),
	ets:new(Tab, [named_table, public, set, {read_concurrency, true}]),
	set_table(Host, Tab),
	Profile = gen_mod:get_module_proc(Host, mod_server_trust_httpc),
	{ok, _} = start_profile(Profile),
	State = configure(#state{host = Host, tab = Tab, profile = Profile}, Opts),
	self() ! poll,
	{ok, send_hello(State)}.

handle_call(status, _From, #state{} = S) ->
	{reply, #{sidecar => atom_to_binary(S#state.sidecar, utf8),
		  generation => S#state.generation,
		  queued => queued(S),
		  delivered => S#state.delivered,
		  lost => S#state.lost,
		  dropped => S#state.dropped,
		  superseded => S#state.superseded,
		  peers => length(trusted(S#state.host))}, S};
handle_call(goodbye, _From, #state{host = Host} = S) ->
	Body = json(#{<<"host">> => Host, <<"node">> => atom_to_binary(node(), utf8)}),
	Req = {S#state.url ++ "/v1/hook/goodbye", headers(S), "application/json", Body},
	Result = httpc:request(post, Req, http_opts(min(S#state.timeout, ?GOODBYE_TIMEOUT), S),
			       [{body_format, binary}], S#state.profile),
	Reply = case Result of
			{ok, R} -> goodbye_presences(classify(R), Host);
			{error, _} = Err -> goodbye_presences(classify(Err), Host)
		end,
	{reply, Reply, S};
handle_call(_Request, _From, State) ->
	{reply, {error, badarg}, State}.

handle_cast({presence, Peer, Type, Id, Session}, State) ->
	Body = #{<<"host">> => State#state.host, <<"from">> => Peer,
		 <<"type">> => atom_to_binary(Type, utf8),
		 <<"id">> => case Id of <<>> -> null; _ -> Id end},
	Item = #{peer => Peer, type => Type, lane => lane(Type),
		 body => json(with_session(Body, Session))},
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
handle_info({http, {Ref, Result}}, #state{answers = As} = State) when is_map_key(Ref, As) ->
	{Body, Tries} = maps:get(Ref, As),
	{noreply, answer_result(classify(Result), Body, Tries,
				State#state{answers = maps:remove(Ref, As)})};
handle_info({iq_reply, Reply, {evidence, Peer, NS}}, State) ->
	{noreply, answered(Peer, NS, Reply, State#state{asking = max(0, State#state.asking - 1)})};
handle_info({evidence_retry, Body, Tries}, State) ->
	{noreply, post_answer(Body, Tries, State)};
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

%% The engine's actions in its wire form: the presences to send.
goodbye_presences({ok, Body}, Host) ->
	try jiffy:decode(Body, [return_maps]) of
		#{<<"actions">> := Actions} when is_list(Actions) ->
			[{Peer, Type} || #{<<"kind">> := <<"send">>, <<"peer">> := Peer, <<"type">> := T} <- Actions,
					 is_binary(Peer), Type <- [presence_type(T)], Type /= undefined];
		_ ->
			?WARNING_MSG("mod_server_trust (~ts): goodbye: unexpected answer ~ts",
				     [Host, snippet(Body)]),
			[]
	catch _:_ ->
		?WARNING_MSG("mod_server_trust (~ts): goodbye: unreadable answer ~ts", [Host, snippet(Body)]),
		[]
	end;
goodbye_presences(Other, Host) ->
	?WARNING_MSG("mod_server_trust (~ts): stopping, but the sidecar did not answer the goodbye "
		     "(~p): server buddies get no unavailable presence from us", [Host, Other]),
	[].

presence_type(T) ->
	case [A || A <- ?TYPES, atom_to_binary(A, utf8) == T] of
		[A] -> A;
		[] -> undefined
	end.

terminate(_Reason, #state{host = Host, profile = Profile} = State) ->
	case queued(State) of
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

%% The hosts' tables, for readers in any process: one persistent term (an
%% atom key and a small map: ~10 ns less per trust check than a key per
%% host, which hashed the host name on every lookup), written only when a
%% host starts or stops.
table(Host) ->
	case persistent_term:get(?MODULE, #{}) of
		#{Host := Tab} -> Tab;
		_ -> undefined
	end.

set_table(Host, Tab) ->
	global:trans({{?MODULE, tables}, self()},
		     fun() ->
			     Old = persistent_term:get(?MODULE, #{}),
			     New = case Tab of
					   undefined -> maps:remove(Host, Old);
					   _ -> Old#{Host => Tab}
				   end,
			     case New == Old of
				     true -> ok;
				     false -> persistent_term:put(?MODULE, New)
			     end
		     end, [node()]).

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
%% Subscription presence is kept for the peer's subscription state; a newer
%% one replaces what it supersedes (see superseded/2). Probes and
%% availability may be dropped: the hello after an outage exchanges them
%% again.
lane(T) when T == subscribe; T == unsubscribe -> {sub, from};
lane(T) when T == subscribed; T == unsubscribed -> {sub, to};
lane(_) -> drop.

%% Old, queued before New for the same peer, can go: same direction (from:
%% the peer's subscription to us, to: its answer about ours), and New is a
%% cancel (unsubscribe/unsubscribed: the end state is New's whatever Old
%% did) or both are the same (a repeat). A grant after a cancel stays
%% behind it: `unsubscribe` then `subscribe` is a new request the admin
%% decides, not the old subscription carried on. Never across directions:
%% a peer's `subscribed` (it approved us) is not replaced by its
%% reciprocal `subscribe`.
superseded(#{lane := {sub, Dir}, type := Old}, #{lane := {sub, Dir}, type := New}) ->
	Old == New orelse New == unsubscribe orelse New == unsubscribed;
superseded(_, _) ->
	false.

queued(#state{nsub = S, ndrop = D, inflight = undefined}) -> S + D;
queued(#state{nsub = S, ndrop = D}) -> S + D + 1.

enqueue(#{lane := drop} = Item, #state{ndrop = N, queue_max = Max} = State) when N >= Max ->
	%% Full: the busiest peer loses its oldest probe or availability, so one
	%% peer's flood cannot push out another's; when the newcomer's peer is
	%% (about) as busy, its own oldest goes, or the newcomer itself.
	Peer = maps:get(peer, Item),
	Own = ndrop(Peer, State),
	{Top, Busiest} = gb_sets:largest(State#state.drops),
	{Victim, State1} =
		if Own >= Top -> take(Peer, drop, State);
		   Top > Own + 1 -> take(Busiest, drop, State);
		   true -> {Item, State}
		end,
	State2 = dropped(Victim, Max, State1),
	case Victim of
		Item -> State2;
		_ -> append(Item, State2)
	end;
enqueue(#{lane := drop} = Item, State) ->
	append(Item, State);
enqueue(#{peer := Peer} = Item, State) ->
	State1 = supersede(Peer, Item, State),
	case State1#state.nsub >= State1#state.queue_max of
		false ->
			append(Item, State1);
		true ->
			%% Full of other peers' subscription presence (one peer holds at most
			%% four): the oldest is lost, and logged.
			{_Seq, Old} = gb_trees:smallest(State1#state.subs),
			{Lost, State2} = take(Old, sub, State1),
			append(Item, lost(Lost, io_lib:format("retry queue full (queue_max ~p subscription "
							      "presences)", [State1#state.queue_max]),
					  State2, lost))
	end.

ndrop(Peer, #state{peers = Ps}) ->
	case maps:find(Peer, Ps) of
		{ok, {_, _, N}} -> N;
		error -> 0
	end.

dropped(#{peer := Peer, type := Type}, Max, #state{host = Host} = State) ->
	State1 = State#state{dropped = State#state.dropped + 1},
	warn(dropped, "mod_server_trust (~ts): probe and availability queue full (queue_max ~p): "
	     "dropped ~ts presence from ~ts (~p dropped so far; exchanged again after the outage)",
	     [Host, Max, Type, Peer, State1#state.dropped], State1).

%% Removes the subscription items of Peer that Item supersedes (a short list).
supersede(Peer, Item, #state{peers = Ps} = State) ->
	case maps:find(Peer, Ps) of
		{ok, {Subs, Drops, N}} ->
			case lists:partition(fun(Old) -> superseded(Old, Item) end, Subs) of
				{[], _} ->
					State;
				{Gone, Keep} ->
					Tree = lists:foldl(fun(#{seq := Seq}, T) -> gb_trees:delete(Seq, T) end,
							   State#state.subs, Gone),
					State#state{peers = Ps#{Peer => {Keep, Drops, N}}, subs = Tree,
						    nsub = State#state.nsub - length(Gone),
						    superseded = State#state.superseded + length(Gone)}
			end;
		error ->
			State
	end.

%% A new item at the end of its peer's lane; a new peer joins the ring last.
append(#{peer := Peer} = Item0, #state{seq = Seq} = State) ->
	Item = Item0#{seq => Seq},
	push(Peer, Item, back, State#state{seq = Seq + 1}).

%% An item that was in flight, back at the head of its peer's lane (its seq
%% is still the peer's oldest); the peer first in the ring if it had left it.
%% An item the peer has since sent a superseding one for is not needed any
%% more.
put_back(#{peer := Peer, lane := Lane} = Item, #state{peers = Ps} = State) ->
	Subs = case maps:find(Peer, Ps) of
		       {ok, {S, _, _}} -> S;
		       error -> []
	       end,
	case lists:any(fun(Later) -> superseded(Item, Later) end, Subs) of
		true ->
			State#state{superseded = State#state.superseded + 1};
		false when Lane == drop, State#state.ndrop >= State#state.queue_max ->
			%% The lane filled up meanwhile: this one is its peer's oldest.
			dropped(Item, State#state.queue_max, State);
		false ->
			push(Peer, Item, front, State)
	end.

push(Peer, #{lane := Lane, seq := Seq} = Item, End, #state{peers = Ps} = State) ->
	{{Subs, Drops, N}, Ring} =
		case maps:find(Peer, Ps) of
			{ok, P} -> {P, State#state.ring};
			error when End == back -> {{[], queue:new(), 0}, queue:in(Peer, State#state.ring)};
			error -> {{[], queue:new(), 0}, queue:in_r(Peer, State#state.ring)}
		end,
	case Lane of
		drop ->
			Drops1 = case End of back -> queue:in(Item, Drops); front -> queue:in_r(Item, Drops) end,
			drops_count(Peer, N, N + 1, State#state{peers = Ps#{Peer => {Subs, Drops1, N + 1}},
							       ring = Ring, ndrop = State#state.ndrop + 1});
		_ ->
			Subs1 = case End of back -> Subs ++ [Item]; front -> [Item | Subs] end,
			State#state{peers = Ps#{Peer => {Subs1, Drops, N}}, ring = Ring,
				    nsub = State#state.nsub + 1,
				    subs = gb_trees:insert(Seq, Peer, State#state.subs)}
	end.

%% Peer's count of droppable items goes from N to M: keep `drops` in step.
drops_count(Peer, N, M, #state{drops = Ds} = State) ->
	Ds1 = case N of 0 -> Ds; _ -> gb_sets:delete({N, Peer}, Ds) end,
	State#state{drops = case M of 0 -> Ds1; _ -> gb_sets:insert({M, Peer}, Ds1) end}.

%% Takes the oldest item of Peer's lane (sub | drop) out of the queue (it has
%% one); a peer left with nothing leaves the ring.
take(Peer, Lane, State) ->
	case take_item(Peer, Lane, State) of
		{Item, State1, true} -> {Item, State1#state{ring = queue:delete(Peer, State1#state.ring)}};
		{Item, State1, false} -> {Item, State1}
	end.

%% The same, leaving the ring alone; true when Peer has nothing left (then it
%% is out of `peers`).
take_item(Peer, Lane, #state{peers = Ps} = State) ->
	{Subs, Drops, N} = maps:get(Peer, Ps),
	{Item, P, State1} =
		case Lane of
			drop ->
				{{value, X}, Drops1} = queue:out(Drops),
				{X, {Subs, Drops1, N - 1},
				 drops_count(Peer, N, N - 1, State#state{ndrop = State#state.ndrop - 1})};
			sub ->
				[X = #{seq := Seq} | Subs1] = Subs,
				{X, {Subs1, Drops, N},
				 State#state{nsub = State#state.nsub - 1,
					     subs = gb_trees:delete(Seq, State#state.subs)}}
		end,
	case P of
		{[], _, 0} -> {Item, State1#state{peers = maps:remove(Peer, Ps)}, true};
		_ -> {Item, State1#state{peers = Ps#{Peer => P}}, false}
	end.

%% The next item: the oldest of the first peer in the ring, which then goes to
%% the back of the ring (or leaves it, when that was its last item).
next_item(#state{ring = Ring, peers = Ps} = State) ->
	{{value, Peer}, Ring1} = queue:out(Ring),
	Lane = case maps:get(Peer, Ps) of
		       {[#{seq := S} | _], Drops, _} ->
			       case queue:peek(Drops) of
				       {value, #{seq := D}} when D < S -> drop;
				       _ -> sub
			       end;
		       {[], _, _} ->
			       drop
	       end,
	case take_item(Peer, Lane, State#state{ring = Ring1}) of
		{Item, State1, true} -> {Item, State1};
		{Item, State1, false} -> {Item, State1#state{ring = queue:in(Peer, Ring1)}}
	end.

%% Kind: the rate-limit bucket (a full queue and refusals are reported apart).
lost(#{peer := Peer, type := Type}, Why, #state{host = Host} = State, Kind) ->
	State1 = State#state{lost = State#state.lost + 1},
	warn(Kind, "mod_server_trust (~ts): ~ts: lost ~ts presence from ~ts (never approved; "
	     "~p lost so far)", [Host, Why, Type, Peer, State1#state.lost], State1).

send_next(#state{inflight = undefined, retry_timer = undefined, nsub = S, ndrop = D} = State)
  when S + D > 0 ->
	{Item, State1} = next_item(State),
	case post("/v1/hook/presence", maps:get(body, Item), State1) of
		{ok, Ref} ->
			State1#state{inflight = {Ref, Item}};
		{error, Why} ->
			presence_result({retry, io_lib:format("~p", [Why])}, Item, State1)
	end;
send_next(State) ->
	State.

presence_result({ok, Body}, _Item, State) ->
	ask(Body, State#state{retry_delay = ?MIN_DELAY, delivered = State#state.delivered + 1});
presence_result({retry, Why}, Item, #state{host = Host} = State) ->
	%% Back to the front of its peer's queue: each peer's order is kept.
	State1 = put_back(Item, State),
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
			{N, Gone} = mirror(State#state.tab, [{nameprep(P), [X || X <- Gs, is_binary(X)]}
							     || #{<<"peer">> := P} = E <- Peers, is_binary(P),
								Gs <- [maps:get(<<"groups">>, E, [])], is_list(Gs)]),
			mod_server_trust:trust_removed(Host, Gone),
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

%% Key by key, so a concurrent reader never sees a half-empty table. Returns the
%% size and the peers that left the set (for `federation: buddies` to close their streams).
mirror(Tab, Entries) ->
	New = maps:from_list([E || {P, _} = E <- Entries, P /= error]),
	Old = ets:select(Tab, [{{'$1', '_'}, [{is_binary, '$1'}], ['$1']}]),
	Gone = [P || P <- Old, not maps:is_key(P, New)],
	[ets:delete(Tab, P) || P <- Gone],
	ets:insert(Tab, maps:to_list(New)),
	{maps:size(New), Gone}.

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

%% --- evidence ------------------------------------------------------------
%% A subscribe's stream facts in the hook body: "session": {"auth", "cert"}
%% (the certificate as PEM, or null).
with_session(Body, #{auth := Auth, cert := Cert}) when is_binary(Auth) ->
	Pem = case Cert of
		      Der when is_binary(Der) -> public_key:pem_encode([{'Certificate', Der, not_encrypted}]);
		      _ -> null
	      end,
	Body#{<<"session">> => #{<<"auth">> => Auth, <<"cert">> => Pem}};
with_session(Body, _) ->
	Body.

%% The sidecar's answer to a presence names the queries to send, if any:
%% {"ok": true, "queries": [{"peer": P, "ns": NS}, ...]}.
ask(Body, #state{host = Host} = State) ->
	Queries = try jiffy:decode(Body, [return_maps]) of
			  #{<<"queries">> := Qs} when is_list(Qs) -> Qs;
			  _ -> []
		  catch _:_ -> []
		  end,
	lists:foldl(
	  fun(#{<<"peer">> := Peer, <<"ns">> := NS}, S) when is_binary(Peer), is_binary(NS) ->
		  case {lists:member(NS, ?EVIDENCE_NS), jid:make(Peer), S#state.asking} of
			  {false, _, _} ->
				  S;
			  {_, #jid{luser = <<>>, lresource = <<>>} = To, N} when N < ?MAX_ASKING ->
				  IQ = #iq{type = get, from = jid:make(Host), to = To,
					   sub_els = [#xmlel{name = <<"query">>, attrs = [{<<"xmlns">>, NS}]}]},
				  %% Never let a routing failure take the worker (and its queue) down.
				  try
					  ejabberd_router:route_iq(IQ, {evidence, Peer, NS}, self(), ?ANSWER_TIMEOUT),
					  S#state{asking = N + 1}
				  catch C:E ->
					  warn(asking, "mod_server_trust (~ts): cannot ask ~ts for ~ts: ~p:~p",
					       [Host, Peer, NS, C, E], S)
				  end;
			  {_, #jid{}, _} ->
				  warn(asking, "mod_server_trust (~ts): ~p evidence queries already wait for "
				       "their answers; not asking ~ts for ~ts (shown as not known)",
				       [Host, ?MAX_ASKING, Peer, NS], S);
			  _ ->
				  S
		  end;
	     (_, S) ->
		  S
	  end, State, Queries).

%% The answer to a query (the reply stanza, or timeout) for the sidecar.
answered(Peer, NS, Reply, #state{host = Host} = State) ->
	Xml = try reply_xml(Reply)
	      catch C:E ->
		      %% Not the worker's end: reported as no answer, and logged.
		      ?WARNING_MSG("mod_server_trust (~ts): cannot encode ~ts's answer to ~ts: ~p:~p",
				   [Host, Peer, NS, C, E]),
		      null
	      end,
	%% force_utf8: a reply cut at ?MAX_REPLY may end inside a character.
	Body = iolist_to_binary(jiffy:encode(#{<<"host">> => Host, <<"peer">> => Peer,
					       <<"ns">> => NS, <<"reply">> => Xml}, [force_utf8])),
	post_answer(Body, 1, State).

reply_xml(#iq{} = Reply) ->
	X = fxml:element_to_binary(xmpp:encode(Reply)),
	binary:part(X, 0, min(byte_size(X), ?MAX_REPLY));
reply_xml(timeout) ->
	null.

post_answer(Body, Tries, State) ->
	case post("/v1/hook/evidence", Body, State) of
		{ok, Ref} -> State#state{answers = (State#state.answers)#{Ref => {Body, Tries}}};
		{error, Why} -> answer_result({retry, io_lib:format("~p", [Why])}, Body, Tries, State)
	end.

answer_result({ok, _}, _Body, _Tries, State) ->
	State;
answer_result({retry, Why}, Body, Tries, State) when Tries < ?EVIDENCE_TRIES ->
	erlang:send_after(?MIN_DELAY bsl Tries, self(), {evidence_retry, Body, Tries + 1}),
	warn(evidence, "mod_server_trust (~ts): sidecar did not take an evidence answer (~ts); "
	     "retrying", [State#state.host, Why], State);
answer_result(Failure, _Body, _Tries, State) ->
	Why = case Failure of
		      {retry, W} -> W;
		      {server_error, Code, B} -> io_lib:format("HTTP ~p ~ts", [Code, snippet(B)]);
		      {refused, Code, B} -> io_lib:format("HTTP ~p ~ts", [Code, snippet(B)])
	      end,
	warn(evidence, "mod_server_trust (~ts): evidence answer lost (~ts): the request shows it "
	     "as not known", [State#state.host, Why], State).

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
