-- mod_server_trust_bench.lua -- BENCHMARK-ONLY Prosody 0.12 module (driven by benches/prosody.rs).
-- Never deploy it: it blocks the server for seconds on request.
--
-- Loaded on a host that runs mod_server_trust (plugin_paths must include <repo>/benches/lua):
--     prosodyctl --config CFG shell 'module:load("server_trust_bench", "capulet.lit")'
-- then
--     prosodyctl --config CFG shell 'server_trust_bench:run(1e6, "peer.example")'
-- times N iterations each of, on this host, in CPU time (os.clock()):
--   empty  an empty loop (reported, NOT subtracted)
--   (a)    is_trusted(peer)    the Rust check, module:depends("server_trust").is_trusted hoisted
--   (b)    t[peer]             a plain Lua table lookup (floor)
--   (c)    module:fire_event("peer-is-subscribed", peer)   the Metronome-style event, answered
--                                                           by mod_server_trust's hook
-- and prints ns/call. The OK line is machine-readable:
--   OK: bench n=… peer=… empty=… a=… b=… c=… ra=… rb=… rc=…   (ns/call; r* = result of one call)

local clock = os.clock;
local tostring, tonumber = tostring, tonumber;

local server_trust = module:depends("server_trust");
local is_trusted = server_trust.is_trusted;

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

	return {
		n = n, peer = peer,
		empty = ns(empty, n), a = ns(a, n), b = ns(b, n), c = ns(c, n),
		ra = ra, rb = rb, rc = rc,
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
	print(("  (a) is_trusted(peer) [Rust]                  %9.1f ns/call -> %s"):format(res.a, tostring(res.ra)));
	print(("  (b) t[peer] [Lua table]                      %9.1f ns/call -> %s"):format(res.b, tostring(res.rb)));
	print(("  (c) fire_event('peer-is-subscribed', peer)   %9.1f ns/call -> %s"):format(res.c, tostring(res.rc)));
	return true, ("bench n=%d peer=%s empty=%.3f a=%.3f b=%.3f c=%.3f ra=%s rb=%s rc=%s")
		:format(res.n, res.peer, res.empty, res.a, res.b, res.c, tostring(res.ra), tostring(res.rb), tostring(res.rc));
end

module:shared("/*/admin_shell/env").server_trust_bench = shell;

function module.unload()
	module:shared("/*/admin_shell/env").server_trust_bench = nil;
end
