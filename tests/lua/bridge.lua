-- The Lua bridge as Prosody's Lua 5.4 sees it. Run by tests/it/lua_bridge.rs:
--   lua5.4 bridge.lua /path/to/libserver_trust_lua.so STORE_DIR
local lib, store = arg[1], arg[2];
local open = assert(package.loadlib(lib, "luaopen_server_trust_lua"));
local st = open();

local function check(cond, ...)
	if not cond then error(table.concat({ "check failed:", ... }, " "), 2); end
end

check(st.validate("Capulet.LIT.") == "capulet.lit", "normalises");
local none, why = st.validate("alice@capulet.lit");
check(none == nil and why:find("localpart"), "user JIDs are refused with a reason");

local bad, err = st.open(store, "alice@capulet.lit");
check(bad == nil and err:find("invalid server domain"), "open refuses a user JID as host");

local e = assert(st.open(store, "capulet.lit", { watch = false, max_pending = 2 }));
check(e:host() == "capulet.lit");

-- Engine errors come back as nil, message.
local r, msg = e:inbound("montague.lit", "bogus", nil);
check(r == nil and msg:find("not a presence type"), "bad type", tostring(msg));
r, msg = e:approve("montague.lit");
check(r == nil and msg:find("no pending request"), "approve without request", tostring(msg));
check(false == pcall(e.request, e, "montague.lit", "nobody"), "unknown actor raises");

-- Wrong argument types raise Lua errors (catchable), never crash the host.
local ok, perr = pcall(e.is_trusted, e, nil);
check(not ok and tostring(perr):find("is_trusted"), "nil peer raises", tostring(perr));
ok, perr = pcall(e.is_trusted, {}, "x");
check(not ok, "wrong self raises");
ok = pcall(e.set_groups, e, "montague.lit", "not a table");
check(not ok, "groups must be a table");

-- A request, as actions.
local acts = assert(e:inbound("montague.lit", "subscribe", "x1"));
check(#acts == 3 and acts[1].kind == "notify" and acts[1].peer == "montague.lit", "prompt");
check(acts[1].text:find("approve montague.lit"), "prompt says how to approve");
-- Then the evidence queries, as tables the module turns into iqs.
check(acts[2].kind == "query" and acts[2].peer == "montague.lit"
	and acts[2].ns == "http://jabber.org/protocol/disco#info" and acts[3].ns == "jabber:iq:version", "queries");
check(e:state("montague.lit") == "none+pending-in");
local pending, errors = e:pending();
check(#pending == 1 and pending[1].peer == "montague.lit" and pending[1].decision == "pending" and #errors == 0);
check(pending[1].summary[1] == "authenticated by: not known", "summary", tostring(pending[1].summary[1]));
-- A reply comes back as XML; a timeout as nil. The last one brings the notice.
check(#assert(e:answer("montague.lit", acts[3].ns,
	"<iq type='result'><query xmlns='jabber:iq:version'><name>Prosody</name></query></iq>")) == 0, "first answer");
acts = assert(e:answer("montague.lit", acts[2].ns, nil));
check(#acts == 1 and acts[1].kind == "notify" and acts[1].text:find("software: Prosody"), "evidence notice");
check(assert(e:session("montague.lit", "dialback")) == true, "session");
local sok, serr = e:session("montague.lit", "trust-me");
check(sok == nil and serr:find("authentication method"), "unknown auth method", tostring(serr));
check(st.host_stanza("iq", "get", "jabber:iq:version") and not st.host_stanza("message", "chat"), "host_stanza");
check(st.answer_timeout == 10, "answer_timeout");

acts = assert(e:approve("montague.lit", "shell"));
local sent, ids, trust = {}, {}, nil;
for _, a in ipairs(acts) do
	if a.kind == "send" then sent[#sent + 1] = a.type; ids[a.type] = a.id; end
	if a.kind == "trust" then trust = a; end
end
check(table.concat(sent, ",") == "subscribed,available,subscribe", table.concat(sent, ","));
check(ids.subscribed == "x1", "the approval echoes the request id");
check(trust and trust.peer == "montague.lit" and trust.trusted == true, "trust change reported");
check(e:is_trusted("montague.lit") and e:is_trusted("MONTAGUE.lit") and not e:is_trusted("verona.lit"));
check(not e:is_trusted("montague.lit", "incidents"));
check(e:set_groups("montague.lit", { "incidents" }) == true);
check(e:is_trusted("montague.lit", "incidents"));
local roster = e:roster();
check(#roster == 1 and roster[1].state == "from+pending-out" and roster[1].trusted and roster[1].groups[1] == "incidents");

-- What a Lua mirror of the trusted set is built from: the generation, the bulk copy, and
-- the changes since the last copy (spellings -> group sets, false when trust went).
local gen = e:generation();
check(math.type(gen) == "integer", "generation is an integer");
local all = e:trusted();
check(#all["montague.lit"] == 1 and all["montague.lit"][1] == "incidents" and next(all, next(all)) == nil, "bulk copy");
local m = e:mirror();
local ch = m:changes();
check(ch["montague.lit"] and ch["montague.lit"].incidents == true and next(ch, next(ch)) == nil, "first changes: all");
check(m:changes() == nil, "nothing moved: nil");
check(e:set_groups("montague.lit", { "incidents", "muc-limits" }) == true);
check(e:generation() > gen, "set_groups moves the generation");
ch = m:changes();
check(ch["montague.lit"].incidents and ch["montague.lit"]["muc-limits"], "changed groups come again");
check(m:changes() == nil);
m:reset();
check(m:changes()["montague.lit"], "after reset: the whole set again");
assert(e:revoke("montague.lit", "shell"));
ch = m:changes();
check(ch["montague.lit"] == false and not e:is_trusted("montague.lit"), "revoked: false");

-- normalise: the normal form or nil, never an error.
check(st.normalise("Capulet.LIT.") == "capulet.lit" and st.normalise("xn--bcher-kva.de") == "bücher.de");
for _, odd in ipairs({ "alice@capulet.lit", "\255\254", "", 42, {}, true }) do
	local okn, n = pcall(st.normalise, odd);
	check(okn and n == nil, "normalise of odd input", tostring(odd));
end
check(pcall(st.normalise) and st.normalise() == nil, "normalise()");

-- read_only: a userdata that reads through to a table and cannot be written.
local inner = { a = true };
local view = st.read_only({ __index = inner, __newindex = function () error("read-only"); end, __metatable = false });
check(type(view) == "userdata" and view.a == true and view.b == nil, "reads through");
check(not pcall(function () view.b = true; end) and not pcall(rawset, view, "b", true), "cannot be written");
check(getmetatable(view) == false and inner.b == nil);
inner.c = true;
check(view.c == true, "sees later changes");
check(st.read_only("x") == nil and st.read_only() == nil, "nil without a table");

-- The pending cap: a third distinct request is dropped and logged.
assert(e:inbound("s1.lit", "subscribe"));
acts = assert(e:inbound("s2.lit", "subscribe"));
acts = assert(e:inbound("s3.lit", "subscribe"));
check(acts[1] and acts[1].kind == "log" and acts[1].level == "warn" and acts[1].text:find("already pending"), "cap");
check(e:state("s3.lit") == "none");
print("lua bridge OK");
