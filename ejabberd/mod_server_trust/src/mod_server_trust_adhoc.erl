%%%----------------------------------------------------------------------
%%% File    : mod_server_trust_adhoc.erl
%%% Purpose : the server-trust admin acts as XEP-0050 ad-hoc commands for
%%%           the host's admins, carried out by the sidecar's admin API
%%%
%%% This Source Code Form is subject to the terms of the Mozilla Public
%%% License, v. 2.0. If a copy of the MPL was not distributed with this
%%% file, You can obtain one at https://mozilla.org/MPL/2.0/.
%%%
%%% The three commands of the Prosody module, same nodes, names and forms:
%%% "Request a server buddy", "Pending server buddies" (one list-single per
%%% pending peer: approve / deny / later, no default) and "Revoke a server
%%% buddy". Listed, described and run only for JIDs the access rule
%%% `access_adhoc` allows (default `configure`, mod_configure's rule); to
%%% anyone else they do not exist in the list and answer forbidden.
%%%
%%% Every act is one call of mod_server_trust_commands (the sidecar's admin
%%% API with the `admin_token_file` token): the sidecar stays the only writer
%%% of the store and the engine decides what an act may do, so an approve
%%% after another admin's deny is refused and shown as an error note.
%%%
%%% mod_adhoc keeps no sessions, so this module does: a form is acted on only
%%% in a session this command opened for this full JID, once (the session is
%%% taken from the table before acting), within ?LIFETIME. Anything else (a
%%% made-up, replayed, expired or another command's session id) gets a fresh
%%% form and decides nothing. The table is per node: a c2s session's IQs to
%%% the host are handled on its own node, so a cluster needs nothing more.
%%%----------------------------------------------------------------------
-module(mod_server_trust_adhoc).
-author('server-trust').
-behaviour(gen_server).

%% Called by mod_server_trust's start/stop.
-export([start/1, stop/1]).
%% ejabberd_hooks callbacks.
-export([adhoc_local_items/4, adhoc_local_commands/4,
	 get_local_identity/5, get_local_features/5]).
%% gen_server callbacks (the owner of the session table).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
	 code_change/3]).

-include("xmpp.hrl").
-include("logger.hrl").

-define(NODE_REQUEST, <<"urn:xmpp:server-trust#request">>).
-define(NODE_PENDING, <<"urn:xmpp:server-trust#pending">>).
-define(NODE_REVOKE, <<"urn:xmpp:server-trust#revoke">>).
-define(NS_ADMIN_FORM, <<"http://jabber.org/protocol/admin">>).
%% Before mod_adhoc's ping (100); mod_configure uses 50 for its own nodes.
-define(PRIO, 50).
%% An open form is good for this long; expired sessions are swept each minute.
-define(LIFETIME, timer:minutes(15)).
-define(SWEEP, timer:minutes(1)).
%% Open sessions per host (only admins open them; a bound all the same).
-define(MAX_SESSIONS, 1000).

%% {Node, Name, Act}: Act is the sidecar's act for the peer commands.
commands() ->
	[{?NODE_REQUEST, <<"Request a server buddy">>, <<"request">>},
	 {?NODE_PENDING, <<"Pending server buddies">>, pending},
	 {?NODE_REVOKE, <<"Revoke a server buddy">>, <<"revoke">>}].

%%%===================================================================
%%% start/stop (from mod_server_trust)
%%%===================================================================
-spec start(binary()) -> ok | {error, term()}.
start(Host) ->
	case gen_mod:start_child(?MODULE, Host, []) of
		{ok, _Pid} ->
			hooks(Host, add),
			ok;
		{error, {already_started, _Pid}} ->  % the table's owner outlived a stop
			hooks(Host, add),
			ok;
		{error, _} = Err ->
			Err
	end.

-spec stop(binary()) -> ok.
stop(Host) ->
	hooks(Host, delete),
	gen_mod:stop_child(?MODULE, Host),
	ok.

hooks(Host, Op) ->
	ejabberd_hooks:Op(adhoc_local_items, Host, ?MODULE, adhoc_local_items, ?PRIO),
	ejabberd_hooks:Op(adhoc_local_commands, Host, ?MODULE, adhoc_local_commands, ?PRIO),
	ejabberd_hooks:Op(disco_local_identity, Host, ?MODULE, get_local_identity, ?PRIO),
	ejabberd_hooks:Op(disco_local_features, Host, ?MODULE, get_local_features, ?PRIO),
	ok.

