//! The sidecar's TOML configuration and its secrets.
//!
//! Tokens live in files (never argv or the environment, which other users and crash reports
//! can see); a token file that group or others can access is refused.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use server_trust::Domain;

/// Default listener: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5267";

/// The whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The shared store (one folder per host, the same one the CLI uses).
    pub store: PathBuf,
    /// Bearer token of the XMPP server's module: hook endpoints only.
    pub hook_token: Token,
    /// Bearer token of automation: admin endpoints only. None: admin API off.
    pub admin_token: Option<Token>,
    /// Fallback timer for picking up CLI and file decisions (the wakeup fd is the fast path).
    pub poll_interval: Duration,
    /// Served hosts, in file order.
    pub hosts: Vec<HostConfig>,
}

/// One served host.
#[derive(Debug)]
pub struct HostConfig {
    /// The XMPP domain.
    pub name: Domain,
    /// ejabberd's mod_http_api base URL, without a trailing slash.
    pub api_url: String,
    /// OAuth token for `send_stanza` and `send_message`.
    pub api_token: Token,
    /// Bare JIDs that get a chat message for each event.
    pub admins: Vec<String>,
    /// Engine options (defaults from `server_trust::Config`).
    pub engine: server_trust::Config,
}

/// A secret read from a file. Debug and Display never show it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Constant-time comparison with what a client presented.
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given).into()
    }

    /// The secret, for an outgoing `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    allow_non_loopback: bool,
    store: PathBuf,
    hook_token_file: PathBuf,
    admin_token_file: Option<PathBuf>,
    /// Seconds.
    poll_interval: Option<f64>,
    #[serde(default, rename = "host")]
    hosts: Vec<RawHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    api_url: String,
    api_token_file: PathBuf,
    #[serde(default)]
    admins: Vec<String>,
    reciprocate: Option<bool>,
    preapprove: Option<bool>,
    max_pending: Option<f64>,
    /// Seconds.
    repeat_window: Option<f64>,
    site_requests_per_minute: Option<f64>,
    pending_expiry_days: Option<f64>,
}

impl Config {
    /// Reads and validates `path`, including every token file it names.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the TOML text; relative paths are taken from `base` (the config's folder).
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let listen: SocketAddr = raw
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .map_err(|e| format!("listen: {e} (expected e.g. {DEFAULT_LISTEN})"))?;
        if !listen.ip().is_loopback() && !raw.allow_non_loopback {
            return Err(format!(
                "listen = \"{listen}\" is not a loopback address; the hook and admin API belong on \
                 loopback (set allow_non_loopback = true if you really mean it)"
            ));
        }
        let hook_token = read_token(&base.join(&raw.hook_token_file), "hook_token_file")?;
        let admin_token =
            raw.admin_token_file.map(|p| read_token(&base.join(p), "admin_token_file")).transpose()?;
        if admin_token.as_ref().is_some_and(|a| hook_token.matches(a.expose().as_bytes())) {
            return Err("hook and admin tokens are the same: they grant different rights, use two".into());
        }
        let poll_interval = match raw.poll_interval {
            None => Duration::from_secs(1),
            Some(s) if (0.01..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => return Err(format!("poll_interval = {s}: must be between 0.01 and 3600 seconds")),
        };
        if raw.hosts.is_empty() {
            return Err("no [[host]] section: nothing to serve".into());
        }
        let mut hosts: Vec<HostConfig> = Vec::new();
        for h in raw.hosts {
            let host = parse_host(h, base, raw.allow_non_loopback)?;
            if hosts.iter().any(|o| o.name == host.name) {
                return Err(format!("host {} is configured twice", host.name));
            }
            hosts.push(host);
        }
        Ok(Config { listen, store: base.join(raw.store), hook_token, admin_token, poll_interval, hosts })
    }
}

