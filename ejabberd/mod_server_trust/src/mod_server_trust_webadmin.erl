%%%----------------------------------------------------------------------
%%% File    : mod_server_trust_webadmin.erl
%%% Purpose : the "Server buddies" page of each virtual host in ejabberd's
%%%           WebAdmin: the server roster, the pending requests, and
%%%           Approve/Deny buttons, carried out by the sidecar's admin API
%%%
%%% This Source Code Form is subject to the terms of the Mozilla Public
%%% License, v. 2.0. If a copy of the MPL was not distributed with this
%%% file, You can obtain one at https://mozilla.org/MPL/2.0/.
%%%
%%% Who gets in: the WebAdmin decides before this module runs. 23.01 lets a
%%% GET of /admin/server/HOST/... through for an account allowed by the
%%% access rule `configure` or `webadmin_view` of HOST, and a POST only for
%%% `configure` (ejabberd_web_admin:get_acl_rule/2), after checking the HTTP
%%% basic auth password. So viewers may look; only configurers may decide.
%%%
%%% What it does: every view and act is one call to the sidecar's admin API
%%% through mod_server_trust_commands:call/5 (its request, its
%%% `admin_token_file`, its error words): the sidecar stays the only writer of
%%% the store, the engine decides what an act may do, and a refusal (409
%%% already decided, sidecar down, no admin token) is shown as an error on
%%% the page. Everything from the store goes out as XML character data or
%%% attribute values (?XC/?XAC, escaped by fxml).
%%%
%%% CSRF: 23.01's WebAdmin has no protection of its own (HTTP basic auth,
%%% which a browser sends with any cross-site form post). An act therefore
%%% needs all of: POST (a GET never acts), the WebAdmin's authenticated
%%% `configure` session, a form token that is an HMAC of the admin's JID and
%%% the host under a random key of this node (a page of another site cannot
%%% read it), and, when the browser sends an Origin header, that origin
%%% being the WebAdmin's own (Host header).
%%%----------------------------------------------------------------------
-module(mod_server_trust_webadmin).
-author('server-trust').

%% Called by mod_server_trust:start/2 and stop/1.
-export([hooks/2]).
%% ejabberd_hooks callbacks.
-export([webadmin_menu/3, webadmin_page/3]).

-include("logger.hrl").
-include("xmpp.hrl").
-include("ejabberd_http.hrl").
-include("ejabberd_web_admin.hrl").
-include("translate.hrl").

-define(PAGE, <<"server-buddies">>).
-define(KEY, {?MODULE, csrf_key}).
-define(MENU_PRIO, 80).
-define(PAGE_PRIO, 50).

%%%===================================================================
%%% Hooks
%%%===================================================================
-spec hooks(binary(), add | delete) -> ok.
hooks(Host, Op) ->
	case Op of
		add -> ensure_key();
		delete -> ok
	end,
	ejabberd_hooks:Op(webadmin_menu_host, Host, ?MODULE, webadmin_menu, ?MENU_PRIO),
	ejabberd_hooks:Op(webadmin_page_host, Host, ?MODULE, webadmin_page, ?PAGE_PRIO),
	ok.

webadmin_menu(Acc, _Host, Lang) ->
	Acc ++ [{?PAGE, translate:translate(Lang, ?T("Server buddies"))}].

