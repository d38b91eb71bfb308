//! Lua 5.4 C module `server_trust_lua`: the engine as seen from Prosody.
//!
//! Built with mlua's `module` feature, so it links against the host's Lua (Prosody's
//! `lua5.4`) and never brings a second runtime. Engine errors come back Lua-style as
//! `nil, message`; a Rust panic becomes a Lua error that Prosody logs, never a crash.
//! Load with `package.loadlib(path, "luaopen_server_trust_lua")`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use mlua::prelude::*;
use server_trust::{Action, Actor, Config, Domain, Engine};

/// An open engine, shared by reference counting so Lua can copy the handle freely.
struct LuaEngine(Arc<Engine>);

/// Lua convention: the value on success, `nil, message` for an engine error.
fn lua_result<T>(
    lua: &Lua,
    r: server_trust::Result<T>,
    convert: impl FnOnce(&Lua, T) -> LuaResult<LuaValue>,
) -> LuaResult<LuaMultiValue> {
    match r {
        Ok(v) => Ok(LuaMultiValue::from_iter([convert(lua, v)?])),
        Err(e) => Ok(LuaMultiValue::from_iter([LuaValue::Nil, e.to_string().into_lua(lua)?])),
    }
}

fn string(lua: &Lua, s: &str) -> LuaResult<LuaValue> {
    s.into_lua(lua)
}

/// Actions as Lua tables, through serde: the same fields and names as the JSON form
/// (`kind`, `peer`, `type`, `id`, `text`, `level`, `trusted`); absent values are nil.
fn actions_table(lua: &Lua, actions: Vec<Action>) -> LuaResult<LuaValue> {
    lua.to_value_with(&actions, LuaSerializeOptions::new().serialize_none_to_null(false))
}

fn actor(name: Option<String>) -> LuaResult<Actor> {
    name.as_deref().unwrap_or("shell").parse().map_err(LuaError::external)
}

