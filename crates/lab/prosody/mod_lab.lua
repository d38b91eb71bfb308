-- mod_lab.lua -- TEST-ONLY Prosody 0.12 module of the Rust test lab (crates/lab,
-- src/prosody.rs). Never deploy this on a real server: it lets anyone with access
-- to the admin socket make a local host send arbitrary stanzas.
--
-- Global module (module:set_global()), listed in the global modules_enabled. It provides:
--
--  1. Recorder: every presence/message/iq event for every local host ("presence/host",
--     "presence/bare", "presence/full", same for message and iq) is appended as one JSON line to
--     <data_path>/lab-received.jsonl (option lab_record_file), from ANY origin (s2sin, s2sout,
--     local, c2s), hooked at priority 1000 and never consuming the event. Stanzas a local host
--     routes to a remote domain ("route/remote") are recorded too, with dir = "out".
--     Fields: t (util.time.now()), dir ("in"/"out"), event, host, origin_type,
--     origin_from_host, name, type, from, to, id, body (messages only), xml.
--  2. Readiness: <data_path>/lab-ready is written on "server-started".
--  3. Admin shell commands (mod_admin_shell env, 0.12.3 style):
--        lab:send(xml)  -- parse with util.xml, post as the local host (from must be local)
--        lab:ping()
--        lab:adhoc(host, from_jid, node[, action[, fields[, sessionid]]])
--            -- an XEP-0050 <iq type='set'><command/></iq> from from_jid (a JID at a local host)
--            -- to host, processed exactly as if a c2s session of from_jid had sent it; returns
--            -- the replies as JSON (see adhoc() below)
--     e.g.  prosodyctl --config CFG shell 'lab:send([==[<presence from="a.lit" to="b.lit"/>]==])'
--  4. Event recorder: the host events "server-trust/added" / "server-trust/removed" (payload
--     { host = , peer = }) and Metronome's "peer-subscription-completed" / "-removed" (payload:
--     the peer domain) are recorded as JSON lines with dir = "event", name = "event",
--     type = <event name>, from = <peer>, to = host = <host>.

module:set_global();

local xml_parse = require "util.xml".parse;
local jid_host = require "util.jid".host;
local json = require "util.json";
local now = require "util.time".now;
local hosts = prosody.hosts;

local in_server = prosody.process_type == "prosody";

local record_file = module:get_option_path("lab_record_file", "lab-received.jsonl", "data");

