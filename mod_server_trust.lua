-- mod_server_trust: XEP-0267 Server Buddies for Prosody 0.12
-- Copyright (C) 2026 the server-trust authors. MPL-2.0.
--
-- A thin bridge: Prosody hooks in, the Rust engine (server_trust_lua.so) decides, its
-- actions go out as stanzas, chat messages and events. No trust policy lives here.
-- Stock mod_presence answers every 'subscribe' to the host JID with 'subscribed'; our
-- presence/host hook runs first and always stops the event, so that never happens.

local st = require "util.stanza";
local jid_split = require "util.jid".split;
local jid_prep = require "util.jid".prep;
local jid_host = require "util.jid".host;
local set = require "util.set";
local array = require "util.array";
local new_id = require "util.id".medium;
local server = require "net.server";
local get_jids_with_role = require "core.usermanager".get_jids_with_role;
local ipairs, pairs, next, pcall, type, tostring = ipairs, pairs, next, pcall, type, tostring;
local setmetatable, error = setmetatable, error;
local os_date, floor, t_concat = os.date, math.floor, table.concat;
local s_find, s_byte = string.find, string.byte;

local host = module.host;
local is_server = prosody.process_type == "prosody";

local store_root = module:get_option_path("server_trust_store", "server_trust", "data");
local native_path = module:get_option_path("server_trust_native_path", "server_trust_lua.so");
local poll_interval = module:get_option_number("server_trust_poll_interval", 0.1);
local notify_admins = module:get_option_boolean("server_trust_notify_admins", true);
-- Engine options: only those the admin set are passed; their defaults and checks live in Rust.
local options = {};
for key, name in pairs({ reciprocate = "server_trust_reciprocate", preapprove_on_request = "server_trust_preapprove",
		max_pending = "server_trust_max_pending", max_pending_per_site = "server_trust_max_pending_per_site",
		notify_burst = "server_trust_notify_burst", repeat_window = "server_trust_repeat_window",
		site_requests_per_minute = "server_trust_site_requests_per_minute",
		pending_expiry_days = "server_trust_pending_expiry_days",
		federation = "server_trust_federation", federation_group = "server_trust_federation_group",
		watch = "server_trust_watch" }) do
	options[key] = module:get_option(name);
end
options.adhoc = true; -- this module offers the ad-hoc commands the prompts name
-- Higher than mod_presence's presence/host handler (priority 0): we must run first.
local hook_priority = 10;

-- The native module: next to this file, at server_trust_native_path, or on package.cpath.
local function load_native()
	local open, err = package.loadlib(native_path, "luaopen_server_trust_lua");
	if open then return open(); end
	local ok, native = pcall(require, "server_trust_lua");
	if ok then return native; end
	return nil, err;
end

-- The native module is built for Lua 5.4 (Prosody 0.12 and 13 on Debian run lua5.4): in
-- another Lua it would crash the server, so say which Lua this is and stay closed instead.
local jit = package.loaded["jit"]; -- LuaJIT only; reading the global would warn in Prosody
local lua_version = type(jit) == "table" and tostring(jit.version) or _VERSION;
local native, native_err;
if lua_version ~= "Lua 5.4" then
	native_err = "Prosody runs "..lua_version..", but server_trust_lua.so is built for Lua 5.4: "
		.."run Prosody with lua5.4 (Debian: apt install lua5.4 and the prosody package built for it)";
else
	native, native_err = load_native();
end
-- How long evidence queries wait for their reply (the engine says).
local answer_timeout = native and native.answer_timeout or 10;
local engine, engine_err;
if native then
	local ok, opened, err = pcall(native.open, store_root, host, options);
	if ok then engine, engine_err = opened, err; else engine_err = tostring(opened); end
elseif lua_version ~= "Lua 5.4" then
	engine_err = native_err;
else
	engine_err = "cannot load server_trust_lua.so ("..tostring(native_err)..")";