allowed(Host, From) ->
	Access = gen_mod:get_module_opt(Host, mod_server_trust, access_adhoc),
	acl:match_rule(Host, Access, From) == allow.

forbidden(Lang) ->
	xmpp:err_forbidden(<<"Access denied by service policy">>, Lang).

%%%===================================================================
%%% Service discovery
%%%===================================================================
%% The list of commands (disco#items of http://jabber.org/protocol/commands).
-spec adhoc_local_items(mod_disco:items_acc(), jid(), jid(), binary()) -> mod_disco:items_acc().
adhoc_local_items(Acc, From, #jid{lserver = Host, server = Server}, _Lang) ->
	case allowed(Host, From) of
		true ->
			Items = case Acc of
					{result, I} -> I;
					_ -> []
				end,
			{result, Items ++ [#disco_item{jid = jid:make(Server), node = Node, name = Name}
					   || {Node, Name, _} <- commands()]};
		false ->
			Acc
	end.

-spec get_local_identity([identity()], jid(), jid(), binary(), binary()) -> [identity()].
get_local_identity(Acc, From, #jid{lserver = Host}, Node, _Lang) ->
	case lists:keyfind(Node, 1, commands()) of
		{_, Name, _} ->
			case allowed(Host, From) of
				true -> Acc ++ [#identity{category = <<"automation">>,
							  type = <<"command-node">>, name = Name}];
				false -> Acc
			end;
		false ->
			Acc
	end.

-spec get_local_features(mod_disco:features_acc(), jid(), jid(), binary(), binary()) ->
	mod_disco:features_acc().
get_local_features(Acc, From, #jid{lserver = Host}, Node, Lang) ->
	case lists:keymember(Node, 1, commands()) of
		true ->
			case allowed(Host, From) of
				true -> {result, [?NS_COMMANDS]};
				false -> {error, forbidden(Lang)}
			end;
		false ->
			Acc
	end.

%%%===================================================================
%%% The commands
%%%===================================================================
-spec adhoc_local_commands(adhoc_command() | empty | {error, stanza_error()}, jid(), jid(),
			   adhoc_command()) -> adhoc_command() | empty | {error, stanza_error()}.
adhoc_local_commands(Acc, From, #jid{lserver = Host},
		     #adhoc_command{node = Node, lang = Lang} = Req) ->
	case lists:keyfind(Node, 1, commands()) of
		{_, Name, Act} ->
			case allowed(Host, From) of
				true -> run(Host, From, Name, Act, Req);
				false -> {error, forbidden(Lang)}
			end;
		false ->
			Acc
	end.

run(Host, From, _Name, _Act, #adhoc_command{action = cancel, node = Node, sid = Sid} = Req) ->
	_ = take_session(Host, Sid, Node, From),
	reply(Req, Sid, #adhoc_command{status = canceled});
run(Host, From, Name, Act, #adhoc_command{node = Node, sid = Sid, xdata = X} = Req) ->
	case {X, take_session(Host, Sid, Node, From)} of
		{#xdata{type = submit}, {ok, Data}} ->
			submit(Host, From, Act, Data, X, Req, Sid);
		_ ->
			%% No form, or not one this command's session asked for.
			open(Host, From, Name, Act, Req)
	end.

%% A new session and its form.
open(Host, From, _Name, pending, #adhoc_command{node = Node} = Req) ->
	case pending_peers(Host) of
		{error, Msg} ->
			reply(Req, new_sid(), completed([], [Msg]));
		{ok, []} ->
			reply(Req, new_sid(), completed([<<"No pending requests">>], []));
		{ok, Pending} ->
			Peers = [P || {P, _} <- Pending],
			form(Req, open_session(Host, Node, From, Peers), pending_form(Pending))
	end;
open(Host, From, Name, _Act, #adhoc_command{node = Node} = Req) ->
	form(Req, open_session(Host, Node, From, peer), peer_form(Name)).

form(#adhoc_command{lang = Lang}, {error, full}, _Form) ->
	{error, xmpp:err_resource_constraint(<<"Too many open server-trust forms">>, Lang)};
form(Req, {ok, Sid}, Form) ->
	reply(Req, Sid, #adhoc_command{status = executing, xdata = Form,
				       actions = #adhoc_actions{execute = complete,
								complete = true}}).

%% "Request a server buddy", "Revoke a server buddy".
submit(Host, From, Act, peer, X, Req, Sid) when is_binary(Act) ->
	Peer = case xmpp_util:get_xdata_values(<<"peer">>, X) of
		       [P | _] -> P;
		       [] -> <<>>
	       end,
	case mod_server_trust_commands:act(via(From), Host, Peer, Act) of
		{error, _, _, Msg} ->
			reply(Req, Sid, completed([], [Msg]));
		_ ->
			reply(Req, Sid, completed([<<Act/binary, " ", Peer/binary, ": done">>], []))
	end;
%% "Pending server buddies": only the peers this session's form offered.
submit(Host, From, pending, Peers, X, Req, Sid) when is_list(Peers) ->
	%% An optional length of time limits the approvals (as on Prosody).
	Decide = case xmpp_util:get_xdata_values(<<"trust_for">>, X) of
			 [For] when For /= <<>> ->
				 fun(Peer, <<"approve">>) ->
						 mod_server_trust_commands:approve_for(via(From), Host, Peer, For);
				    (Peer, Choice) ->
						 mod_server_trust_commands:act(via(From), Host, Peer, Choice)
				 end;
			 _ ->
				 fun(Peer, Choice) ->
						 mod_server_trust_commands:act(via(From), Host, Peer, Choice)
				 end
		 end,
	{Done, Failed} =
		lists:foldl(
		  fun(Peer, {D, F}) ->
			  case xmpp_util:get_xdata_values(Peer, X) of
				  [Choice] when Choice == <<"approve">>; Choice == <<"deny">> ->
					  case Decide(Peer, Choice) of
						  {error, _, _, Msg} -> {D, [Msg | F]};
						  _ -> {[<<Peer/binary, ": ", Choice/binary>> | D], F}
					  end;
				  [] -> {D, F};
				  [<<"later">>] -> {D, F};
				  Values ->
					  %% Never read as "later": the admin meant something, and
					  %% is told it did nothing.
					  Quoted = lists:join(<<", ">>, [quote(V) || V <- Values]),
					  {D, [iolist_to_binary([Peer, <<": ">>, Quoted,
								 <<" is not approve, deny or later; nothing done">>])
					       | F]}
			  end
		  end, {[], []}, Peers),
	Info = case Done of
		       [] -> [<<"Nothing decided">>];
		       _ -> [iolist_to_binary(lists:join(<<"\n">>, lists:reverse(Done)))]
	       end,
	Errors = case Failed of
			 [] -> [];
			 _ -> [iolist_to_binary(lists:join(<<"\n">>, lists:reverse(Failed)))]
		 end,
	reply(Req, Sid, completed(Info, Errors));
submit(Host, From, _Act, _Data, _X, Req, _Sid) ->
	%% Cannot happen (sessions are keyed by node); a fresh form if it did.
	{_, Name, Act} = lists:keyfind(Req#adhoc_command.node, 1, commands()),
	open(Host, From, Name, Act, Req).

%% ejabberd's log names who decided (the audit log says actor api).
via(From) ->
	<<"ad-hoc command of ", (jid:encode(jid:remove_resource(From)))/binary>>.

%% A value as Prosody's %q shows it: in double quotes, " and \ escaped.
quote(V) ->
	[$", binary:replace(binary:replace(V, <<"\\">>, <<"\\\\">>, [global]),
			    <<"\"">>, <<"\\\"">>, [global]), $"].

completed(Infos, Errors) ->
	#adhoc_command{status = completed,
		       notes = [#adhoc_note{type = info, data = I} || I <- Infos] ++
			   [#adhoc_note{type = error, data = E} || E <- Errors]}.

reply(#adhoc_command{node = Node, lang = Lang}, Sid, Cmd) ->
	Cmd#adhoc_command{node = Node, lang = Lang, sid = Sid}.

pending_peers(Host) ->
	case mod_server_trust_commands:call(erlang, Host, get, [<<"pending">>], none) of
		{error, _, _, Msg} ->
			{error, Msg};
		Body ->
			try jiffy:decode(Body, [return_maps]) of
				L when is_list(L) ->
					{ok, [{P, summary(R)} || #{<<"peer">> := P} = R <- L, is_binary(P), P /= <<>>]};
				_ ->
					{error, <<"the sidecar's pending list is not a list">>}
			catch _:_ ->
				{error, <<"the sidecar's pending list is not JSON">>}
			end
	end.

peer_form(Title) ->
	#xdata{type = form, title = Title,
	       fields = [form_type(),
			 #xdata_field{type = 'text-single', var = <<"peer">>,
				      label = <<"Server domain">>, required = true}]}.

%% What the engine says is known about a requester, a line each (the sidecar's
%% `summary`); nothing when it sends none.
summary(#{<<"summary">> := Lines}) when is_list(Lines) ->
	[L || L <- Lines, is_binary(L)];
summary(_) ->
	[].

%% One choice per pending peer, with no default: the admin must pick. An
%% optional length of time limits the approvals (the same form as Prosody's).
%% Above each choice, what is known about the requester.
pending_form(Pending) ->
	Options = [#xdata_option{label = <<"Approve">>, value = <<"approve">>},
		   #xdata_option{label = <<"Deny">>, value = <<"deny">>},
		   #xdata_option{label = <<"Decide later">>, value = <<"later">>}],
	#xdata{type = form, title = <<"Pending server buddy requests">>,
	       fields = [form_type(),
			 #xdata_field{type = 'text-single', var = <<"trust_for">>,
				      label = <<"Trust the approved for (e.g. 90d; empty: no end)">>} |
			 lists:append(
			   [[#xdata_field{type = fixed,
					  values = [<<P/binary, ": ", (str:join(Summary, <<"\n">>))/binary>>]}
			     || Summary /= []] ++
			    [#xdata_field{type = 'list-single', var = P, label = P, options = Options}]
			    || {P, Summary} <- Pending])]}.

form_type() ->
	#xdata_field{type = hidden, var = <<"FORM_TYPE">>, values = [?NS_ADMIN_FORM]}.

%%%===================================================================
%%% Sessions: {Sid, {Node, LFrom}, Data, Deadline} in a public table
%%%===================================================================
tab(Host) ->
	gen_mod:get_module_proc(Host, ?MODULE).

now_ms() ->
	erlang:monotonic_time(millisecond).

new_sid() ->
	binary:encode_hex(crypto:strong_rand_bytes(16)).

open_session(Host, Node, From, Data) ->
	Tab = tab(Host),
	Full = ets:info(Tab, size) >= ?MAX_SESSIONS andalso
		begin sweep(Tab), ets:info(Tab, size) >= ?MAX_SESSIONS end,
	case Full of
		true ->
			?WARNING_MSG("mod_server_trust (~ts): ~p ad-hoc forms open, refusing another",
				     [Host, ?MAX_SESSIONS]),
			{error, full};
		false ->
			Sid = new_sid(),
			ets:insert(Tab, {Sid, {Node, jid:tolower(From)}, Data, now_ms() + ?LIFETIME}),
			{ok, Sid}
	end.

%% The session's data when Sid is a live session of Node opened by From;
%% it is removed, so a form is acted on at most once (of two concurrent
%% submissions only the one whose ets:take finds it goes on).
take_session(_Host, <<>>, _Node, _From) ->
	error;
take_session(Host, Sid, Node, From) ->
	Tab = tab(Host),
	Owner = {Node, jid:tolower(From)},
	Now = now_ms(),
	try ets:lookup(Tab, Sid) of
		[{_, Owner, _, Deadline}] when Deadline > Now ->
			case ets:take(Tab, Sid) of
				[{_, Owner, Data, _}] -> {ok, Data};
				_ -> error
			end;
		_ ->
			error
	catch error:badarg ->  % no table: the module is stopping
		error
	end.

sweep(Tab) ->
	Now = now_ms(),
	ets:select_delete(Tab, [{{'_', '_', '_', '$1'}, [{'=<', '$1', Now}], [true]}]).

%%%===================================================================
%%% gen_server: owns the table, sweeps it
%%%===================================================================
init([Host, _Opts]) ->
	process_flag(trap_exit, true),
	Tab = ets:new(tab(Host), [named_table, public, set]),
	erlang:send_after(?SWEEP, self(), sweep),
	{ok, Tab}.

handle_call(_Request, _From, Tab) ->
	{reply, {error, badarg}, Tab}.

handle_cast(_Msg, Tab) ->
	{noreply, Tab}.

handle_info(sweep, Tab) ->
	sweep(Tab),
	erlang:send_after(?SWEEP, self(), sweep),
	{noreply, Tab};
handle_info(_Info, Tab) ->
	{noreply, Tab}.

terminate(_Reason, _Tab) ->
	ok.

code_change(_OldVsn, Tab, _Extra) ->
	{ok, Tab}.