local function record(fields)
	local line = json.encode(fields);
	local f, err = io.open(record_file, "a");
	if not f then
		module:log("error", "lab: cannot open %s: %s", record_file, err);
		return;
	end
	-- one write() per line so a concurrent reader sees whole lines
	f:setvbuf("full", #line + 2);
	f:write(line, "\n");
	f:close();
end

local function stanza_fields(stanza, host, dir, event_name, origin)
	local body;
	if stanza.name == "message" then
		body = stanza:get_child_text("body");
	end
	return {
		t = now();
		dir = dir;
		event = event_name;
		host = host;
		origin_type = origin and origin.type or nil;
		origin_from_host = origin and origin.from_host or nil;
		name = stanza.name;
		type = stanza.attr.type;
		from = stanza.attr.from;
		to = stanza.attr.to;
		id = stanza.attr.id;
		body = body;
		xml = tostring(stanza);
	};
end

-- (1) recorder
function module.add_host(host_module)
	if not in_server then return; end
	local host = host_module.host;
	for _, name in ipairs({ "presence", "message", "iq" }) do
		for _, kind in ipairs({ "host", "bare", "full" }) do
			local event_name = name.."/"..kind;
			host_module:hook(event_name, function (event)
				local ok, err = pcall(function ()
					record(stanza_fields(event.stanza, host, "in", event_name, event.origin));
				end);
				if not ok then module:log("error", "lab recorder failed: %s", err); end
				-- never consume: return nothing
			end, 1000);
		end
	end
	-- (4) server-trust's events (fired by mod_server_trust on the host)
	for _, event_name in ipairs({ "server-trust/added", "server-trust/removed",
			"peer-subscription-completed", "peer-subscription-removed" }) do
		host_module:hook(event_name, function (data)
			local ok, err = pcall(function ()
				local peer = type(data) == "table" and data.peer or data;
				local fired_host = type(data) == "table" and data.host or host;
				record({ t = now(); dir = "event"; event = event_name; host = host; name = "event";
					type = event_name; from = tostring(peer); to = tostring(fired_host); xml = "" });
			end);
			if not ok then module:log("error", "lab event recorder failed: %s", err); end
		end, 1000);
	end
	host_module:hook("route/remote", function (event)
		local ok, err = pcall(function ()
			local stanza = event.stanza;
			if stanza.name ~= "presence" and stanza.name ~= "message" and stanza.name ~= "iq" then return; end
			record(stanza_fields(stanza, host, "out", "route/remote", event.origin));
		end);
		if not ok then module:log("error", "lab recorder (out) failed: %s", err); end
	end, 1000);
end

-- (3) admin shell commands
local function inject(xml)
	if type(xml) ~= "string" then return nil, "usage: lab:send(xml)"; end
	local stanza, err = xml_parse(xml);
	if not stanza then return nil, "XML parse error: "..tostring(err); end
	local from_host = stanza.attr.from and jid_host(stanza.attr.from);
	if not (from_host and hosts[from_host]) then
		return nil, "'from' must be a local host (or a JID at one), got "..tostring(stanza.attr.from);
	end
	module:log("info", "lab injecting at t=%.6f: %s", now(), stanza);
	prosody.core_post_stanza(hosts[from_host], stanza);
	return true, "sent "..stanza:top_tag();
end

-- XEP-0050 from a fake c2s session: the stanza goes through prosody.core_process_stanza as if
-- the client had sent it (from is stamped with the session's full JID, pre-stanza events and
-- mod_adhoc's permission checks all run). fields: Lua table name -> value (string, or a list
-- of strings) sent as a jabber:x:data submit form; FORM_TYPE
-- http://jabber.org/protocol/admin is added unless given. Returns JSON:
--   { replies = n, xml = <first reply>, type = "result"/"error", error = condition,
--     error_type =, error_text =, status =, sessionid =, node =, notes = { {type=, text=} },
--     actions = { "complete", ... }, form_type = "form"/"result"/nil,
--     fields = { { var =, type =, label =, required = bool, values = {..}, options = {..} } } }
local function adhoc(host, from_jid, node, action, fields, sessionid)
	if type(host) ~= "string" or not hosts[host] then return nil, "usage: lab:adhoc(host, from_jid, node[, action[, fields[, sessionid]]])"; end
	local username, from_host = require "util.jid".split(from_jid);
	if not (username and from_host and hosts[from_host]) then
		return nil, "from_jid must be user@<local host>, got "..tostring(from_jid);
	end
	local st = require "util.stanza";
	local iq = st.iq({ type = "set", to = host, from = from_jid.."/lab", id = "lab-adhoc-"..require "util.id".short() })
		:tag("command", { xmlns = "http://jabber.org/protocol/commands", node = node,
			action = action, sessionid = sessionid });
	if fields then
		iq:tag("x", { xmlns = "jabber:x:data", type = "submit" });
		if fields.FORM_TYPE == nil then
			iq:tag("field", { var = "FORM_TYPE", type = "hidden" })
				:text_tag("value", "http://jabber.org/protocol/admin"):up();
		end
		for name, value in pairs(fields) do
			iq:tag("field", { var = name });
			for _, v in ipairs(type(value) == "table" and value or { value }) do
				iq:text_tag("value", tostring(v));
			end
			iq:up();
		end
		iq:up();
	end
	iq:reset();
	local replies = {};
	local origin = {
		type = "c2s"; username = username; host = from_host; resource = "lab";
		full_jid = from_jid.."/lab"; id = "lab-adhoc";
		send = function (reply) replies[#replies+1] = st.clone(reply); return true; end;
		log = function (level, fmt, ...) return module:log(level, "[lab adhoc] "..fmt, ...); end;
	};
	function origin.close() end
	module:log("info", "lab adhoc at t=%.6f: %s", now(), iq);
	prosody.core_process_stanza(origin, iq);
	local r = replies[1];
	if not r then return nil, "no reply to "..tostring(iq); end
	local out = { replies = #replies; xml = tostring(r); type = r.attr.type; notes = {}; actions = {}; fields = {} };
	if r.attr.type == "error" then
		out.error_type, out.error, out.error_text = r:get_error();
	end
	local cmd = r:get_child("command", "http://jabber.org/protocol/commands");
	if cmd then
		out.status, out.sessionid, out.node = cmd.attr.status, cmd.attr.sessionid, cmd.attr.node;
		for note in cmd:childtags("note") do
			out.notes[#out.notes+1] = { type = note.attr.type; text = note:get_text() };
		end
		local acts = cmd:get_child("actions");
		if acts then
			for a in acts:childtags() do out.actions[#out.actions+1] = a.name; end
		end
		local x = cmd:get_child("x", "jabber:x:data");
		if x then
			out.form_type = x.attr.type;
			out.title = x:get_child_text("title");
			for f in x:childtags("field") do
				local values, options = {}, {};
				for v in f:childtags("value") do values[#values+1] = v:get_text(); end
				for o in f:childtags("option") do options[#options+1] = o:get_child_text("value"); end
				out.fields[#out.fields+1] = { var = f.attr.var; type = f.attr.type; label = f.attr.label;
					required = f:get_child("required") ~= nil; values = values; options = options };
			end
		end
	end
	return true, json.encode(out);
end

local shell_env = module:shared("/*/admin_shell/env");
shell_env.lab = {
	send = function (self, xml) -- luacheck: ignore 212/self
		return inject(xml);
	end;
	adhoc = function (self, ...) -- luacheck: ignore 212/self
		return adhoc(...);
	end;
	ping = function (self) -- luacheck: ignore 212/self
		return true, "lab alive in pid "..tostring(require "util.pposix".getpid());
	end;
};

function module.unload()
	shell_env.lab = nil;
end

-- (2) readiness file
if in_server then
	local ready_file = prosody.paths.data.."/lab-ready";
	local function write_ready()
		local f = io.open(ready_file, "w");
		if f then f:write(("%.6f\n"):format(now())); f:close(); end
		module:log("info", "lab: server-started t=%.6f", now());
	end
	module:hook_global("server-started", write_ready);
	-- Loaded into an already running server (e.g. "module:load('lab')" from the shell):
	-- server-started has fired already, so write the file now.
	if prosody.lab_started then write_ready(); end
	module:hook_global("server-started", function () prosody.lab_started = true; end);
end