fn secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl LuaUserData for LuaEngine {
    fn add_methods<M: LuaUserDataMethods<Self>>(m: &mut M) {
        m.add_method("is_trusted", |_, this, (peer, scope): (LuaString, Option<LuaString>)| {
            let scope = scope.as_ref().map(|s| s.to_str()).transpose()?;
            Ok(this.0.is_trusted(&peer.to_str()?, scope.as_deref()))
        });
        // federates(peer, host_presence): the federation policy for one s2s stanza; never
        // raises (a name that is not UTF-8 is refused).
        m.add_method("federates", |_, this, (peer, host_presence): (LuaString, Option<bool>)| {
            Ok(peer.to_str().is_ok_and(|p| this.0.federates_with(&p, host_presence.unwrap_or(false))))
        });
        // session(peer, auth, cert_pem): the stream a subscribe came by (see Engine::session).
        m.add_method("session", |lua, this, (peer, auth, cert): (String, String, Option<LuaString>)| {
            let cert = cert.as_ref().map(|c| c.as_bytes());
            let r = this.0.session(&peer, &auth, cert.as_deref());
            lua_result(lua, r, |_, ()| Ok(LuaValue::Boolean(true)))
        });
        // answer(peer, ns, reply_xml | nil): the reply to a "query" action (see Engine::answer).
        m.add_method("answer", |lua, this, (peer, ns, reply): (String, String, Option<String>)| {
            lua_result(lua, this.0.answer(&peer, &ns, reply.as_deref()), actions_table)
        });
        m.add_method("generation", |_, this, ()| Ok(this.0.generation()));
        m.add_method("trusted", |lua, this, ()| {
            let list = lua.create_table()?;
            for (peer, e) in this.0.roster() {
                if e.state.from() {
                    list.raw_set(peer.as_str(), e.groups)?;
                }
            }
            Ok(list)
        });
        m.add_method("mirror", |_, this, ()| {
            Ok(LuaMirror { engine: this.0.clone(), generation: None, peers: HashMap::new() })
        });
        m.add_method("state", |lua, this, peer: String| {
            lua_result(lua, this.0.state(&peer), |lua, s| string(lua, s.as_str()))
        });
        m.add_method("inbound", |lua, this, (from, ty, id): (String, Option<String>, Option<String>)| {
            let r = ty.as_deref().unwrap_or("").parse().and_then(|k| this.0.inbound(&from, k, id.as_deref()));
            lua_result(lua, r, actions_table)
        });
        macro_rules! act {
            ($name:literal, $method:ident) => {
                m.add_method($name, |lua, this, (peer, who): (String, Option<String>)| {
                    let r = this.0.$method(&peer, actor(who)?);
                    lua_result(lua, r, actions_table)
                });
            };
        }
        act!("request", request);
        act!("approve", approve);
        act!("deny", deny);
        act!("revoke", revoke);
        m.add_method("poll", |lua, this, ()| lua_result(lua, this.0.poll(), actions_table));
        // The outbox (see `server_trust::engine::outbox`): Prosody accepts a stanza at once,
        // so the module confirms each subscription stanza as it sends it, sends what
        // `outbox_due` gives on its timer, and reports bounces.
        m.add_method("delivered", |lua, this, (peer, ty, id): (String, String, Option<String>)| {
            let r = Domain::new(&peer).and_then(|p| {
                let kind = ty.parse()?;
                this.0.delivered(&p, kind, id.as_deref())
            });
            lua_result(lua, r, actions_table)
        });
        m.add_method("bounced", |lua, this, (peer, condition): (String, Option<String>)| {
            lua_result(lua, this.0.bounced(&peer, condition.as_deref().unwrap_or("")), actions_table)
        });
        m.add_method("outbox_due", |lua, this, ()| actions_table(lua, this.0.outbox_due()));
        m.add_method("outbox", |lua, this, ()| {
            let list = lua.create_table()?;
            for (peer, waiting) in this.0.outbox().iter() {
                let t = lua.create_table()?;
                t.set("peer", peer.as_str())?;
                t.set(
                    "waiting",
                    lua.to_value_with(waiting, LuaSerializeOptions::new().serialize_none_to_null(false))?,
                )?;
                list.push(t)?;
            }
            Ok(list)
        });
        m.add_method("startup", |lua, this, ()| actions_table(lua, this.0.startup_actions()));
        m.add_method("shutdown", |lua, this, ()| actions_table(lua, this.0.shutdown_actions()));
        m.add_method(
            "set_groups",
            |lua, this, (peer, groups, who): (String, Vec<String>, Option<String>)| {
                lua_result(lua, this.0.set_groups(&peer, groups, actor(who)?), |_, ()| {
                    Ok(LuaValue::Boolean(true))
                })
            },
        );
        m.add_method("roster", |lua, this, ()| {
            let list = lua.create_table()?;
            for (peer, e) in this.0.roster() {
                let t = lua.create_table()?;
                t.set("peer", peer.as_str())?;
                t.set("state", e.state.as_str())?;
                t.set("trusted", e.state.from())?;
                t.set("groups", e.groups.clone())?;
                t.set("note", e.note.clone())?;
                t.set("approved_at", e.approved_at.clone())?;
                t.set("pre_approved", e.pre_approved)?;
                if let Some(p) = this.0.presence(peer.as_str()) {
                    t.set("available", p.available)?;
                    t.set("last_seen", secs(p.last_seen))?;
                    t.set("since", secs(p.since))?;
                }
                list.push(t)?;
            }
            Ok(list)
        });
        m.add_method("pending", |lua, this, ()| {
            let (reqs, bad) = this.0.store().list_pending();
            let list = lua.create_table()?;
            for r in reqs {
                let t = lua.create_table()?;
                t.set("summary", r.summary_lines())?;
                t.set("peer", r.peer.as_str())?;
                t.set("first_seen", r.first_seen)?;
                t.set("last_seen", r.last_seen)?;
                t.set("times_seen", r.times_seen)?;
                t.set("decision", r.decision.as_str())?;
                t.set("file", this.0.store().pending_path(&r.peer).display().to_string())?;
                list.push(t)?;
            }
            let errors: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
            Ok((list, errors))
        });
        m.add_method("stats", |lua, this, ()| lua.to_value(&this.0.stats()));
        m.add_method("wakeup_fd", |_, this, ()| Ok(this.0.wakeup_fd()));
        m.add_method("host", |_, this, ()| Ok(this.0.host().to_string()));
        m.add_method("store_dir", |_, this, ()| Ok(this.0.store().dir().display().to_string()));
    }
}

/// The trusted set as the Lua side mirrors it: every spelling a plain table lookup should
/// find (the normalised name, and the A-label form of an internationalised one) with the
/// peer's groups. `changes()` answers what moved since the last call, so the Lua side does
/// work in proportion to the changes, not to the roster.
struct LuaMirror {
    engine: Arc<Engine>,
    /// The engine generation `peers` was taken at; None before the first copy.
    generation: Option<u64>,
    peers: HashMap<String, Vec<String>>,
}

impl LuaMirror {
    /// The trusted spellings now. The generation is read first: a change published while
    /// the roster is copied moves it again, so the next call copies again (never misses one).
    fn current(&self) -> (u64, HashMap<String, Vec<String>>) {
        let generation = self.engine.generation();
        let mut now = HashMap::with_capacity(self.peers.len());
        for (peer, e) in self.engine.roster() {
            if !e.state.from() {
                continue;
            }
            for spelling in spellings(&peer) {
                now.insert(spelling, e.groups.clone());
            }
        }
        (generation, now)
    }
}

