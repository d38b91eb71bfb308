-- mod_server_trust_bench.lua -- BENCHMARK-ONLY Prosody 0.12 module (driven by benches/prosody.rs).
-- Never deploy it: it blocks the server for seconds on request.
--
-- Loaded on a host that runs mod_server_trust (plugin_paths must include <repo>/benches/lua):
--     prosodyctl --config CFG shell 'module:load("server_trust_bench", "capulet.lit")'
-- then
--     prosodyctl --config CFG shell 'server_trust_bench:run(1e6, "peer.example")'
-- times N iterations each of, on this host, in CPU time (os.clock()):
--   empty  an empty loop (reported, NOT subtracted)
--   (a)    is_trusted(peer)    the public check (the module's Lua mirror), module:depends("server_trust").is_trusted hoisted
--   (b)    t[peer]             a plain Lua table lookup (floor)
--   (c)    module:fire_event("peer-is-subscribed", peer)   the Metronome-style event, answered
--                                                           by mod_server_trust's hook
--   (d)    trusted_peers[peer]  the module's read-only view of its mirror (a userdata whose
--                               __index is the mirror table), hoisted like (a)
--   (e)    f(peer)              an empty Lua function: the floor of any call, (a) included
-- and prints ns/call. The OK line is machine-readable:
--   OK: bench n=… peer=… empty=… a=… b=… c=… d=… e=… ra=… rb=… rc=… rd=…   (ns/call; r* = result of one call)

local clock = os.clock;
local tostring, tonumber = tostring, tonumber;

local server_trust = module:depends("server_trust");
local is_trusted = server_trust.is_trusted;
local trusted_peers = server_trust.trusted_peers; -- nil with an older mod_server_trust

local function ns(seconds, n) return seconds * 1e9 / n; end

local function run(n, peer)
	n = math.floor(tonumber(n) or 1e6);
	if n < 1 then return nil, "n must be >= 1"; end
	if type(peer) ~= "string" then return nil, "usage: server_trust_bench:run(n, peer)"; end

	local t = { [peer] = is_trusted(peer) or nil };
	local r, t0;

	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do end
	local empty = clock() - t0;

	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do r = is_trusted(peer); end
	local a = clock() - t0;
	local ra = r;

	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do r = t[peer]; end
	local b = clock() - t0;
	local rb = r;

	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do r = module:fire_event("peer-is-subscribed", peer); end
	local c = clock() - t0;
	local rc = r;

	local d, rd = 0/0, nil;
	if trusted_peers ~= nil then
		local view = trusted_peers;
		collectgarbage("collect");
		t0 = clock();
		for _ = 1, n do r = view[peer]; end
		d = clock() - t0;
		rd = r;
	end

	local function f(p) return p; end
	collectgarbage("collect");
	t0 = clock();
	for _ = 1, n do r = f(peer); end
	local e = clock() - t0;

	return {
		n = n, peer = peer,
		empty = ns(empty, n), a = ns(a, n), b = ns(b, n), c = ns(c, n), d = ns(d, n), e = ns(e, n),
		ra = ra, rb = rb, rc = rc, rd = rd,
	};
end

local shell = {};
function shell:run(n, peer)
	local res, err = run(n, peer);
	if not res then return false, err; end
	local print = self.session.print;
	print(("%s on %s, n=%d, peer=%s (os.clock CPU time; empty loop not subtracted)")
		:format("server_trust_bench", module.host, res.n, res.peer));
	print(("  empty loop                                   %9.1f ns/iter"):format(res.empty));
	print(("  (a) is_trusted(peer) [mod_server_trust]      %9.1f ns/call -> %s"):format(res.a, tostring(res.ra)));
	print(("  (b) t[peer] [Lua table]                      %9.1f ns/call -> %s"):format(res.b, tostring(res.rb)));
	print(("  (c) fire_event('peer-is-subscribed', peer)   %9.1f ns/call -> %s"):format(res.c, tostring(res.rc)));
	print(("  (d) trusted_peers[peer] [read-only view]     %9.1f ns/call -> %s"):format(res.d, tostring(res.rd)));
	print(("  (e) f(peer) [empty Lua function]             %9.1f ns/call"):format(res.e));
	return true, ("bench n=%d peer=%s empty=%.3f a=%.3f b=%.3f c=%.3f d=%.3f e=%.3f ra=%s rb=%s rc=%s rd=%s")
		:format(res.n, res.peer, res.empty, res.a, res.b, res.c, res.d, res.e, tostring(res.ra), tostring(res.rb),
			tostring(res.rc), tostring(res.rd));
end

module:shared("/*/admin_shell/env").server_trust_bench = shell;

function module.unload()
	module:shared("/*/admin_shell/env").server_trust_bench = nil;
end