fn parse_host(h: RawHost, base: &Path, allow_non_loopback: bool) -> Result<HostConfig, String> {
    let name = Domain::new(&h.name).map_err(|e| format!("[[host]] name: {e}"))?;
    let ctx = |what: &str| format!("host {name}: {what}");
    let api_url = check_api_url(&h.api_url, allow_non_loopback).map_err(|e| ctx(&e))?;
    let api_token = read_token(&base.join(&h.api_token_file), "api_token_file").map_err(|e| ctx(&e))?;
    for a in &h.admins {
        check_admin_jid(a).map_err(|e| ctx(&format!("admins: {a:?}: {e}")))?;
    }
    let mut engine = server_trust::Config::default();
    if let Some(v) = h.reciprocate {
        engine.reciprocate = v;
    }
    if let Some(v) = h.preapprove {
        engine.preapprove_on_request = v;
    }
    // The engine's own checks, so every driver refuses the same values.
    if let Some(v) = h.max_pending {
        engine.max_pending = server_trust::Config::max_pending_from(v).map_err(|e| ctx(&e.to_string()))?;
    }
    if let Some(v) = h.repeat_window {
        engine.repeat_window =
            server_trust::Config::repeat_window_secs(v).map_err(|e| ctx(&e.to_string()))?;
    }
    if let Some(v) = h.site_requests_per_minute {
        engine.site_requests_per_minute =
            server_trust::Config::site_requests_per_minute_from(v).map_err(|e| ctx(&e.to_string()))?;
    }
    if let Some(v) = h.pending_expiry_days {
        engine.pending_max_age =
            server_trust::Config::pending_expiry_days(v).map_err(|e| ctx(&e.to_string()))?;
    }
    Ok(HostConfig { name, api_url, api_token, admins: h.admins, engine })
}