/// The spellings a plain lookup should find `peer` under: its normal form and, for an
/// internationalised name, its A-label.
fn spellings(peer: &Domain) -> Vec<String> {
    match peer.ascii() {
        Cow::Owned(ascii) => vec![peer.as_str().to_owned(), ascii],
        Cow::Borrowed(_) => vec![peer.as_str().to_owned()],
    }
}

/// A set table `{ [group] = true, ... }`.
fn group_set(lua: &Lua, groups: &[String]) -> LuaResult<LuaTable> {
    let set = lua.create_table_with_capacity(0, groups.len())?;
    for g in groups {
        set.raw_set(g.as_str(), true)?;
    }
    Ok(set)
}

impl LuaUserData for LuaMirror {
    fn add_methods<M: LuaUserDataMethods<Self>>(m: &mut M) {
        // nil when nothing readers see moved; else `{ [spelling] = set of groups | false }`:
        // a set for a spelling now trusted (new, or its groups changed), false for one that
        // no longer is. The first call gives the whole set.
        m.add_method_mut("changes", |lua, this, ()| {
            if this.generation == Some(this.engine.generation()) {
                return Ok(LuaValue::Nil);
            }
            let changes = lua.create_table()?;
            // Only the peers that changed since our copy, when the engine still knows them.
            if let Some(since) = this.generation
                && let Some((generation, mut peers)) = this.engine.changed_since(since)
            {
                // A peer changed in several generations is looked at once.
                peers.sort();
                peers.dedup();
                let mut updates = Vec::new();
                for peer in &peers {
                    let entry = this.engine.entry(peer.as_str()).ok().flatten();
                    let groups = entry.filter(|e| e.state.from()).map(|e| e.groups);
                    for spelling in spellings(peer) {
                        match &groups {
                            Some(g) if this.peers.get(&spelling) != Some(g) => {
                                changes.raw_set(spelling.as_str(), group_set(lua, g)?)?;
                                updates.push((spelling, Some(g.clone())));
                            }
                            None if this.peers.contains_key(&spelling) => {
                                changes.raw_set(spelling.as_str(), false)?;
                                updates.push((spelling, None));
                            }
                            _ => {}
                        }
                    }
                }
                // Only now: a failure above leaves the last copy, and the next call tries again.
                for (spelling, groups) in updates {
                    match groups {
                        Some(g) => this.peers.insert(spelling, g),
                        None => this.peers.remove(&spelling),
                    };
                }
                this.generation = Some(generation);
                return Ok(LuaValue::Table(changes));
            }
            let (generation, now) = this.current();
            for (peer, groups) in &now {
                if this.peers.get(peer) != Some(groups) {
                    changes.raw_set(peer.as_str(), group_set(lua, groups)?)?;
                }
            }
            for peer in this.peers.keys() {
                if !now.contains_key(peer) {
                    changes.raw_set(peer.as_str(), false)?;
                }
            }
            // Only now: a failure above leaves the last copy, and the next call tries again.
            this.peers = now;
            this.generation = Some(generation);
            Ok(LuaValue::Table(changes))
        });
        // Forget what was handed out: the next `changes()` gives the whole set again.
        m.add_method_mut("reset", |_, this, ()| {
            this.generation = None;
            this.peers.clear();
            Ok(())
        });
    }
}

/// `read_only(metatable)`: a new empty userdata with its own metatable, for a read-only view
/// of a table (`__index = t`): unlike a proxy table it cannot be written with `rawset`, and
/// `__metatable` hides the table from `getmetatable`. nil when not given a table.
unsafe extern "C-unwind" fn read_only(state: *mut mlua::ffi::lua_State) -> c_int {
    use mlua::ffi;
    // SAFETY: a plain Lua C function: only stack operations on its own frame. The only
    // error these can raise is out of memory (Lua's longjmp), and no Rust value with a
    // destructor lives in this frame.
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
            ffi::lua_pushnil(state);
            return 1;
        }
        ffi::lua_newuserdatauv(state, 0, 0);
        ffi::lua_pushvalue(state, 1);
        ffi::lua_setmetatable(state, -2);
        1
    }
}