end
if not engine then
	-- Fail closed: still swallow host subscriptions below, so stock auto-approval never runs.
	module:log("error", "Server buddies disabled, every request will be dropped: %s", engine_err);
end

-- The trusted set, mirrored in Lua so that is_trusted() is a table lookup, not a call into
-- Rust (~25 ns instead of ~200). The engine stays the truth: after every engine call (each
-- poll included, which is how hand edits and the CLI's set_groups arrive) the mirror takes
-- what moved since the engine's generation it last saw. Keys are every spelling a lookup
-- should find as is: the normalised name and, for an internationalised one, its A-label.
local mirror_set = {};    -- spelling -> true, for trusted peers only (trusted_peers reads it)
local mirror_groups = {}; -- spelling -> { [group] = true } for trusted peers with groups
-- What is_trusted looks up first, one lookup for hits and strangers alike: a trusted
-- spelling -> true; any other string seen -> its normal form when that differs (resolved
-- through mirror_set at each call), else false. Normalising depends on the string alone, so
-- only the `true` entries follow the trusted set; the others are a bounded cache.
local known, known_cached, known_max = {}, 0, 4096;
local mirror;
if engine then
	local ok, m = pcall(function () return engine:mirror(); end);
	mirror = ok and m or nil;
end
if engine and not mirror then
	module:log("warn", "server_trust_lua.so is older than this module: is_trusted() asks the engine each time");
end

-- One spelling becomes trusted with `groups` (a set), or not trusted (groups == false).
local function mirror_put(spelling, groups)
	mirror_set[spelling] = groups and true or nil;
	mirror_groups[spelling] = groups and next(groups) ~= nil and groups or nil;
	-- Not trusted: forget it, the next lookup works out its normal form again.
	known[spelling] = groups and true or nil;
end

-- Empties the mirror (mirror_set in place: trusted_peers keeps reading the same table).
local function mirror_clear()
	for spelling in pairs(mirror_set) do mirror_set[spelling] = nil; end
	for spelling in pairs(mirror_groups) do mirror_groups[spelling] = nil; end
	known, known_cached = {}, 0;
end

-- Takes what moved since the last copy. A failure fails closed: the mirror is emptied and
-- the whole set is copied again at the next call.
local function mirror_sync()
	if not mirror then return; end
	local ok, changes = pcall(mirror.changes, mirror);
	if ok and changes then
		ok, changes = pcall(function ()
			for spelling, groups in pairs(changes) do mirror_put(spelling, groups); end
		end);
	end
	if not ok then
		module:log("error", "Cannot copy the trusted set, nobody is trusted until the next try: %s", tostring(changes));
		mirror_clear();
		pcall(mirror.reset, mirror);
	end
end
mirror_sync();

-- Who is told of a request: the config's `admins` and whoever holds a role that may run the
-- ad-hoc commands (prosody:admin, prosody:operator), such as an admin made with Prosody 13's
-- `user:set_role`, who could decide but was never told. A failing roles lookup (another
-- authz module) still leaves the config's admins.
local function admins()
	local all = module:get_option_inherited_set("admins", set.new()) / jid_prep;
	for _, role in ipairs({ "prosody:admin", "prosody:operator" }) do
		local ok, jids = pcall(get_jids_with_role, role, host);
		for _, j in ipairs(ok and type(jids) == "table" and jids or {}) do
			all:add(jid_prep(j) or j);
		end
	end
	return all;
end

-- What an admin looks for in the log after enabling the module (README, Troubleshooting).
if engine and is_server then
	module:log("info", "Server buddies on: store %s/%s; requests wait for an admin", store_root, host);
	if notify_admins and admins():empty() then
		-- Debian's prosody.cfg.lua ships `admins = { }`.
		module:log("warn", "No admins set for %s: buddy requests are announced in this log only; "
			.."set admins = { \"you@%s\" } (on Prosody 13, or give someone the role prosody:admin) "
			.."to get them as chat messages", host, host);
	end
end

-- Outcomes for Prosody's metrics (counted by the engine, copied at each collection).
local metrics = {};
for name, description in pairs({ requests = "Inbound buddy requests recorded for an admin",
		approvals = "Peers approved", denials = "Requests denied", revocations = "Peers revoked",
		cap_drops = "Inbound requests dropped at the pending caps (total, per site, per-site rate)",
		expired = "Pending requests expired unanswered (server_trust_pending_expiry_days)" }) do
	metrics[name] = module:metric("counter", name, "", description, {}):with_labels();
end
module:hook_global("stats-update", function ()
	if not engine then return; end
	for name, value in pairs(engine:stats()) do
		if metrics[name] then metrics[name]:set(value); end
	end
end);

-- Fires `name` to each of this host's handlers in priority order, each under pcall.
local function fire_isolated(name, data)
	local handlers = prosody.hosts[host].events.get_handlers(name);
	for _, handler in ipairs(handlers or {}) do
		local ok, ret = pcall(handler, data);
		if not ok then
			module:log("error", "A %s listener failed: %s", name, tostring(ret));
		elseif ret ~= nil then
			return; -- a handler that answers stops the event, as in Prosody's own fire_event
		end
	end
end

-- Subscription stanzas: recorded in the engine's outbox with the change that caused them.
local subscription_types = { subscribe = true, subscribed = true, unsubscribe = true, unsubscribed = true };

-- Carries out what the engine decided; `log` is the session's logger when there is one.
local function perform(actions, err, log)
	log = log or module._log;
	if not actions then
		log("warn", "%s", err);
		return nil, err;
	end
	-- Stanzas first: what the engine decided is already on disk, so it must reach the peer
	-- whatever another module's listener does with the events fired after.
	for _, a in ipairs(actions) do
		if a.kind == "send" then
			local ptype = a.type ~= "available" and a.type or nil;
			module:send(st.presence({ from = host, to = a.peer, type = ptype, id = a.id or new_id() }));
			if subscription_types[a.type] then
				-- Prosody accepted it (it does at once): it leaves the engine's outbox. A bounce
				-- puts it back (the error hook below).
				local ok, _, derr = pcall(engine.delivered, engine, a.peer, a.type, a.id);
				if not ok or derr then log("debug", "Outbox: %s to %s not noted as sent: %s", a.type, a.peer, tostring(derr or _)); end
			end
		end
	end
	for _, a in ipairs(actions) do
		if a.kind == "notify" then
			log("warn", "%s", a.text);
			if notify_admins then
				for admin in admins() do
					module:send(st.message({ from = host, to = admin, type = "chat" }):text_tag("body", a.text));
				end
			end
		elseif a.kind == "trust" then
			-- The caller synchronised the mirror already; this keeps it right should that
			-- have failed (the engine's word on this peer; the groups come with the next copy).
			if mirror and not a.trusted ~= not mirror_set[a.peer] then
				mirror_put(a.peer, a.trusted and {});
			end
			-- Each listener on its own: one that fails is logged and the others still run.
			fire_isolated(a.trusted and "server-trust/added" or "server-trust/removed", { host = host, peer = a.peer });
			-- Metronome's mod_server_presence names, so its modules work unchanged.
			fire_isolated(a.trusted and "peer-subscription-completed" or "peer-subscription-removed", a.peer);
		elseif a.kind == "log" then
			log(a.level, "%s", a.text);
		elseif a.kind == "query" then
			-- Evidence for the admin: ask the new requester, hand the engine whatever comes back.
			local peer, ns = a.peer, a.ns;
			local function answer(reply)
				local ok, more, aerr = pcall(engine.answer, engine, peer, ns, reply and tostring(reply) or nil);
				if ok then perform(more, aerr, log); else log("warn", "Evidence from %s not kept: %s", peer, tostring(more)); end
			end
			module:send_iq(st.iq({ type = "get", from = host, to = peer, id = new_id() }):tag("query", { xmlns = ns }),
				nil, answer_timeout):next(function (event) answer(event.stanza); end,
				function (e) answer(type(e) == "table" and e.context and e.context.stanza or nil); end);
		end
	end
	return actions;
end

-- Engine calls go through here: a Rust error becomes a log line, never a failed hook.
local function call_logged(log, method, ...)
	if not engine then return nil, engine_err; end
	local ok, actions, err = pcall(engine[method], engine, ...);
	-- Before the actions: the server-trust/added and /removed listeners see the new set.
	mirror_sync();
	if not ok then return perform(nil, actions, log); end
	return perform(actions, err, log);
end
local function call(method, ...) return call_logged(nil, method, ...); end

-- Peers and tools can see that this host speaks XEP-0267 (the feature Metronome's server
-- buddies module advertises).
module:add_feature("urn:xmpp:server-presence");

module:hook("presence/host", function (event)
	local origin, stanza = event.origin, event.stanza;
	local log = origin.log or module._log;
	local node, from_host, resource = jid_split(stanza.attr.from);
	local ptype = stanza.attr.type or "available";
	if node or resource or (origin.type ~= "s2sin" and origin.type ~= "s2sout") then
		-- XEP-0267 is between servers: users and local entities get no trust, no auto-approval.
		log("debug", "Ignoring %s presence to %s from non-server %s", ptype, host, stanza.attr.from);
		return true;
	end
	if ptype == "error" then
		-- e.g. our subscribed bounced: remote-server-not-found. What we delivered to that peer
		-- lately goes back in the engine's outbox, sent again with backoff (not forgotten).
		local _, condition, text = stanza:get_error();
		log("warn", "Presence error from %s: %s %s", from_host, condition, text or "");
		call_logged(log, "bounced", from_host, condition);
	else
		if ptype == "subscribe" and origin.type == "s2sin" and engine then
			-- Evidence: how this stream was authenticated, and the certificate it showed.
			local conn = origin.conn;
			local cert = conn and conn.ssl_peercertificate and conn:ssl_peercertificate();
			local auth = origin.dane and "dane" or origin.cert_identity_status == "valid" and "certificate" or "dialback";
			local ok, _, serr = pcall(engine.session, engine, from_host, auth, cert and cert:pem() or nil);
			if not ok or serr then log("debug", "Stream facts for %s not kept: %s", from_host, tostring(serr or _)); end
		end
		call_logged(log, "inbound", from_host, ptype, stanza.attr.id);
	end
	return true;
end, hook_priority);

-- Buddies-only federation (server_trust_federation = "buddies"): the engine decides for each
-- stanza whether it may cross s2s with its peer; what it refuses is dropped, and a message,
-- an iq request or a subscription request is answered with a policy-violation error.
if (options.federation or "open") ~= "open" or options.federation_group ~= nil then
	local ours = setmetatable({}, { __mode = "k" }); -- the errors we send: let them out
	local routed = { message = true, presence = true, iq = true };
	local function federates(peer, host_presence)
		if not engine or not peer then return false; end -- no engine: no federation (fails closed)
		local ok, yes = pcall(engine.federates, engine, peer, host_presence);
		return ok and yes == true;
	end
	-- What passes between the two host JIDs without trust: the engine's rule, by name, type
	-- and the first child's namespace.
	local function between_hosts(stanza)
		local child = stanza.tags[1];
		local ok, yes = pcall(native.host_stanza, stanza.name, stanza.attr.type, child and child.attr.xmlns);
		return ok and yes == true;
	end
	local function refuse(stanza, peer)
		local t, name = stanza.attr.type, stanza.name;
		if (name == "message" and t ~= "error") or (name == "iq" and (t == "get" or t == "set"))
			or (name == "presence" and t == "subscribe") then
			local reply = st.error_reply(stanza, "cancel", "policy-violation",
				host.." federates with its server buddies only, and "..peer.." is not one");
			ours[reply] = true;
			module:send(reply);
		end
		return true;
	end
	local function inbound(event)
		local origin, stanza = event.origin, event.stanza;
		if origin.type ~= "s2sin" then return; end
		local from = stanza.attr.from;
		local peer = jid_host(from);
		if federates(peer, from == peer and stanza.attr.to == host and between_hosts(stanza)) then return; end
		(origin.log or module._log)("debug", "Refused %s from %s: not a server buddy", stanza.name, from);
		return refuse(stanza, peer);
	end
	for _, name in ipairs({ "message", "presence", "iq" }) do
		for _, to in ipairs({ "/bare", "/full", "/host" }) do
			module:hook(name..to, inbound, 2000); -- before every other handler
		end
	end
	module:hook("route/remote", function (event)
		local stanza, peer = event.stanza, event.to_host;
		-- Dialback's own elements travel this way too: they are how any stream comes up.
		if ours[stanza] or not routed[stanza.name] then return; end
		if federates(peer, stanza.attr.from == host and stanza.attr.to == peer and between_hosts(stanza)) then return; end
		module:log("debug", "Refused %s to %s: not a server buddy", stanza.name, stanza.attr.to);
		return refuse(stanza, peer);
	end, 2000);
	-- A revoked buddy's streams are closed at once (the stanzas of the revoke are already on
	-- the wire: an established stream writes them before its close).
	module:hook("server-trust/removed", function (event)
		local reason = { condition = "policy-violation", text = "No longer a server buddy of "..host };
		local out = prosody.hosts[host] and prosody.hosts[host].s2sout[event.peer];
		if out and out.type == "s2sout" then out:close(reason); end
		for session in pairs(prosody.incoming_s2s) do
			if session.to_host == host and session.from_host == event.peer then session:close(reason); end
		end
	end);
end

-- Public API: module:depends("server_trust").is_trusted(peer[, scope]). Anything odd (not
-- a string, not UTF-8, a table scope) is simply not trusted: access checks never raise.
-- The same answers as the engine's is_trusted, from the mirror: a spelling found there is a
-- hit; another one is normalised once (only when normalising could change it: uppercase,
-- non-ASCII, "--" as in A-labels, a trailing dot), and what it normalises to is kept.
local normalise = native and native.normalise;

-- What `known` keeps for a string seen for the first time: its normal form when it differs,
-- else false (the string is its own normal form, or not a host name at all).
local function first_sight(peer)
	if type(peer) ~= "string" then return false; end
	local normal = false;
	if #peer <= 1023 and (s_find(peer, "[^a-z0-9%.%-]") or s_find(peer, "--", 1, true) or s_byte(peer, -1) == 46) then
		local ok, n = pcall(normalise, peer);
		if ok and type(n) == "string" and n ~= peer then normal = n; end
	end
	if #peer <= 255 then -- a longer one is no host name as it is: not worth keeping
		if known_cached >= known_max then
			-- Full: start again from the trusted spellings (a flood of names costs a copy
			-- of the trusted set every known_max new names, never unbounded memory).
			known, known_cached = {}, 0;
			for spelling in pairs(mirror_set) do known[spelling] = true; end
		end
		known[peer], known_cached = normal, known_cached + 1;
	end
	return normal;
end

local function is_trusted_in_engine(peer, scope)
	if not engine or type(peer) ~= "string" or (scope ~= nil and type(scope) ~= "string") then return false; end
	local ok, trusted = pcall(engine.is_trusted, engine, peer, scope);
	return ok and trusted == true;
end

function is_trusted(peer, scope) -- luacheck: ignore 131
	-- Only strings are keys of `known` and `mirror_set`, so nil, tables, numbers and
	-- non-UTF-8 strings are never trusted; a non-string scope is never in a group set.
	local k = known[peer];
	if k == true then
		if scope == nil then return true; end
		local groups = mirror_groups[peer];
		return groups ~= nil and groups[scope] == true;
	elseif k == nil then
		if not mirror then return is_trusted_in_engine(peer, scope); end
		k = first_sight(peer);
	end
	if k and mirror_set[k] then
		if scope == nil then return true; end
		local groups = mirror_groups[k];
		return groups ~= nil and groups[scope] == true;
	end
	return false;
end

-- module:depends("server_trust").trusted_peers: the trusted set for a plain lookup,
-- `trusted_peers[peer] == true`, read-only (writing raises; rawset refuses it: it is not a
-- table). Keys are normal forms only (lowercase; U-labels and A-labels): use is_trusted for
-- names as received and for scopes. pairs() walks the peers.
local read_only = native and native.read_only;
trusted_peers = read_only and read_only({ -- luacheck: ignore 131
	__index = mirror_set;
	__newindex = function () error("server_trust's trusted_peers is read-only", 2); end;
	__pairs = function ()
		local key;
		return function ()
			local value;
			key, value = next(mirror_set, key);
			return key, value;
		end;
	end;
	__tostring = function () return "server_trust trusted peers (read-only)"; end;
	__metatable = false;
}) or setmetatable({}, { __newindex = function () error("server_trust's trusted_peers is read-only", 2); end,
	__metatable = false }); -- no engine: an empty view, which fails closed

-- Metronome modules ask with the bare domain (or an event table on some call sites).
module:hook("peer-is-subscribed", function (data)
	local peer = type(data) == "table" and (data.peer or data.host) or data;
	return is_trusted(peer);
end);

local fd_watch;
if is_server and engine then
	-- After startup: our presence to approved peers, probes to peers that approved us.
	module:add_timer(0, function ()
		call("startup");
	end);
	-- A clean stop: `unavailable` to approved peers, so the "last seen" they show is true.
	module:hook_global("server-stopping", function ()
		call("shutdown");
	end);
	-- Decisions made with the CLI or by editing a pending file: at once when the store's
	-- wakeup fd fires (inotify behind it), and on a timer in case the event loop cannot watch it.
	local fd = engine:wakeup_fd();
	if fd and server.watchfd then
		fd_watch = server.watchfd(fd, function () call("poll"); end);
	end
	module:add_timer(poll_interval, function ()
		call("poll");
		-- The outbox: what a bounce put back or a crash left unsent, when its backoff is over.
		call("outbox_due");
		return poll_interval;
	end);
end

-- Admin surfaces share one registry of the hosts' engines (the shell is global).
local registry = module:shared("/*/server_trust/engines");
registry[host] = { engine = engine; call = call; drops = store_root.."/"..host.."/drops.toml" };

-- Shell target: (host, peer), or just (peer) when a single host serves buddies.
local function target(a, b)
	if b then
		if not registry[a] then return nil, "server_trust is not loaded on "..tostring(a); end
		return a, b;
	end
	local only;
	for h in pairs(registry) do
		if only then return nil, "several hosts serve buddies: give the host first"; end
		only = h;
	end
	return only, a;
end

-- The help metatable is Prosody 13's convention: it lists the commands, so that
-- `prosodyctl shell server_trust pending` dispatches and `help` describes them. 0.12 ignores it.
local peer_args = array({ { name = "host" }, { name = "peer" } });
local host_args = array({ { name = "host" } });
local shell = setmetatable({}, { help = {
	desc = "XEP-0267 server buddies (server-trust): give the host first when several serve buddies";
	commands = {
		pending = { desc = "Requests waiting for a decision", args = host_args };
		list = { desc = "The server roster, with availability", args = host_args };
		request = { desc = "Ask a peer to be a buddy (sends subscribe)", args = peer_args };
		approve = { desc = "Approve a peer's pending request", args = peer_args };
		deny = { desc = "Deny a peer's pending request", args = peer_args };
		revoke = { desc = "Withdraw trust with a peer, both ways", args = peer_args };
		deny_site = { desc = "Deny every pending request from a domain and its subdomains",
			args = array({ { name = "host" }, { name = "site" } }) };
		deny_older = { desc = "Deny every pending request first seen longer ago than an age (7d, 12h, 30m)",
			args = array({ { name = "host" }, { name = "age" } }) };
		dropped = { desc = "Requests dropped at the pending caps, since when", args = host_args };
	};
} });
for _, act in ipairs({ "request", "approve", "deny", "revoke" }) do
	shell[act] = function (self, a, b) -- luacheck: ignore 212/self
		local h, peer = target(a, b);
		if not h then return false, peer; end
		local ok, err = registry[h].call(act, peer, "shell");
		if not ok then return false, err; end
		return true, act.." "..peer.." on "..h;
	end;
end
-- Prints one line per item that `method` lists, for host `h` or every host.
local function print_each(self, h, method, line)
	local n = 0;
	for name, r in pairs(registry) do
		if r.engine and (not h or h == name) then
			for _, item in ipairs(r.engine[method](r.engine)) do
				self.session.print(name, line(item));
				n = n + 1;
			end
		end
	end
	return n;
end
-- "N dropped at the cap since T" from the store's drops.toml (the count the CLI shows), or nil.
local function dropped_line(r)
	local f = r.drops and io.open(r.drops);
	if not f then return nil; end
	local text = f:read(4096) or "";
	f:close();
	local n, since = text:match("\ndropped = (%d+)"), text:match('\nsince = "([^"]*)"');
	if not n then return nil; end
	return n.." dropped at the cap since "..tostring(since);
end
function shell:pending(h)
	local n = print_each(self, h, "pending", function (p)
		return p.peer, p.decision, "first seen "..p.first_seen, p.times_seen.."x";
	end);
	for name, r in pairs(registry) do
		local line = (not h or h == name) and dropped_line(r);
		if line then self.session.print(name, line); end
	end
	return true, n.." pending";
end
function shell:dropped(h)
	local n = 0;
	for name, r in pairs(registry) do
		if not h or h == name then
			self.session.print(name, dropped_line(r) or "none dropped at the cap");
			n = n + 1;
		end
	end
	return true, n.." host(s)";
end
-- Bulk denies: each pending request `pick` takes is denied as `deny` denies one (through
-- the engine, which answers it at once); prints the peers denied.
local function deny_each(self, h, pick)
	local r = registry[h];
	local n = 0;
	for _, p in ipairs(r.engine and r.engine:pending() or {}) do
		if p.decision == "pending" and pick(p) then
			local ok, err = r.call("deny", p.peer, "shell");
			if ok then n = n + 1; end
			self.session.print(h, ok and "deny "..p.peer or "skipped "..p.peer..": "..tostring(err));
		end
	end
	return true, n.." denied on "..h;
end
function shell:deny_site(a, b)
	local h, site = target(a, b);
	if not h then return false, site; end
	site = normalise and normalise(site);
	if not site then return false, "not a server domain: "..tostring(b or a); end
	return deny_each(self, h, function (p)
		return p.peer == site or p.peer:sub(-#site - 1) == "."..site;
	end);
end
local age_units = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 };
function shell:deny_older(a, b)
	local h, age = target(a, b);
	if not h then return false, age; end
	local secs, bad = 0, "not an age such as 7d, 12h, 30m: "..tostring(age);
	if age == nil or tostring(age) == "" or tostring(age):gsub("%d+%a", "") ~= "" then return false, bad; end
	for n, unit in tostring(age):gmatch("(%d+)(%a)") do
		if not age_units[unit] then return false, bad; end
		secs = secs + tonumber(n) * age_units[unit];
	end
	-- RFC 3339 UTC times of one format compare as strings.
	local cutoff = os_date("!%Y-%m-%dT%H:%M:%SZ", os.time() - secs);
	return deny_each(self, h, function (p) return p.first_seen < cutoff; end);
end
function shell:list(h)
	local n = print_each(self, h, "roster", function (e)
		local since = e.since and os_date("!%Y-%m-%dT%H:%M:%SZ", floor(e.since));
		local seen = not since and "never seen" or (e.available and "available since " or "last seen ")..since;
		return e.peer, e.state, e.trusted and "trusted" or "-", seen, t_concat(e.groups, ",");
	end);
	return true, n.." peers";
end
module:shared("/*/admin_shell/env").server_trust = shell;

-- XEP-0050 ad-hoc commands for the host's admins.
module:depends("adhoc");
local adhoc_new = module:require("adhoc").new;
local dataforms = require "util.dataforms";
local form_type = { name = "FORM_TYPE", type = "hidden", value = "http://jabber.org/protocol/admin" };

local function peer_command(title, node, act)
	local layout = dataforms.new({ title = title; form_type;
		{ name = "peer", type = "text-single", label = "Server domain", required = true } });
	module:provides("adhoc", adhoc_new(title, node, function (_, data, state)
		if data.action == "cancel" then return { status = "canceled" }; end
		-- mod_adhoc keeps sessions by id alone: only a session this command opened (its
		-- state is the node) takes a form, not another command's id sent with this node.
		if state ~= node or not data.form then
			return { status = "executing", actions = { "complete" }, form = layout }, node;
		end
		local fields = layout:data(data.form);
		local ok, err = call(act, fields.peer or "", "adhoc");
		if not ok then return { status = "completed", error = { message = err } }; end
		return { status = "completed", info = act.." "..fields.peer..": done" };
	end, "admin"));
end
peer_command("Request a server buddy", "urn:xmpp:server-trust#request", "request");
peer_command("Revoke a server buddy", "urn:xmpp:server-trust#revoke", "revoke");

-- One choice per pending peer, with no default: the admin must pick approve or deny.
-- `summaries` (peer -> lines, from the engine) go above each choice, as what is known.
local function pending_layout(peers, summaries)
	local fields = { title = "Pending server buddy requests"; form_type };
	for _, peer in ipairs(peers) do
		local summary = summaries and summaries[peer];
		if summary then
			fields[#fields+1] = { type = "fixed", value = peer..": "..t_concat(summary, "\n") };
		end
		fields[#fields+1] = { name = peer, type = "list-single", label = peer,
			options = { { label = "Approve", value = "approve" }, { label = "Deny", value = "deny" },
				{ label = "Decide later", value = "later" } } };
	end
	return dataforms.new(fields);
end

module:provides("adhoc", adhoc_new("Pending server buddies", "urn:xmpp:server-trust#pending", function (_, data, state)
	if data.action == "cancel" then return { status = "canceled" }; end
	if not engine then return { status = "completed", error = { message = engine_err } }; end
	-- Only a session this command opened (see peer_command) takes a form.
	if type(state) ~= "table" or not state.peers or not data.form then
		local peers, summaries = {}, {};
		for _, p in ipairs(engine:pending()) do peers[#peers+1], summaries[p.peer] = p.peer, p.summary; end
		if #peers == 0 then return { status = "completed", info = "No pending requests" }; end
		return { status = "executing", actions = { "complete" }, form = pending_layout(peers, summaries) }, { peers = peers };
	end
	local fields = pending_layout(state.peers):data(data.form);
	local done, failed = {}, {};
	for _, peer in ipairs(state.peers) do
		local choice = fields[peer];
		if choice == "approve" or choice == "deny" then
			local ok, err = call(choice, peer, "adhoc");
			if ok then done[#done+1] = peer..": "..choice; else failed[#failed+1] = tostring(err); end
		elseif choice ~= nil and choice ~= "later" then
			-- Never read as "later": the admin meant something, and is told it did nothing.
			failed[#failed+1] = ("%s: %q is not approve, deny or later; nothing done"):format(peer, tostring(choice));
		end
	end
	-- A decision refused (another admin's came first, ...) is an error note, not news.
	return { status = "completed", info = #done > 0 and t_concat(done, "\n") or "Nothing decided",
		error = #failed > 0 and { message = t_concat(failed, "\n") } or nil };
end, "admin"));

function module.unload()
	if fd_watch then fd_watch:close(); end
	registry[host] = nil;
	if next(registry) == nil then module:shared("/*/admin_shell/env").server_trust = nil; end
end
