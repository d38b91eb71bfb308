//! The HTTP API: routing, authentication, request parsing and the handlers.
//!
//! Checks run in this order, and each refusal happens before anything is changed:
//! path (404), method (405 + `Allow`), token (401 missing, 403 wrong or of the wrong kind),
//! host (404 not served; a hook's host is in its body, so once that is read), content type
//! (415), body size (413), JSON and values (400).
//!
//! A connection that has not presented a valid token is answered and closed (see `guard.rs`
//! for the connection budgets and the slowing of wrong tokens).
//!
//! (Over 400 lines: routing, both token checks and every handler in one place, so the order
//! of the checks above can be read straight through.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use server_trust::admin::{AdminAct, Done};
use server_trust::{Action, Actor, Domain, Error, PresenceKind};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bodies::{self, EvidenceIn, GroupsIn, HelloIn, PresenceIn, clean_groups, clip};
use crate::config::Token;
use crate::guard::{Conn, Failed, Guard};
use crate::host::{Host, PATIENCE};
use crate::views;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Largest body of `POST /v1/hook/evidence`: a peer's reply of up to 64 KiB (the engine
/// reads no more) in JSON.
pub const EVIDENCE_LIMIT: usize = 80 * 1024;
/// Time allowed for a client to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an authenticated client to send a request's headers, and to stay idle
/// between requests on a kept-alive connection. (An unauthenticated connection has
/// `Limits::first_request` in all.)
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Audit records returned at most.
const MAX_LOG: usize = 10_000;
/// Default of `limit` in `/log`, as in the CLI.
const DEFAULT_LOG: usize = 50;

/// What the handlers share.
pub struct App {
    hosts: HashMap<String, Arc<Host>>,
    hook_token: Token,
    admin_token: Option<Token>,
    /// True once the service is stopping: long-polls answer at once.
    stopping: watch::Receiver<bool>,
    /// Connection budgets and failed authentications.
    guard: Arc<Guard>,
}

impl App {
    /// `hosts` by their (normalised) domain.
    pub fn new(
        hosts: HashMap<String, Arc<Host>>,
        hook_token: Token,
        admin_token: Option<Token>,
        stopping: watch::Receiver<bool>,
        guard: Arc<Guard>,
    ) -> App {
        App { hosts, hook_token, admin_token, stopping, guard }
    }

    fn host(&self, name: &str) -> Result<Arc<Host>, Reply> {
        Domain::new(name)
            .ok()
            .and_then(|d| self.hosts.get(d.as_str()).cloned())
            .ok_or_else(|| Reply::error(StatusCode::NOT_FOUND, format!("host not served: {}", clip(name))))
    }

    /// Checks the token `need`s; a valid token (either) moves `conn` to the authenticated
    /// budget. A wrong one is counted against the source, which may be slowed.
    async fn authorize(&self, headers: &HeaderMap, need: Need, conn: &Conn) -> Result<(), Reply> {
        let given = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes).and_then(bearer);
        let Some(token) = given else {
            let mut r =
                Reply::error(StatusCode::UNAUTHORIZED, "missing token: send Authorization: Bearer <token>");
            r.header = Some((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            return Err(r);
        };
        // A slowed source that cannot be the XMPP server's loopback address: its token is not
        // even looked at (see guard.rs for why loopback is different).
        if !conn.is_authenticated()
            && !conn.is_loopback()
            && let Some(wait) = self.guard.penalty(conn.source())
        {
            self.guard.refused_unchecked();
            return Err(slowed(wait));
        }
        // Both comparisons always run, in constant time each.
        let hook = self.hook_token.matches(token);
        let admin = self.admin_token.as_ref().is_some_and(|t| t.matches(token));
        if !hook && !admin {
            return match self.guard.failed(conn.source()) {
                Failed::Refused => {
                    Err(Reply::error(StatusCode::FORBIDDEN, "this token may not use this endpoint"))
                }
                Failed::Slowed(wait) => {
                    tokio::time::sleep(self.guard.limits().slow_answer).await;
                    Err(slowed(wait))
                }
            };
        }
        if !conn.authenticate() {
            let mut r = Reply::error(StatusCode::SERVICE_UNAVAILABLE, "too many authenticated connections");
            r.header = Some((RETRY_AFTER, HeaderValue::from_static("1")));
            return Err(r);
        }
        match need {
            Need::Hook if hook => Ok(()),
            Need::Admin if admin => Ok(()),
            Need::Admin if self.admin_token.is_none() => Err(Reply::error(
                StatusCode::FORBIDDEN,
                "the admin API is off (no admin_token_file configured)",
            )),
            _ => Err(Reply::error(StatusCode::FORBIDDEN, "this token may not use this endpoint")),
        }
    }
}

/// `429` for a source that presented too many wrong tokens.
fn slowed(wait: Duration) -> Reply {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from this address: try again in {secs} s"),
    );
    r.header = Some((RETRY_AFTER, HeaderValue::from(secs)));
    r
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A JSON answer.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: Value,
    header: Option<(HeaderName, HeaderValue)>,
}