webadmin_page(_, Host, #request{path = [?PAGE]} = Request) ->
	{stop, page(Host, Request)};
webadmin_page(Acc, _, _) ->
	Acc.

%%%===================================================================
%%% The page
%%%===================================================================
page(Host, #request{method = Method, lang = Lang, us = US} = R) ->
	Result = case Method of
			 'POST' -> [result(decide(Host, R))];
			 _ -> []
		 end,
	Token = token(US, Host),
	[?XC(<<"h1">>, <<(translate:translate(Lang, ?T("Server buddies")))/binary,
			 " (", Host/binary, ")">>),
	 ?XC(<<"p">>, <<"XEP-0267: the servers this host trusts, and the servers asking to. "
			"Data and acts come from the server-trust sidecar.">>)]
		++ Result
		++ [?XC(<<"h2">>, <<"Pending requests">>) | pending(Host, Token)]
		++ [?XC(<<"h2">>, <<"Buddies">>) | roster(Host)].

pending(Host, Token) ->
	case view(Host, [<<"pending">>]) of
		{ok, []} ->
			[?XAC(<<"p">>, [{<<"id">>, <<"no-pending">>}], <<"No request waits for a decision.">>)];
		{ok, Reqs} ->
			Head = [<<"Peer">>, <<"First seen">>, <<"Last seen">>, <<"Times seen">>, <<"Decision">>,
				<<"What is known">>, <<"">>],
			[table(<<"pending">>, Head,
			       [[cell(R, <<"peer">>), cell(R, <<"first_seen">>), cell(R, <<"last_seen">>),
				 cell(R, <<"times_seen">>), cell(R, <<"decision">>), lines(R, <<"summary">>),
				 ?XE(<<"td">>, [buttons(text(maps:get(<<"peer">>, R, null)), Token)])]
				|| R <- Reqs, is_map(R)])];
		{error, Msg} ->
			[error_p(Msg)]
	end.

roster(Host) ->
	case view(Host, [<<"roster">>]) of
		{ok, []} ->
			[?XAC(<<"p">>, [{<<"id">>, <<"no-buddies">>}], <<"No server buddies yet.">>)];
		{ok, Peers} ->
			Head = [<<"Peer">>, <<"State">>, <<"Trusted">>, <<"Groups">>, <<"Approved at">>,
				<<"Note">>],
			[table(<<"buddies">>, Head,
			       [[cell(P, <<"peer">>), cell(P, <<"state">>), cell(P, <<"trusted">>),
				 cell(P, <<"groups">>), cell(P, <<"approved_at">>), cell(P, <<"note">>)]
				|| P <- Peers, is_map(P)]),
			 ?XC(<<"p">>, <<"The roster has no last-seen time; a pending request has "
				       "(above), and `server-trust show PEER` gives a peer's history.">>)];
		{error, Msg} ->
			[error_p(Msg)]
	end.

%% One form per request: the peer, the form token, two submit buttons (the
%% one clicked names the act).
buttons(Peer, Token) ->
	?XAE(<<"form">>, [{<<"action">>, <<"">>}, {<<"method">>, <<"post">>}],
	     [?INPUT(<<"hidden">>, <<"peer">>, Peer),
	      ?INPUT(<<"hidden">>, <<"token">>, Token),
	      ?INPUT(<<"submit">>, <<"approve">>, <<"Approve">>),
	      ?C(<<" ">>),
	      ?INPUTD(<<"submit">>, <<"deny">>, <<"Deny">>)]).

table(Id, Head, Rows) ->
	?XAE(<<"table">>, [{<<"id">>, Id}, {<<"class">>, <<"withtextareas">>}],
	     [?XE(<<"thead">>, [?XE(<<"tr">>, [?XC(<<"td">>, H) || H <- Head])]),
	      ?XE(<<"tbody">>, [?XE(<<"tr">>, Cells) || Cells <- Rows])]).

%% A list of lines (the engine's summary of a request), one per line.
lines(Map, Key) ->
	Lines = [L || L <- case maps:get(Key, Map, []) of X when is_list(X) -> X; _ -> [] end,
		      is_binary(L)],
	?XAE(<<"td">>, [{<<"class">>, Key}], lists:join(?X(<<"br">>), [?C(L) || L <- Lines])).

cell(Map, Key) ->
	?XAC(<<"td">>, [{<<"class">>, Key}], text(maps:get(Key, Map, null))).

%% A JSON value as page text (fxml escapes it on output).
text(null) -> <<"-">>;
text(true) -> <<"yes">>;
text(false) -> <<"no">>;
text(B) when is_binary(B) -> B;
text(I) when is_integer(I) -> integer_to_binary(I);
text([]) -> <<"-">>;
text(L) when is_list(L) -> iolist_to_binary(lists:join(<<", ">>, [text(X) || X <- L]));
text(Other) -> iolist_to_binary(jiffy:encode(Other)).

result({ok, Msg}) ->
	?XAC(<<"p">>, [{<<"class">>, <<"result">>}, {<<"id">>, <<"act-result">>}], Msg);
result({error, Msg}) ->
	error_p(Msg).

error_p(Msg) ->
	?XAC(<<"p">>, [{<<"class">>, <<"result">>}, {<<"id">>, <<"act-error">>},
		       {<<"style">>, <<"color: #b00000">>}], <<"Error: ", Msg/binary>>).

%%%===================================================================
%%% Views and acts: the sidecar's admin API
%%%===================================================================
view(Host, Path) ->
	case sidecar(Host, get, Path) of
		{ok, Body} ->
			try jiffy:decode(Body, [return_maps]) of
				L when is_list(L) -> {ok, L};
				_ -> {error, <<"the sidecar's answer is not a list">>}
			catch _:_ -> {error, <<"the sidecar's answer is not JSON">>}
			end;
		{error, _} = Err ->
			Err
	end.

%% A posted form: the act only when every CSRF check passes.
decide(Host, #request{q = Q, us = {User, Server} = US} = R) ->
	Peer = proplists:get_value(<<"peer">>, Q, <<>>),
	Act = case {lists:keymember(<<"approve">>, 1, Q), lists:keymember(<<"deny">>, 1, Q)} of
		      {true, false} -> <<"approve">>;
		      {false, true} -> <<"deny">>;
		      _ -> none
	      end,
	Token = proplists:get_value(<<"token">>, Q, <<>>),
	case {same_origin(R), valid_token(Token, US, Host), Act, Peer} of
		{false, _, _, _} ->
			{error, <<"the form was not posted from this WebAdmin (Origin): nothing done">>};
		{_, false, _, _} ->
			{error, <<"the form token is not valid (page from another node or an old "
				  "page?): reload the page; nothing done">>};
		{_, _, none, _} ->
			{error, <<"no act (Approve or Deny) in the form: nothing done">>};
		{_, _, _, <<>>} ->
			{error, <<"no peer in the form: nothing done">>};
		{true, true, Act, Peer} ->
			case sidecar(Host, post, [<<"peers">>, Peer, Act]) of
				{ok, Body} ->
					?INFO_MSG("mod_server_trust (~ts): ~ts ~ts by webadmin ~ts@~ts",
						  [Host, Act, Peer, User, Server]),
					{ok, done_text(Act, Peer, Body)};
				{error, _} = Err ->
					Err
			end
	end.

done_text(Act, Peer, Body) ->
	Detail = try jiffy:decode(Body, [return_maps]) of
			 #{<<"detail">> := D} when is_binary(D) -> <<": ", D/binary>>;
			 _ -> <<>>
		 catch _:_ -> <<>>
		 end,
	Verb = case Act of
		       <<"approve">> -> <<"Approved ">>;
		       <<"deny">> -> <<"Denied ">>
	       end,
	<<Verb/binary, Peer/binary, Detail/binary>>.

%% mod_server_trust_commands' request; any failure, even a crash, becomes an
%% error message (the page never crashes).
sidecar(Host, Method, Path) ->
	try mod_server_trust_commands:call(webadmin, Host, Method, Path, body(Method)) of
		Body when is_binary(Body) -> {ok, Body};
		{error, _Atom, _Code, Msg} -> {error, text(Msg)}
	catch
		throw:{_, Msg} when is_binary(Msg) -> {error, Msg};
		Class:Why ->
			?ERROR_MSG("mod_server_trust (~ts): WebAdmin call ~p ~p failed: ~p:~p",
				   [Host, Method, Path, Class, Why]),
			{error, <<"internal error (see ejabberd's log): nothing shown or done">>}
	end.

body(get) -> none;
body(post) -> #{}.

%%%===================================================================
%%% CSRF
%%%===================================================================
ensure_key() ->
	case persistent_term:get(?KEY, undefined) of
		undefined -> persistent_term:put(?KEY, crypto:strong_rand_bytes(32));
		_ -> ok
	end.

token({User, Server}, Host) ->
	ensure_key(),
	Mac = crypto:mac(hmac, sha256, persistent_term:get(?KEY),
			 [User, 0, Server, 0, Host]),
	binary:encode_hex(Mac).

valid_token(Token, US, Host) when is_binary(Token), byte_size(Token) > 0 ->
	Want = token(US, Host),
	byte_size(Token) == byte_size(Want) andalso crypto:hash_equals(Token, Want);
valid_token(_, _, _) ->
	false.

%% No Origin header (an older browser, curl): the token decides. An Origin
%% must name the host the request was sent to (scheme aside).
same_origin(#request{headers = Headers}) ->
	Find = fun(Name) ->
			       [V || {K, V} <- Headers,
				     string:lowercase(to_bin(K)) == Name]
	       end,
	case Find(<<"origin">>) of
		[] ->
			true;
		[Origin | _] ->
			case {uri_string:parse(Origin), Find(<<"host">>)} of
				{#{host := H} = U, [HostHeader | _]} ->
					Authority = case maps:get(port, U, undefined) of
							    undefined -> H;
							    P -> <<H/binary, ":", (integer_to_binary(P))/binary>>
						    end,
					string:lowercase(Authority) == string:lowercase(HostHeader);
				_ ->
					false
			end
	end.

to_bin(A) when is_atom(A) -> atom_to_binary(A, utf8);
to_bin(B) when is_binary(B) -> B;
to_bin(L) when is_list(L) -> list_to_binary(L).
