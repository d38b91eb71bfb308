//! The sidecar's TOML configuration and its secrets.
//!
//! Tokens live in files (never argv or the environment, which other users and crash reports
//! can see); a token file that group or others can access is refused. The hook and admin
//! tokens must be strong enough that guessing is hopeless (see [`check_strength`]);
//! `server-trust-sidecar gen-token` makes one.

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
    expiry_reminder_days: Option<f64>,
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
        let hook_token = read_strong_token(&base.join(&raw.hook_token_file), "hook_token_file")?;
        let admin_token =
            raw.admin_token_file.map(|p| read_strong_token(&base.join(p), "admin_token_file")).transpose()?;
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

    /// What `--check` adds to [`Config::load`]: the store folder exists and the user we run
    /// as can create and replace files in it. (At start the engine creates a missing store,
    /// but under the packaged unit `ProtectSystem=strict` needs the folder to exist already:
    /// systemd refuses to start a unit whose `ReadWritePaths=` is missing.) Run `--check` as
    /// the user the service runs as: root can write anywhere.
    pub fn check_store(&self) -> Result<(), String> {
        check_store(&self.store)
    }
}

/// See [`Config::check_store`].
pub fn check_store(store: &Path) -> Result<(), String> {
    let shown = store.display();
    let meta = match std::fs::metadata(store) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "store {shown}: no such folder; create it for the user the sidecar runs as, e.g. \
                 `install -d -o ejabberd -g ejabberd -m 0750 {shown}` (the Debian package's postinst \
                 makes /var/lib/ejabberd/server_trust)"
            ));
        }
        Err(e) => return Err(format!("store {shown}: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("store {shown}: not a folder"));
    }
    if server_trust::owner::check_writable(store).is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let me = server_trust::owner::user_name(unsafe { libc::geteuid() });
    Err(format!(
        "store {shown}: not writable by {me}, the user this runs as (owner {}, mode {:04o}); \
         give it to the user the sidecar runs as: chown -R {me}: {shown}",
        server_trust::owner::user_name(meta.uid()),
        meta.mode() & 0o7777
    ))
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
    if let Some(v) = h.expiry_reminder_days {
        engine.expiry_reminder = server_trust::engine::reminder_days(v).map_err(|e| ctx(&e.to_string()))?;
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

/// Least length of a hook or admin token: 32 characters, which is 128 bits for hex (the
/// poorest alphabet a generator uses) and more for anything richer.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Least number of different characters in a token (a random 32-hex-digit token has about 14).
const MIN_DISTINCT: usize = 8;
/// Longest straight run (`aaaa`, `1234`, `dcba`) a token may contain.
const MAX_RUN: usize = 7;

/// Refuses a token that is obviously guessable: under [`MIN_TOKEN_CHARS`] characters, fewer
/// than [`MIN_DISTINCT`] different characters, one character in half the places, a run of
/// more than [`MAX_RUN`] equal or consecutive characters, or a shorter piece repeated. This
/// cannot measure randomness: it catches the short and the typed-by-hand; 256 bits from
/// `gen-token` (or `openssl rand -hex 32`) is what the README asks for. The message never
/// shows the token.
pub fn check_strength(token: &str) -> Result<(), String> {
    let b = token.as_bytes();
    let n = b.len();
    if n < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token has {n} characters; at least {MIN_TOKEN_CHARS} are needed (128 bits as hex)"
        ));
    }
    let mut count = [0usize; 256];
    for &c in b {
        count[c as usize] += 1;
    }
    let distinct = count.iter().filter(|&&k| k > 0).count();
    if distinct < MIN_DISTINCT {
        return Err(format!("the token uses only {distinct} different characters"));
    }
    if count.iter().any(|&k| 2 * k > n) {
        return Err("one character fills half the token".into());
    }
    for step in [0i16, 1, -1] {
        let mut run = 1;
        for w in b.windows(2) {
            run = if i16::from(w[1]) - i16::from(w[0]) == step { run + 1 } else { 1 };
            if run > MAX_RUN {
                return Err(format!(
                    "the token holds a run of more than {MAX_RUN} equal or consecutive characters"
                ));
            }
        }
    }
    if let Some(p) = (1..=n / 2).find(|&p| b[p..].iter().zip(b).all(|(x, y)| x == y)) {
        return Err(format!("the token repeats a piece of {p} characters"));
    }
    Ok(())
}

/// [`read_token`], then [`check_strength`]: for the tokens this service checks (the hook and
/// admin tokens; ejabberd's API token is ejabberd's to make).
pub fn read_strong_token(path: &Path, what: &str) -> Result<Token, String> {
    let token = read_token(path, what)?;
    check_strength(token.expose()).map_err(|e| {
        format!(
            "{what} {}: {e}: too easy to guess. Make a new one with \
             `server-trust-sidecar gen-token --out FILE` (256 bits from the OS's random source)",
            path.display()
        )
    })?;
    Ok(token)
}

/// A new token: 256 bits from the OS's random source, as 64 hex digits.
pub fn generate_token() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let mut hex = String::with_capacity(64);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    // About one in a million: a random token that trips the check for typed ones (a run of
    // eight); draw again.
    if check_strength(&hex).is_err() {
        return generate_token();
    }
    Ok(hex)
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

    const HOOK: &str = "hook-secret-6f1c0a9d3e7b4825c9a0f3d1e8b7";
    const ADMIN: &str = "admin-secret-2b8e5f7a0c4d1936e2a7b0c5f9d3";

    fn token_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        token_file(dir.path(), "hook.token", &format!("{HOOK}\n"), 0o600);
        token_file(dir.path(), "admin.token", ADMIN, 0o400);
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
        assert!(c.hook_token.matches(HOOK.as_bytes()));
        assert!(!c.hook_token.matches(&HOOK.as_bytes()[1..]));
        assert!(c.admin_token.as_ref().unwrap().matches(ADMIN.as_bytes()));
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

    #[test]
    fn weak_hook_and_admin_tokens_are_refused_with_a_clear_message() {
        let dir = setup();
        let d = dir.path();
        let weak: &[(&str, &str)] = &[
            ("x", "has 1 characters; at least 32"),
            ("abc", "at least 32"),
            ("0123456789abcdef0123456789abcde", "has 31 characters"),
            (&"ab".repeat(20), "only 2 different characters"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0123456789", "half the token"),
            ("0123456789abcdef0123456789abcdef", "run of more than 7"),
            ("x7k2p9q4z1m6x7k2p9q4z1m6x7k2p9q4", "repeats a piece of 12"),
        ];
        for (token, want) in weak {
            for (file, what) in [("hook.token", "hook_token_file"), ("admin.token", "admin_token_file")] {
                let dir = setup();
                token_file(dir.path(), file, token, 0o600);
                let e = err(GOOD, dir.path());
                assert!(e.contains(what) && e.contains(want) && e.contains("gen-token"), "{token}: {e}");
                assert!(!e.contains(token) || token.len() < 4, "the token is not shown: {e}");
            }
        }
        // ejabberd's API token is ejabberd's to make: only read, not judged.
        token_file(d, "api.token", "abc", 0o600);
        assert!(Config::parse(GOOD, d).is_ok());
        for _ in 0..200 {
            let t = generate_token().unwrap();
            assert_eq!(t.len(), 64);
            assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
            check_strength(&t).unwrap();
        }
        // What the README's openssl commands make.
        check_strength("3f9c0e1a7b2d4c58e6f1a0b9c3d7e2f4").unwrap();
        check_strength("q3ZbLk0x-9vT_c1PmW8sRf2YhJd5nA6e").unwrap();
    }
}