impl Reply {
    fn ok(status: StatusCode, body: Value) -> Reply {
        Reply { status, body, header: None }
    }

    fn error(status: StatusCode, message: impl Display) -> Reply {
        Reply::ok(status, json!({"error": message.to_string()}))
    }

    fn accepted() -> Reply {
        Reply::ok(StatusCode::ACCEPTED, json!({"ok": true}))
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut body = self.body.to_string().into_bytes();
        body.push(b'\n');
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some((name, value)) = self.header {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// An engine error as an HTTP answer: bad input 400, an act the roster's state does not
/// allow 409, a host the store does not serve 404, a store problem 500.
fn engine_error(e: &Error) -> Reply {
    let status = match e {
        Error::InvalidDomain { .. }
        | Error::UnknownName { .. }
        | Error::InvalidOption { .. }
        | Error::OwnHost(_) => StatusCode::BAD_REQUEST,
        Error::NotInRoster(_) | Error::NoPendingRequest(_) | Error::AlreadyDecided { .. } => {
            StatusCode::CONFLICT
        }
        Error::UnknownHost { .. } => StatusCode::NOT_FOUND,
        // Another process (the CLI, an editor's tool) holds the store lock right now.
        Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        log::error!("{e}");
    }
    let mut r = Reply::error(status, e);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.header = Some((RETRY_AFTER, HeaderValue::from_static("1")));
    }
    r
}

/// Which token an endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    Hook,
    Admin,
}

/// The act named by the last path segment.
fn parse_act(s: &str) -> Option<AdminAct> {
    Some(match s {
        "request" => AdminAct::Request,
        "approve" => AdminAct::Approve,
        "deny" => AdminAct::Deny,
        "revoke" => AdminAct::Revoke,
        "renew" => AdminAct::Renew,
        _ => return None,
    })
}

/// A matched endpoint with its path parameters (percent-decoded).
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    HookPresence,
    HookHello,
    HookGoodbye,
    HookTrusted,
    /// A peer's reply to an evidence query.
    HookEvidence,
    Roster(String),
    Pending(String),
    /// What waits in a host's outbox.
    Outbox(String),
    Log(String),
    Peer(String, String),
    Groups(String, String),
    Act(String, String, AdminAct),
    /// Bulk acts on pending requests (issue 14): `POST …/pending/deny`, `GET …/dropped`.
    BulkDeny(String),
    Dropped(String),
}

impl Route {
    fn need(&self) -> Need {
        match self {
            Route::Health => Need::Nothing,
            Route::HookPresence
            | Route::HookHello
            | Route::HookGoodbye
            | Route::HookTrusted
            | Route::HookEvidence => Need::Hook,
            _ => Need::Admin,
        }
    }
}

