-- Checks mod_server_trust's Lua mirror of the trusted set inside a running Prosody, against
-- the engine itself. Run by tests/it/lua_bridge.rs through the admin shell:
--   >return dofile("tests/lua/mirror.lua")("capulet.lit", "montague.lit,Montague.LIT.,...")
-- Returns one line: "mirror OK checks=N trusted=a,b (groups: a=g1+g2)" or "mirror FAILED ...".
local modulemanager = require "core.modulemanager";

return function (host, probe_list)
	local env = modulemanager.get_module(host, "server_trust");
	if not env then return "mirror FAILED: server_trust is not loaded on "..host; end
	local registry = env.module:shared("/*/server_trust/engines");
	local engine = registry[host] and registry[host].engine;
	if not engine then return "mirror FAILED: no engine on "..host; end
	local is_trusted, view = env.is_trusted, env.trusted_peers;

	local failures, checks = {}, 0;
	local function fail(...) failures[#failures + 1] = table.concat({ ... }, " "); end
	local function show(v)
		if type(v) == "string" then return ("%q"):format(#v > 40 and v:sub(1, 40).."..." or v); end
		return tostring(v):gsub("0x%x+", "addr");
	end

	-- Peers: the caller's spellings plus input that must never be trusted.
	local peers = {};
	for p in probe_list:gmatch("[^,]+") do peers[#peers + 1] = p; end
	for _, p in ipairs({ "", "\255\254", "montague.lit\0", "a@montague.lit", "montague.lit/r",
			string.rep("a", 2000), "xn--", "..", "-x-.lit" }) do
		peers[#peers + 1] = p;
	end
	local scopes = { "incidents", "muc-limits", "", "\255", "INCIDENTS" };

	-- Each spelling twice: the first call fills the spelling cache, the second reads it.
	for _ = 1, 2 do
		for _, p in ipairs(peers) do
			for i = 0, #scopes do
				local scope = scopes[i]; -- i = 0: no scope
				local ok, want = pcall(engine.is_trusted, engine, p, scope);
				want = ok and want == true;
				local got = is_trusted(p, scope);
				checks = checks + 1;
				if got ~= want then fail("is_trusted(", show(p), ",", show(scope), ") =", show(got), "engine:", show(want)); end
			end
			-- The read-only view answers for the normal form (what the mirror keys on).
			local plain = view[p] == true;
			if plain and not is_trusted(p) then fail("trusted_peers[", show(p), "] but not is_trusted"); end
		end
	end

	-- Odd input: never trusted, never raises.
	local trusted_one;
	for p in pairs(view) do trusted_one = p; break; end
	for _, args in ipairs({ { nil }, { 42 }, { {} }, { true }, { is_trusted }, { 0/0 },
			{ trusted_one, {} }, { trusted_one, 1 }, { trusted_one, false }, { trusted_one, true },
			{ { trusted_one } } }) do
		local ok, r = pcall(is_trusted, args[1], args[2]);
		checks = checks + 1;
		if not ok or r ~= false then fail("odd input", show(args[1]), show(args[2]), "->", show(ok), show(r)); end
	end

	-- The view cannot be written.
	local ok = pcall(function () view["evil.example"] = true; end);
	if ok then fail("trusted_peers accepted a write"); end
	ok = pcall(rawset, view, "evil.example", true);
	if ok then fail("rawset on trusted_peers worked"); end
	if getmetatable(view) ~= false then fail("getmetatable(trusted_peers) is not hidden"); end
	if view["evil.example"] ~= nil or is_trusted("evil.example") then fail("a write reached the mirror"); end

	local names = {};
	for p, v in pairs(view) do
		if v ~= true then fail("trusted_peers[", show(p), "] =", show(v)); end
		names[#names + 1] = p;
	end
	table.sort(names);
	-- Groups as the engine has them, for the caller to compare.
	local groups = {};
	for _, e in ipairs(engine:roster()) do
		if e.trusted and #e.groups > 0 then groups[#groups + 1] = e.peer.."="..table.concat(e.groups, "+"); end
	end
	if #failures > 0 then return "mirror FAILED: "..table.concat(failures, "; "); end
	return ("mirror OK checks=%d trusted=%s (groups: %s)"):format(checks, table.concat(names, ","), table.concat(groups, ","));
end
