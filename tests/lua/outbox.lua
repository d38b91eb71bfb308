-- The engine's outbox as mod_server_trust drives it, through the real native module in
-- Prosody's Lua 5.4. Run by tests/it/lua_bridge.rs:
--   lua5.4 outbox.lua /path/to/libserver_trust_lua.so STORE_DIR
local lib, store = arg[1], arg[2];
local st = assert(package.loadlib(lib, "luaopen_server_trust_lua"))();

local function check(cond, ...)
	if not cond then error(table.concat({ "check failed:", ... }, " "), 2); end
end

local subscription_types = { subscribe = true, subscribed = true, unsubscribe = true, unsubscribed = true };
local wire = {}; -- what "Prosody" sent, in order: "type id"

-- mod_server_trust's perform: Prosody accepts a stanza at once, so each subscription stanza
-- is confirmed as it is sent.
local function perform(e, actions)
	for _, a in ipairs(assert(actions)) do
		if a.kind == "send" then
			wire[#wire + 1] = a.type .. " " .. tostring(a.id);
			if subscription_types[a.type] then assert(e:delivered(a.peer, a.type, a.id)); end
		end
	end
end

local function waiting(e)
	local out = {};
	for _, p in ipairs(e:outbox()) do
		for _, w in ipairs(p.waiting) do out[#out + 1] = p.peer .. " " .. w.type .. " " .. tostring(w.id); end
	end
	return table.concat(out, ",");
end

local e = assert(st.open(store, "capulet.lit", { watch = false }));
perform(e, e:inbound("montague.lit", "subscribe", "x1"));
local acts = assert(e:approve("montague.lit", "shell"));
check(waiting(e) == "montague.lit subscribed x1,montague.lit subscribe nil", "recorded with the approval:", waiting(e));
perform(e, acts);
check(table.concat(wire, ",") == "subscribed x1,available nil,subscribe nil", table.concat(wire, ","));
check(waiting(e) == "", "delivered: nothing waits", waiting(e));
check(#e:outbox_due() == 0);

-- Prosody bounces the subscribed: remote-server-not-found (an error presence from the peer).
acts = assert(e:bounced("montague.lit", "remote-server-not-found"));
check(acts[#acts].kind == "log" and acts[#acts].text:find("2 stanza%(s%) kept in the outbox"), acts[#acts].text);
check(waiting(e) == "montague.lit subscribed x1,montague.lit subscribe nil", "put back:", waiting(e));
check(#e:outbox_due() == 0, "not at once: with backoff");

-- A new engine (Prosody restarted) finds them in the store.
e = nil; collectgarbage();
e = assert(st.open(store, "capulet.lit", { watch = false }));
check(waiting(e) == "montague.lit subscribed x1,montague.lit subscribe nil", "durable:", waiting(e));
wire = {};
perform(e, e:outbox_due());
check(table.concat(wire, ",") == "subscribed x1,subscribe nil", "resent after the restart:", table.concat(wire, ","));
check(waiting(e) == "", waiting(e));

-- Bounced again: the next try comes after the backoff, then the resend is confirmed.
perform(e, e:bounced("montague.lit", "remote-server-not-found"));
wire = {};
local t0 = os.time();
while #wire == 0 do
	perform(e, e:outbox_due());
	check(os.time() - t0 < 10, "never resent");
	os.execute("sleep 0.1");
end
check(table.concat(wire, ",") == "subscribed x1,subscribe nil", table.concat(wire, ","));
check(waiting(e) == "", waiting(e));

-- A revoke supersedes what waits; a probe answer never waits.
perform(e, e:bounced("montague.lit", "remote-server-not-found"));
assert(e:revoke("montague.lit", "shell"));
check(waiting(e) == "montague.lit unsubscribe nil,montague.lit unsubscribed nil", waiting(e));
assert(e:inbound("stranger.example", "probe", "p1"));
check(not waiting(e):find("stranger"), waiting(e));
print("lua outbox OK");