/// Matches the path, then the method.
fn route(method: &Method, path: &str) -> Result<Route, Reply> {
    let not_found = || Reply::error(StatusCode::NOT_FOUND, "no such endpoint");
    let raw = path.strip_prefix('/').ok_or_else(not_found)?;
    let mut segs = Vec::new();
    for s in raw.split('/') {
        let s = percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map_err(|_| Reply::error(StatusCode::BAD_REQUEST, "path is not UTF-8"))?;
        segs.push(s.into_owned());
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let own = |x: &str| x.to_string();
    let (route, allow) = match s.as_slice() {
        ["v1", "health"] => (Route::Health, "GET"),
        ["v1", "hook", "presence"] => (Route::HookPresence, "POST"),
        ["v1", "hook", "hello"] => (Route::HookHello, "POST"),
        ["v1", "hook", "goodbye"] => (Route::HookGoodbye, "POST"),
        ["v1", "hook", "trusted"] => (Route::HookTrusted, "GET"),
        ["v1", "hook", "evidence"] => (Route::HookEvidence, "POST"),
        ["v1", "hosts", h, "roster"] => (Route::Roster(own(h)), "GET"),
        ["v1", "hosts", h, "pending"] => (Route::Pending(own(h)), "GET"),
        ["v1", "hosts", h, "outbox"] => (Route::Outbox(own(h)), "GET"),
        ["v1", "hosts", h, "log"] => (Route::Log(own(h)), "GET"),
        ["v1", "hosts", h, "pending", "deny"] => (Route::BulkDeny(own(h)), "POST"),
        ["v1", "hosts", h, "dropped"] => (Route::Dropped(own(h)), "GET"),
        ["v1", "hosts", h, "peers", p] => (Route::Peer(own(h), own(p)), "GET"),
        ["v1", "hosts", h, "peers", p, "groups"] => (Route::Groups(own(h), own(p)), "GET, PUT"),
        ["v1", "hosts", h, "peers", p, act] => match parse_act(act) {
            Some(a) => (Route::Act(own(h), own(p), a), "POST"),
            None => return Err(not_found()),
        },
        _ => return Err(not_found()),
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        let mut r = Reply::error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
        r.header = Some((ALLOW, HeaderValue::from_static(allow)));
        return Err(r);
    }
    Ok(route)
}

/// The query string as (name, value) pairs, decoded.
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn bad(message: impl Display) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, message)
}

/// Reads a JSON body: `application/json`, at most [`BODY_LIMIT`] bytes, within the body timeout.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    read_json_up_to(req, BODY_LIMIT).await
}