/// `normalise(s)`: the normalised server domain, or nil (anything else, non-UTF-8 and
/// non-strings included; never raises, allocates no message).
fn normalise(lua: &Lua, s: LuaValue) -> LuaResult<LuaValue> {
    let LuaValue::String(s) = s else { return Ok(LuaValue::Nil) };
    let Ok(s) = s.to_str() else { return Ok(LuaValue::Nil) };
    match server_trust::Domain::new(&s) {
        Ok(d) => string(lua, d.as_str()),
        Err(_) => Ok(LuaValue::Nil),
    }
}

/// Reads one option the admin set (absent keys keep the engine's default).
fn opt<T: FromLua>(o: &LuaTable, name: &'static str) -> Result<Option<T>, server_trust::Error> {
    o.get::<Option<T>>(name).map_err(|e| server_trust::Error::InvalidOption { name, reason: e.to_string() })
}

/// The engine settings from the options an admin set; defaults live in Rust only.
fn config(opts: Option<LuaTable>) -> server_trust::Result<Config> {
    let mut c = Config::default();
    let Some(o) = opts else { return Ok(c) };
    if let Some(v) = opt(&o, "reciprocate")? {
        c.reciprocate = v;
    }
    if let Some(v) = opt(&o, "preapprove_on_request")? {
        c.preapprove_on_request = v;
    }
    if let Some(v) = opt::<f64>(&o, "max_pending")? {
        c.max_pending = Config::max_pending_from(v)?;
    }
    if let Some(v) = opt::<f64>(&o, "max_pending_per_site")? {
        c.max_pending_per_site = Config::whole_number("max_pending_per_site", v, 1, 1_000_000)?;
    }
    if let Some(v) = opt::<f64>(&o, "notify_burst")? {
        c.notify_burst = Config::whole_number("notify_burst", v, 0, 1_000_000)?;
    }
    if let Some(v) = opt::<f64>(&o, "repeat_window")? {
        c.repeat_window = Config::repeat_window_secs(v)?;
    }
    if let Some(v) = opt::<f64>(&o, "site_requests_per_minute")? {
        c.site_requests_per_minute = Config::site_requests_per_minute_from(v)?;
    }
    if let Some(v) = opt::<f64>(&o, "pending_expiry_days")? {
        c.pending_max_age = Config::pending_expiry_days(v)?;
    }
    if let Some(v) = opt(&o, "watch")? {
        c.watch = v;
    }
    if let Some(v) = opt(&o, "adhoc")? {
        c.adhoc = v;
    }
    let mode = opt::<String>(&o, "federation")?;
    let group = opt::<String>(&o, "federation_group")?;
    c.federation = server_trust::Federation::from_options(mode.as_deref(), group.as_deref())?;
    Ok(c)
}

/// `open(store_root, host, options)`; options (each optional): reciprocate,
/// preapprove_on_request, max_pending, max_pending_per_site, notify_burst, repeat_window
/// (seconds), site_requests_per_minute, pending_expiry_days, watch, federation ("open" or
/// "buddies"), federation_group, adhoc (prompts name the ad-hoc command). Returns the engine or
/// `nil, message` (bad options included: the caller fails closed, it never raises).
fn open(lua: &Lua, (root, host, opts): (String, String, Option<LuaTable>)) -> LuaResult<LuaMultiValue> {
    let engine = config(opts).and_then(|c| Engine::open(Path::new(&root), &host, c));
    lua_result(lua, engine, |lua, e| Ok(LuaValue::UserData(lua.create_userdata(LuaEngine(Arc::new(e)))?)))
}

/// `validate(s)`: the normalised server domain, or `nil, reason`.
fn validate(lua: &Lua, s: String) -> LuaResult<LuaMultiValue> {
    lua_result(lua, server_trust::Domain::new(&s), |lua, d| string(lua, d.as_str()))
}

#[mlua::lua_module]
fn server_trust_lua(lua: &Lua) -> LuaResult<LuaTable> {
    let exports = lua.create_table()?;
    exports.set("open", lua.create_function(open)?)?;
    exports.set("validate", lua.create_function(validate)?)?;
    exports.set("normalise", lua.create_function(normalise)?)?;
    // SAFETY: `read_only` is a well-formed Lua C function (see there).
    exports.set("read_only", unsafe { lua.create_c_function(read_only)? })?;
    exports.set("version", env!("CARGO_PKG_VERSION"))?;
    exports.set("answer_timeout", server_trust::evidence::ANSWER_TIMEOUT.as_secs())?;
    // host_stanza(name, type, ns): passes between the two host JIDs without trust in buddies
    // mode (see Federation::host_stanza).
    exports.set(
        "host_stanza",
        lua.create_function(|_, (name, ty, ns): (String, Option<String>, Option<String>)| {
            Ok(server_trust::Federation::host_stanza(&name, ty.as_deref(), ns.as_deref()))
        })?,
    )?;
    Ok(exports)
}
