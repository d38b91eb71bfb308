//! Test and benchmark helpers that need nothing from the crate: a stand-in for ejabberd's
//! `mod_http_api` (a real HTTP/1.1 listener on loopback that records each call), and the
//! files of a sidecar set-up (tokens, config). The unit tests use it as a module; the load
//! benchmark includes it by path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Token values used by the tests (files are written with mode 0600).
pub const HOOK_TOKEN: &str = "hook-token-5c1e9a7f3b0d8264e1f7a3c9b5d2";
/// Admin API token.
pub const ADMIN_TOKEN: &str = "admin-token-8d4b2f6e0a9c7153b6e0d4a2f8c1";
/// The token the sidecar presents to the fake API.
pub const API_TOKEN: &str = "api-token-e7a3c1f9d5b2086a4f1c9e7b3d0a";

/// One call the fake API received.
#[derive(Clone, Debug)]
pub struct ApiCall {
    /// `send_stanza`, `send_message`, ...
    pub command: String,
    /// The `Authorization` header.
    pub auth: String,
    /// The JSON arguments.
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
}

/// A fake ejabberd HTTP API on 127.0.0.1.
pub struct FakeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<ApiCall>>>,
    status: Arc<AtomicU16>,
    /// Milliseconds each answer takes (0: at once).
    delay: Arc<AtomicU64>,
    /// Calls answered, kept even when `record` is off.
    pub count: Arc<AtomicU64>,
}

impl FakeApi {
    /// Starts the listener (a thread per connection, keep-alive); it lives as long as the process.
    pub fn start(record: bool) -> FakeApi {
        FakeApi::start_on("127.0.0.1:0", record)
    }

    /// [`FakeApi::start`] on a given address (an API that comes back where it was).
    pub fn start_on(addr: &str, record: bool) -> FakeApi {
        let listener = TcpListener::bind(addr).expect("bind the fake API");
        let addr = listener.local_addr().unwrap();
        let api = FakeApi {
            addr,
            calls: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            delay: Arc::default(),
            count: Arc::default(),
        };
        let (calls, status, count) = (api.calls.clone(), api.status.clone(), api.count.clone());
        let delay = api.delay.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (calls, status, count, delay) =
                    (calls.clone(), status.clone(), count.clone(), delay.clone());
                std::thread::spawn(move || serve(conn, &calls, &status, &count, &delay, record));
            }
        });
        api
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Answer every following call with `status` (e.g. 503 for "ejabberd is starting").
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Take `d` to answer each following call (ejabberd under load).
    pub fn set_delay(&self, d: Duration) {
        self.delay.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until `n` calls satisfy `pred` (at most `timeout`), and returns those calls.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&ApiCall) -> bool) -> Vec<ApiCall> {
        let end = Instant::now() + timeout;
        loop {
            let found: Vec<ApiCall> = self.calls().into_iter().filter(|c| pred(c)).collect();
            if found.len() >= n || Instant::now() >= end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn serve(
    conn: TcpStream,
    calls: &Mutex<Vec<ApiCall>>,
    status: &AtomicU16,
    count: &AtomicU64,
    delay: &AtomicU64,
    record: bool,
) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let command = line.split(' ').nth(1).unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().unwrap_or(0),
                "authorization" => auth = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        let wait = delay.load(Ordering::SeqCst);
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait));
        }
        count.fetch_add(1, Ordering::Relaxed);
        if record {
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            calls.lock().unwrap().push(ApiCall { command, auth, body, status: code });
        }
        let reply =
            format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n0");
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// An HTTP client that returns 4xx/5xx answers instead of failing on them.
pub fn client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// Writes `content` to `dir/name` with mode 0600 and returns the path.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Writes the three token files and a config serving `hosts` (each with two admins) through
/// `api_url` into `dir`; `extra` is appended to the top-level keys. Returns the config path.
pub fn write_setup(dir: &Path, listen: &str, api_url: &str, hosts: &[&str], extra: &str) -> PathBuf {
    secret_file(dir, "hook.token", &format!("{HOOK_TOKEN}\n"));
    secret_file(dir, "admin.token", ADMIN_TOKEN);
    secret_file(dir, "api.token", API_TOKEN);
    let mut text = format!(
        "listen = \"{listen}\"\nstore = \"store\"\nhook_token_file = \"hook.token\"\n\
         admin_token_file = \"admin.token\"\n{extra}\n"
    );
    for h in hosts {
        text.push_str(&format!(
            "[[host]]\nname = \"{h}\"\napi_url = \"{api_url}\"\napi_token_file = \"api.token\"\n\
             admins = [\"admin@{h}\", \"ops@{h}\"]\n"
        ));
    }
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `dir` with its content, for "nothing changed" checks (the lock file
/// excluded: taking the lock is not a change).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                let content = std::fs::read(&p).unwrap_or_default();
                out.push((p, content));
            }
        }
    }
    out.sort();
    out
}