/// `http://HOST[:PORT][/path]`, loopback unless allowed otherwise. No TLS client is built in:
/// the API is expected next to the sidecar.
fn check_api_url(url: &str, allow_non_loopback: bool) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("api_url {url:?}: must start with http:// (ejabberd's API on loopback; no TLS client here)")
    })?;
    if rest.contains(['?', '#', '@', ' ']) || rest.chars().any(|c| c.is_control()) {
        return Err(format!("api_url {url:?}: no query, fragment, credentials or spaces allowed"));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(format!("api_url {url:?}: no host"));
    }
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_non_loopback {
        return Err(format!(
            "api_url {url:?}: not a loopback address; the API token would cross the network in clear \
             (set allow_non_loopback = true if you really mean it)"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A bare JID `user@domain` (or a bare domain) whose domain part is a valid server domain.
fn check_admin_jid(jid: &str) -> Result<(), String> {
    if jid.is_empty() || jid.len() > 3071 || jid.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not a bare JID".into());
    }
    if jid.contains('/') {
        return Err("give the bare JID, without a resource".into());
    }
    let domain = match jid.rsplit_once('@') {
        Some(("", _)) => return Err("empty localpart".into()),
        Some((_, d)) => d,
        None => jid,
    };
    Domain::new(domain).map(|_| ()).map_err(|e| e.to_string())
}

/// Reads a token file: owner-only permissions, one non-empty line of header-safe characters.
pub fn read_token(path: &Path, what: &str) -> Result<Token, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {}: group or others may access it (mode {mode:04o}); chmod 600 it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} {}: a token is one line of printable ASCII without spaces (at most 4096 bytes)",
            path.display()
        ));
    }
    Ok(Token(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        token_file(dir.path(), "hook.token", "hook-secret\n", 0o600);
        token_file(dir.path(), "admin.token", "admin-secret", 0o400);
        token_file(dir.path(), "api.token", "  api-secret  \n", 0o600);
        dir
    }

    const GOOD: &str = r#"
        listen = "127.0.0.24:5267"
        store = "store"
        hook_token_file = "hook.token"
        admin_token_file = "admin.token"
        [[host]]
        name = "Verona.lit"
        api_url = "http://127.0.0.24:5280/api/"
        api_token_file = "api.token"
        admins = ["admin@verona.lit"]
        max_pending = 5
        repeat_window = 7
    "#;

    #[test]
    fn good_config_with_defaults_and_relative_paths() {
        let dir = setup();
        let c = Config::parse(GOOD, dir.path()).unwrap();
        assert_eq!(c.listen, "127.0.0.24:5267".parse().unwrap());
        assert_eq!(c.store, dir.path().join("store"));
        assert!(c.hook_token.matches(b"hook-secret"));
        assert!(!c.hook_token.matches(b"hook-secre"));
        assert!(c.admin_token.as_ref().unwrap().matches(b"admin-secret"));
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        let h = &c.hosts[0];
        assert_eq!(h.name.as_str(), "verona.lit");
        assert_eq!(h.api_url, "http://127.0.0.24:5280/api");
        assert_eq!(h.api_token.expose(), "api-secret");
        assert_eq!(h.engine.max_pending, 5);
        assert_eq!(h.engine.repeat_window, Duration::from_secs(7));
        assert!(h.engine.reciprocate, "engine default kept");
        assert!(!format!("{c:?}").contains("secret"), "tokens never printed");
        let min = "store = \"s\"\nhook_token_file = \"hook.token\"\n[[host]]\nname = \"a.lit\"\n\
                   api_url = \"http://localhost:5280/api\"\napi_token_file = \"api.token\"\n";
        let c = Config::parse(min, dir.path()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(c.admin_token.is_none());
    }

    fn err(text: &str, dir: &Path) -> String {
        Config::parse(text, dir).unwrap_err()
    }

    #[test]
    fn refuses_bad_configs_with_clear_messages() {
        let dir = setup();
        let d = dir.path();
        let cases: &[(&str, &str, &str)] = &[
            ("127.0.0.24:5267", "10.0.0.1:5267", "not a loopback address"),
            ("\"store\"", "\"store\"\nbogus = 1", "unknown field"),
            ("Verona.lit", "alice@verona.lit", "has a localpart"),
            ("http://127.0.0.24:5280/api/", "https://127.0.0.24/api", "must start with http://"),
            ("http://127.0.0.24:5280/api/", "http://192.0.2.1:5280/api", "not a loopback"),
            ("http://127.0.0.24:5280/api/", "http://u:p@127.0.0.1/api", "credentials"),
            ("admin@verona.lit", "admin@verona.lit/res", "without a resource"),
            ("admin@verona.lit", "not a jid", "not a bare JID"),
            ("admin.token", "hook.token", "the same"),
            ("max_pending = 5", "max_pending = -1", "max_pending"),
            ("repeat_window = 7", "repeat_window = 1e9", "repeat_window"),
            ("hook.token", "missing.token", "missing.token"),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replacen(from, to, 1);
            let e = err(&text, d);
            assert!(e.contains(want), "{to}: {e}");
        }
        let twice = format!(
            "{GOOD}\n[[host]]\nname = \"verona.lit\"\napi_url = \"http://127.0.0.1/api\"\napi_token_file = \"api.token\"\n"
        );
        assert!(err(&twice, d).contains("configured twice"));
        let none = "store = \"s\"\nhook_token_file = \"hook.token\"\n";
        assert!(err(none, d).contains("no [[host]]"));
        let ok_far = GOOD.replacen("127.0.0.24:5267", "0.0.0.0:5267", 1).replacen(
            "store =",
            "allow_non_loopback = true\nstore =",
            1,
        );
        assert!(Config::parse(&ok_far, d).is_ok());
    }

    #[test]
    fn token_files_must_be_private_non_empty_and_header_safe() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = token_file(d, "t", "secret", 0o640);
        assert!(read_token(&p, "x").unwrap_err().contains("chmod 600"));
        let p = token_file(d, "t", "secret", 0o604);
        assert!(read_token(&p, "x").unwrap_err().contains("mode 0604"));
        let p = token_file(d, "t", " \n\t\n", 0o600);
        assert!(read_token(&p, "x").unwrap_err().contains("empty"));
        let p = token_file(d, "t", "two words", 0o600);
        assert!(read_token(&p, "x").unwrap_err().contains("printable ASCII"));
        let p = token_file(d, "t", "ok-token\n", 0o600);
        assert!(read_token(&p, "x").unwrap().matches(b"ok-token"));
    }
}
