-- mod_server_trust_fedbench.lua -- BENCHMARK-ONLY Prosody 0.12 module (driven by benches/prosody.rs,
-- PROSODY_BENCH_ONLY=federation). Never deploy it: it swallows and forges stanzas on request.
--
-- Measures what buddies-only federation (server_trust_federation = "buddies", mod_server_trust's
-- hooks at priority 2000 on message/presence/iq and route/remote) costs per stanza. Loaded on
-- both lab hosts, in a lab with the policy and in one without it:
--     prosodyctl --config CFG shell 'module:load("server_trust_fedbench", "montague.lit")'
-- Its hooks run at priority 1500: after mod_server_trust's federation hooks (2000), before the
-- lab's recorder (1000), which would otherwise open and append to a file for every stanza.
--   * message/bare, id "fb-…" or "fbm-…": counted (first and last arrival, util.time.now) and
--     swallowed (no delivery, no offline storage);
--   * route/remote, id "fb-…": written to the host's established s2s stream as mod_s2s
--     would (the recorder skipped); id "fbm-…": swallowed (the in-process measurement).
-- Shell commands (mod_admin_shell env):
--   server_trust_fedbench:send(n, to)   posts n chat messages romeo@<this host> -> to (a JID on
--                                       the other server) with ids fb-1 … fb-n; OK line: t0=…
--   server_trust_fedbench:count()       OK line: got=… first=… last=…
--   server_trust_fedbench:reset()       sets the counter back to nothing
--   server_trust_fedbench:micro(n, from, peer)
--       CPU ns per stanza (os.clock) of the two hook chains a stanza from/to a buddy runs
--       through in this server, with the events fired as Prosody fires them:
--       in  = fire_event("message/bare") of a message from `from` (origin an s2sin session of
--             `peer`), out = fire_event("route/remote") of a message to a user at `peer`;
--       and an empty loop. OK line: in=… out=… empty=…

local st = require "util.stanza";
local now = require "util.time".now;
local clock = os.clock;
local s_sub, tonumber = string.sub, tonumber;

local host = module.host;
local count, first, last = 0, nil, nil;

local function ours(stanza)
	local id = stanza.attr.id;
	if not id then return nil; end
	if s_sub(id, 1, 3) == "fb-" then return "e2e"; end
	if s_sub(id, 1, 4) == "fbm-" then return "micro"; end
	return nil;
end

module:hook("message/bare", function (event)
	local kind = ours(event.stanza);
	if not kind then return; end
	if kind == "e2e" then
		local t = now();
		count = count + 1;
		first = first or t;
		last = t;
	end
	return true;
end, 1500);

module:hook("route/remote", function (event)
	local kind = ours(event.stanza);
	if not kind then return; end
	if kind == "e2e" then
		local out = prosody.hosts[host].s2sout[event.to_host];
		if not out or out.type ~= "s2sout" then return; end -- not up: mod_s2s's own path
		out.sends2s(event.stanza);
	end
	return true;
end, 1500);

local shell = {};

function shell:send(n, to)
	n = math.floor(tonumber(n) or 0);
	if n < 1 or type(to) ~= "string" then return false, "usage: server_trust_fedbench:send(n, to)"; end
	local origin = prosody.hosts[host];
	local from = "romeo@"..host;
	local t0 = now();
	for i = 1, n do
		prosody.core_post_stanza(origin, st.message({ from = from, to = to, type = "chat", id = "fb-"..i })
			:text_tag("body", "x"));
	end
	return true, ("fedbench sent n=%d t0=%.6f posted=%.6f"):format(n, t0, now());
end

function shell:count()
	return true, ("fedbench count got=%d first=%.6f last=%.6f"):format(count, first or 0, last or 0);
end

function shell:reset()
	count, first, last = 0, nil, nil;
	return true, "fedbench reset";
end

function shell:micro(n, from, peer)
	n = math.floor(tonumber(n) or 0);
	if n < 1 or type(from) ~= "string" or type(peer) ~= "string" then
		return false, "usage: server_trust_fedbench:micro(n, from, peer)";
	end
	local events = prosody.hosts[host].events;
	local session = { type = "s2sin", from_host = peer, to_host = host, host = host };
	local to_us = st.message({ from = from, to = "juliet@"..host, type = "chat", id = "fbm-in" })
		:text_tag("body", "x");
	local to_peer = st.message({ from = "juliet@"..host, to = from, type = "chat", id = "fbm-out" })
		:text_tag("body", "x");
	local ev_in = { origin = session, stanza = to_us };
	local ev_out = { origin = prosody.hosts[host], stanza = to_peer, from_host = host, to_host = peer };
	local t0;
	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do end
	local empty = clock() - t0;
	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do events.fire_event("message/bare", ev_in); end
	local t_in = clock() - t0;
	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do events.fire_event("route/remote", ev_out); end
	local t_out = clock() - t0;
	return true, ("fedbench micro n=%d in=%.3f out=%.3f empty=%.3f")
		:format(n, t_in * 1e9 / n, t_out * 1e9 / n, empty * 1e9 / n);
end

module:shared("/*/admin_shell/env").server_trust_fedbench = shell;

function module.unload()
	module:shared("/*/admin_shell/env").server_trust_fedbench = nil;
end