/// [`read_json`] with a body of at most `limit` bytes.
async fn read_json_up_to<T: DeserializeOwned>(req: Request<Incoming>, limit: usize) -> Result<T, Reply> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Reply::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json"));
    }
    let too_large = || Reply::error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {limit} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => return Err(Reply::error(StatusCode::REQUEST_TIMEOUT, "body not received in time")),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(e)) => return Err(bad(format!("cannot read the body: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    bodies::parse(&bytes).map_err(bad)
}

/// Runs a blocking piece (engine calls that touch the disk) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        log::error!("internal error: {e}");
        Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

async fn handle(
    app: Arc<App>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = dispatch(&app, &conn, req).await.unwrap_or_else(|r| r);
    let mut resp = reply.into_response();
    if !conn.is_authenticated() {
        // No valid token yet: answered, then closed (no keep-alive, no second try on it).
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

async fn dispatch(app: &App, conn: &Conn, req: Request<Incoming>) -> Result<Reply, Reply> {
    let route = route(req.method(), req.uri().path())?;
    if route.need() != Need::Nothing {
        app.authorize(req.headers(), route.need(), conn).await?;
    }
    match route {
        Route::Health => Ok(Reply::ok(StatusCode::OK, json!({"ok": true}))),
        Route::HookPresence => hook_presence(app, req).await,
        Route::HookHello => hook_hello(app, req).await,
        Route::HookGoodbye => hook_goodbye(app, req).await,
        Route::HookTrusted => hook_trusted(app, &req).await,
        Route::HookEvidence => hook_evidence(app, req).await,
        Route::Roster(h) => {
            let host = app.host(&h)?;
            let v = blocking(move || views::roster(&host.engine)).await?;
            v.map(|v| Reply::ok(StatusCode::OK, v)).map_err(|e| engine_error(&e))
        }
        Route::Pending(h) => {
            let host = app.host(&h)?;
            Ok(Reply::ok(StatusCode::OK, blocking(move || views::pending(&host.engine)).await?))
        }
        Route::Outbox(h) => Ok(Reply::ok(StatusCode::OK, views::outbox(&app.host(&h)?.engine))),
        Route::Peer(h, p) => {
            let host = app.host(&h)?;
            let peer = Domain::new(&p).map_err(|e| engine_error(&e))?;
            let v = blocking(move || views::show(&host.engine, &peer)).await?;
            v.map(|v| Reply::ok(StatusCode::OK, v)).map_err(|e| engine_error(&e))
        }
        Route::Log(h) => {
            let host = app.host(&h)?;
            let q = query(&req);
            let peer = match q.get("peer").map(String::as_str) {
                None | Some("") => None,
                Some(p) => Some(Domain::new(p).map_err(|e| engine_error(&e))?),
            };
            let limit = match q.get("limit") {
                None => DEFAULT_LOG,
                Some(l) => l.parse::<usize>().map_err(|_| bad(format!("limit={}: not a count", clip(l))))?,
            };
            let v = blocking(move || views::log(&host.engine, peer.as_ref(), limit.min(MAX_LOG))).await?;
            v.map(|v| Reply::ok(StatusCode::OK, v)).map_err(|e| engine_error(&e))
        }
        Route::Groups(h, p) => groups(app, req, &h, &p).await,
        Route::Act(h, p, AdminAct::Renew) => renew(app, req, &h, &p).await,
        Route::Act(h, p, act) => {
            // `approve?for=90d`: trust for a time only.
            let trust_for = match (act, query(&req).remove("for")) {
                (_, None) => None,
                (AdminAct::Approve, Some(d)) => Some(
                    server_trust::engine::parse_duration("for", &d)
                        .and_then(server_trust::engine::trust_for)
                        .map_err(|e| engine_error(&e))?,
                ),
                (_, Some(_)) => return Err(bad("for=: only an approval is given for a time")),
            };
            admin_act(app, &h, p, act, actor(&req)?, trust_for).await
        }
        Route::BulkDeny(h) => bulk_deny(app, req, &h).await,
        Route::Dropped(h) => {
            let host = app.host(&h)?;
            let v = blocking(move || server_trust::admin::dropped(host.engine.store())).await?;
            v.map(|v| Reply::ok(StatusCode::OK, json!(v))).map_err(|e| engine_error(&e))
        }
    }
}

/// `POST /v1/hosts/{host}/pending/deny` with a selection (`{"site": "github.io"}`,
/// `{"all_pending": true, "older_than_secs": 604800}`): records a deny decision for each
/// request taken, as the CLI's `deny --site` does; the engine answers them at its next poll.
async fn bulk_deny(app: &App, req: Request<Incoming>, h: &str) -> Result<Reply, Reply> {
    let host = app.host(h)?;
    let actor = actor(&req)?;
    let sel: server_trust::admin::Selection = read_json(req).await?;
    let h2 = host.clone();
    let done = blocking(move || {
        // A store of its own, as the CLI's: the engine's would take these writes for its own
        // and its watcher would not wake the poll that answers them.
        let own = h2.engine.store();
        let store = server_trust::Store::open(own.dir().parent().unwrap_or(own.dir()), own.host())?;
        server_trust::admin::deny_pending(&store, &sel, actor)
    })
    .await?;
    let done = done.map_err(|e| engine_error(&e))?;
    log::info!(
        "{}: deny ({}) through the admin API: {} peer(s) recorded",
        host.name,
        done.selection,
        done.peers.len()
    );
    Ok(Reply::ok(StatusCode::OK, json!(done)))
}

async fn hook_presence(app: &App, req: Request<Incoming>) -> Result<Reply, Reply> {
    let p: PresenceIn = read_json(req).await?;
    let host = app.host(&p.host)?;
    p.check_id().map_err(bad)?;
    if p.kind == "error" {
        // e.g. our subscribe bounced (remote-server-not-found): the admin should know.
        log::warn!("{}: presence error from {}", host.name, clip(&p.from).escape_debug());
        return Ok(Reply::accepted());
    }
    let kind = PresenceKind::from_str(&p.kind).map_err(|e| engine_error(&e))?;
    let PresenceIn { from, id, session, .. } = p;
    if kind == PresenceKind::Subscribe
        && let Some(s) = &session
    {
        // Memory only; before `inbound`, which starts a new request's evidence with it. Facts
        // we cannot read must not cost the request itself: logged, and shown as not known.
        let cert = s.cert.as_deref().map(str::as_bytes);
        if let Err(e) = host.engine.session(&from, &s.auth, cert) {
            log::warn!("{}: session facts of {} ignored: {e}", host.name, clip(&from).escape_debug());
        }
    }
    let result = match kind {
        // Memory only (presence bookkeeping, probe answers): cheap enough for the reactor.
        PresenceKind::Available | PresenceKind::Unavailable | PresenceKind::Probe => {
            host.engine.inbound(&from, kind, id.as_deref()).inspect(|a| host.perform(a, PATIENCE))
        }
        // Subscription changes write the store (fsync): on the blocking pool.
        _ => blocking(move || host.run(|e| e.inbound(&from, kind, id.as_deref()))).await?,
    };
    let actions = result.map_err(|e| engine_error(&e))?;
    // The replies to evidence queries reach the XMPP server, not us: it sends the queries we
    // name here and hands the replies to `POST /v1/hook/evidence`.
    let queries: Vec<Value> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Query { peer, ns } => Some(json!({"peer": peer, "ns": ns})),
            _ => None,
        })
        .collect();
    if queries.is_empty() {
        return Ok(Reply::accepted());
    }
    Ok(Reply::ok(StatusCode::ACCEPTED, json!({"ok": true, "queries": queries})))
}

/// `POST /v1/hook/evidence`: a peer's reply to a query named by [`hook_presence`].
async fn hook_evidence(app: &App, req: Request<Incoming>) -> Result<Reply, Reply> {
    let e: EvidenceIn = read_json_up_to(req, EVIDENCE_LIMIT).await?;
    let host = app.host(&e.host)?;
    let EvidenceIn { peer, ns, reply, .. } = e;
    // Records in the pending file (fsync): on the blocking pool.
    let result = blocking(move || host.run(|en| en.answer(&peer, &ns, reply.as_deref()))).await?;
    result.map(|_| Reply::accepted()).map_err(|e| engine_error(&e))
}

async fn hook_hello(app: &App, req: Request<Incoming>) -> Result<Reply, Reply> {
    let hello: HelloIn = read_json(req).await?;
    let host = app.host(&hello.host)?;
    let node = hello.node.as_deref().map(clip).unwrap_or_default();
    let h = host.clone();
    let n = blocking(move || h.startup(PATIENCE)).await?;
    log::info!(
        "{}: hello from the XMPP server {}: {n} startup presence(s) sent",
        host.name,
        node.escape_debug()
    );
    Ok(Reply::accepted())
}

/// The XMPP server is stopping cleanly: the engine's shutdown actions (`unavailable` to the
/// peers we approved; every peer noted as last seen now). The presences come back in the
/// answer for the server to route itself, at once: its HTTP API, which `send_stanza` needs,
/// stops right after this hook, and its s2s streams soon after.
async fn hook_goodbye(app: &App, req: Request<Incoming>) -> Result<Reply, Reply> {
    let bye: HelloIn = read_json(req).await?;
    let host = app.host(&bye.host)?;
    let node = bye.node.as_deref().map(clip).unwrap_or_default();
    let h = host.clone();
    let actions = blocking(move || h.engine.shutdown_actions()).await?;
    let mut presence = Vec::new();
    for a in actions {
        match a {
            // In the engine's wire form: {"kind":"send","peer":…,"type":"unavailable","id":null}.
            a @ Action::Send { .. } => presence.push(
                serde_json::to_value(&a).map_err(|e| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e))?,
            ),
            other => host.perform(&[other], PATIENCE),
        }
    }
    log::info!(
        "{}: goodbye from the XMPP server {}: {} unavailable presence(s) for it to send",
        host.name,
        node.escape_debug(),
        presence.len()
    );
    Ok(Reply::ok(StatusCode::OK, json!({"host": host.name, "actions": presence})))
}

async fn hook_trusted(app: &App, req: &Request<Incoming>) -> Result<Reply, Reply> {
    let q = query(req);
    let name = q.get("host").ok_or_else(|| bad("host: missing"))?;
    let host = app.host(name)?;
    let since = match q.get("since").map(String::as_str) {
        None | Some("") | Some("-1") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| bad(format!("since={}: not a generation", clip(s))))?),
    };
    let wait = match q.get("wait").map(String::as_str) {
        None | Some("") => Duration::ZERO,
        Some(w) => match w.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())),
            _ => return Err(bad(format!("wait={}: not a number of seconds", clip(w)))),
        },
    };
    let mut changes = host.subscribe_trusted();
    let mut stopping = app.stopping.clone();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let t = changes.borrow_and_update().clone();
        if since != Some(t.generation) || *stopping.borrow() || tokio::time::Instant::now() >= deadline {
            let body = json!({"host": host.name, "generation": t.generation, "peers": *t.peers});
            return Ok(Reply::ok(StatusCode::OK, body));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { continue },
            _ = stopping.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Who the audit log names for an admin act: `api`, or the driver the caller names in
/// `X-Server-Trust-Actor` (ejabberd's module says `ejabberdctl`, `http-api`, `adhoc` or
/// `webadmin`); anything else is refused, so no caller can pass its act off as the CLI's.
fn actor(req: &Request<Incoming>) -> Result<Actor, Reply> {
    match req.headers().get("x-server-trust-actor") {
        None => Ok(Actor::Api),
        Some(v) => v.to_str().ok().and_then(Actor::admin_api_driver).ok_or_else(|| {
            bad(format!(
                "X-Server-Trust-Actor {:?}: not api, ejabberdctl, http-api, adhoc or webadmin",
                clip(&String::from_utf8_lossy(v.as_bytes()))
            ))
        }),
    }
}

async fn admin_act(
    app: &App,
    h: &str,
    p: String,
    act: AdminAct,
    actor: Actor,
    trust_for: Option<std::time::Duration>,
) -> Result<Reply, Reply> {
    let host = app.host(h)?;
    let peer = Domain::new(&p).map_err(|e| engine_error(&e))?;
    let (h, pp) = (host.clone(), peer.clone());
    let result = blocking(move || {
        h.run(|e| match act {
            AdminAct::Request => e.request(pp.as_str(), actor),
            AdminAct::Approve => e.approve_for(pp.as_str(), trust_for, actor),
            AdminAct::Deny => e.deny(pp.as_str(), actor),
            _ => e.revoke(pp.as_str(), actor),
        })
    })
    .await?;
    let actions = result.map_err(|e| engine_error(&e))?;
    // What became of the stanzas: accepted by the XMPP server, or waiting in the outbox.
    let detail = host.act_outcome(&peer, &actions).await;
    let state = host.engine.state(peer.as_str()).map_err(|e| engine_error(&e))?;
    let done = Done::new(act, &peer, detail);
    log::info!(
        "{}: {} {peer} through the admin API (now {state})",
        host.name,
        server_trust::vocab::name(&act)
    );
    // The CLI's answer, plus the state the act left.
    let mut body = serde_json::to_value(done).expect("serialisable");
    body["state"] = json!(state);
    Ok(Reply::ok(StatusCode::OK, body))
}

/// `POST …/peers/{peer}/renew` with `{"for": "90d"}`, `{"until": "2027-03-08T12:00:00Z"}` or
/// `{"forever": true}`: when the trust in a buddy ends, as the CLI's `renew` sets it.
async fn renew(app: &App, req: Request<Incoming>, h: &str, p: &str) -> Result<Reply, Reply> {
    use server_trust::engine::{Until, parse_duration};
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RenewIn {
        #[serde(default, rename = "for")]
        for_: Option<String>,
        #[serde(default)]
        until: Option<String>,
        #[serde(default)]
        forever: bool,
    }
    let host = app.host(h)?;
    let peer = Domain::new(p).map_err(|e| engine_error(&e))?;
    let actor = actor(&req)?;
    let body: RenewIn = read_json(req).await?;
    let until = match (body.for_, body.until, body.forever) {
        (Some(d), None, false) => Until::For(parse_duration("for", &d).map_err(|e| engine_error(&e))?),
        (None, Some(t), false) => Until::at(&t).map_err(|e| engine_error(&e))?,
        (None, None, true) => Until::Forever,
        _ => return Err(bad("give exactly one of for, until and forever")),
    };
    let (h, pp) = (host.clone(), peer.clone());
    let result = blocking(move || h.engine.renew(pp.as_str(), &until, actor)).await?;
    result.map_err(|e| engine_error(&e))?;
    let end = host.engine.entry(peer.as_str()).map_err(|e| engine_error(&e))?.and_then(|e| e.expires_at);
    log::info!("{}: trust in {peer} now ends {} (admin API)", host.name, end.as_deref().unwrap_or("never"));
    let mut body =
        serde_json::to_value(server_trust::admin::renewed(&peer, end.as_deref())).expect("serialisable");
    body["expires_at"] = json!(end);
    Ok(Reply::ok(StatusCode::OK, body))
}

async fn groups(app: &App, req: Request<Incoming>, h: &str, p: &str) -> Result<Reply, Reply> {
    let host = app.host(h)?;
    let peer = Domain::new(p).map_err(|e| engine_error(&e))?;
    if req.method() == Method::GET {
        let entry = host.engine.entry(peer.as_str()).map_err(|e| engine_error(&e))?;
        let entry = entry.ok_or_else(|| engine_error(&Error::NotInRoster(peer.clone())))?;
        return Ok(Reply::ok(StatusCode::OK, views::groups(&peer, &entry.groups)));
    }
    let actor = actor(&req)?;
    let body: GroupsIn = read_json(req).await?;
    let groups = clean_groups(body.groups).map_err(bad)?;
    let (h, pp, gg) = (host.clone(), peer.clone(), groups.clone());
    let result = blocking(move || {
        let r = h.engine.set_groups(pp.as_str(), gg, actor);
        h.refresh_trusted();
        r
    })
    .await?;
    result.map_err(|e| engine_error(&e))?;
    log::info!("{}: groups of {peer} set to {groups:?} through the admin API", host.name);
    Ok(Reply::ok(StatusCode::OK, views::groups(&peer, &groups)))
}

/// Serves `listener` until `shutdown` completes; then tells long-polls (`stop`), lets
/// in-flight requests finish (at most `grace`) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let guard = app.guard.clone();
    let reporter = tokio::spawn(guard.clone().report_loop());
    let first_request = guard.limits().first_request;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true).max_headers(48);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // e.g. out of file descriptors: do not spin.
                        guard.accept_failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Refused (counted, logged in the summary): dropping the stream closes it.
                let Some(conn) = guard.admit(peer) else { continue };
                let _ = stream.set_nodelay(true);
                let (app, c) = (app.clone(), conn.clone());
                let served = http.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |r| handle(app.clone(), c.clone(), r)),
                );
                let served = graceful.watch(served);
                tokio::spawn(async move {
                    tokio::pin!(served);
                    let deadline = tokio::time::sleep(first_request);
                    tokio::pin!(deadline);
                    // Dropping `served` closes the connection. The connection is polled first:
                    // a request that arrived with a valid token keeps it even if it was just
                    // displaced (see Conn::authenticate).
                    loop {
                        tokio::select! {
                            biased;
                            r = &mut served => {
                                if let Err(e) = r {
                                    log::debug!("connection: {e}");
                                }
                                break;
                            }
                            () = conn.displaced() => break,
                            () = &mut deadline, if !conn.is_authenticated() => {
                                if !conn.is_authenticated() {
                                    conn.timed_out();
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        log::warn!("stopping: connections still open after {grace:?}, closing them");
    }
    reporter.abort();
    guard.report_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_paths_then_methods() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(route(&get, "/v1/health").unwrap(), Route::Health);
        assert_eq!(route(&post, "/v1/hook/presence").unwrap(), Route::HookPresence);
        assert_eq!(route(&post, "/v1/hook/evidence").unwrap(), Route::HookEvidence);
        assert_eq!(
            route(&post, "/v1/hosts/verona.lit/peers/capulet.lit/approve").unwrap(),
            Route::Act("verona.lit".into(), "capulet.lit".into(), AdminAct::Approve)
        );
        assert_eq!(
            route(&Method::PUT, "/v1/hosts/v.lit/peers/b%C3%BCcher.lit/groups").unwrap(),
            Route::Groups("v.lit".into(), "bücher.lit".into())
        );
        for p in ["/v1/health/", "/v1//health", "/v2/health", "/", "", "/v1/hosts/v/peers/p/bless"] {
            assert_eq!(route(&get, p).unwrap_err().status, StatusCode::NOT_FOUND, "{p}");
        }
        let r = route(&get, "/v1/hook/presence").unwrap_err();
        assert_eq!(
            (r.status, r.header.unwrap().1),
            (StatusCode::METHOD_NOT_ALLOWED, HeaderValue::from_static("POST"))
        );
        let r = route(&Method::DELETE, "/v1/hosts/v/peers/p/groups").unwrap_err();
        assert_eq!(
            (r.status, r.header.unwrap().1),
            (StatusCode::METHOD_NOT_ALLOWED, HeaderValue::from_static("GET, PUT"))
        );
        assert_eq!(route(&get, "/v1/hosts/%FF/roster").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
    }
}
