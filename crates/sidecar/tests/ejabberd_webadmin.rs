//! The "Server buddies" page of ejabberd's WebAdmin (mod_server_trust_webadmin.erl) in a real
//! browser: Debian's chromium, headless, driven over WebDriver by chromedriver (fantoccini),
//! against real parts (crates/lab/src/ejabberd.rs): ejabberd 23.01 with the module, its
//! WebAdmin on `/admin` and `admin_token_file` set, this sidecar, and a Prosody peer over s2s.
//!
//! The admin logs in with the WebAdmin's HTTP basic auth (credentials in the URL), follows the
//! host menu's link to the page, sees the pending requests, clicks Approve, and the Prosody peer
//! gets `subscribed` over s2s. A refused act (409: decided meanwhile) shows as an error on the
//! page; a form without the page's token, or posted from another origin, does nothing; an
//! account without the `configure` rule cannot open the page. The page after the approve is
//! written to docs/webadmin-server-buddies.png (the README's screenshot).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use server_trust_lab::ejabberd::{
    EjabberdLab, EjabberdOptions, HttpReply, VERONA, WEBADMIN_ADMIN, http_request,
};
use server_trust_lab::process::{Daemon, Watchdog};
use server_trust_lab::{MONTAGUE, TrustAdmin, presence_from};

const T: Duration = Duration::from_secs(30);
const CAPULET: &str = "capulet.lit"; // decided behind the page's back: the 409 case
const TYBALT: &str = "tybalt.lit"; // left pending: the forged posts
const ADMIN_PASSWORD: &str = "webadmin-secret";
const VIEWER: &str = "juliet"; // an account of verona.lit without `configure`
const VIEWER_PASSWORD: &str = "juliet-secret";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fails with what to do when the browser is not installed (`bash scripts/test.sh` installs it
/// through scripts/ejabberd-setup.sh).
fn require_browser() {
    let missing: Vec<&str> =
        [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "{missing:?} missing: this test drives Debian's chromium with chromedriver; install them with \
         `apt-get install -y chromium chromium-driver` (or `bash scripts/ejabberd-setup.sh` as root)"
    );
}

/// chromedriver on 127.0.0.1 (a free port), in its own process group with the browsers it
/// starts: stopped, and the group killed, on drop; the lab's watchdog kills the group if the
/// test process dies first.
struct Driver {
    url: String,
    daemon: Daemon,
    dir: tempfile::TempDir,
    _watchdog: Option<Watchdog>,
}

impl Driver {
    fn start() -> Driver {
        require_browser();
        let dir = tempfile::Builder::new().prefix("server-trust-chromedriver-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let daemon = Daemon::new("chromedriver");
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1").arg("--allowed-origins=");
        daemon.spawn(cmd, &dir.path().join("chromedriver.log"));
        let pidfile = dir.path().join("chromedriver.pid");
        fs::write(&pidfile, daemon.pid().expect("chromedriver runs").to_string()).unwrap();
        let watchdog = Watchdog::spawn(&[&pidfile]);
        let url = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}");
        let ready = || std::net::TcpStream::connect(&addr).is_ok();
        if let Err(e) = daemon.wait_ready(Duration::from_secs(20), ready) {
            panic!(
                "chromedriver did not come up ({e:?}):\n{}",
                fs::read_to_string(dir.path().join("chromedriver.log")).unwrap_or_default()
            );
        }
        Driver { url, daemon, dir, _watchdog: watchdog }
    }

    /// A new headless Chromium session: no sandbox (root), no GPU, nothing that reaches the
    /// network by itself, a fresh profile.
    async fn session(&self) -> Client {
        static SESSIONS: AtomicU32 = AtomicU32::new(0);
        let profile = self.dir.path().join(format!("profile-{}", SESSIONS.fetch_add(1, Ordering::Relaxed)));
        assert!(!profile.exists(), "a fresh profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--no-proxy-server", "--disable-dev-shm-usage", "--window-size=1200,1800",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        ClientBuilder::new(HttpConnector::new()).capabilities(caps).connect(&self.url).await.unwrap_or_else(
            |e| {
                panic!(
                    "no Chromium session: {e}\n{}",
                    fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
                )
            },
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = self.daemon.pid();
        self.daemon.stop(Duration::from_secs(5));
        if let Some(pid) = pid {
            // Browsers chromedriver left behind are in its process group.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

fn lab() -> EjabberdLab {
    let mut o = EjabberdOptions::new(env!("CARGO_BIN_EXE_server-trust-sidecar"));
    o.admin_commands = true;
    o.webadmin = true;
    o.prosody_hosts = vec![CAPULET.to_string(), TYBALT.to_string()];
    let lab = EjabberdLab::start(o);
    lab.ejabberd.register(WEBADMIN_ADMIN, ADMIN_PASSWORD);
    lab.ejabberd.register(VIEWER, VIEWER_PASSWORD);
    lab
}

/// The WebAdmin URL of `path` with `user@verona.lit`'s credentials (basic auth).
fn login_url(lab: &EjabberdLab, user: &str, password: &str, path: &str) -> String {
    let base = lab.ejabberd.webadmin_url();
    let rest = base.strip_prefix("http://").unwrap();
    format!("http://{user}%40{VERONA}:{password}@{rest}{path}")
}

fn page_path() -> String {
    format!("server/{VERONA}/server-buddies/")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}@{VERONA}:{password}"))
    )
}

/// A raw POST of the page's form as the admin's browser would send it (basic auth included):
/// what a forged form on another site could make it send.
fn post_form(lab: &EjabberdLab, body: &str, extra: &[(&str, &str)]) -> HttpReply {
    let auth = basic(WEBADMIN_ADMIN, ADMIN_PASSWORD);
    let mut headers =
        vec![("Authorization", auth.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    http_request(
        &format!("{}:5280", lab.ejabberd.ip),
        "POST",
        &format!("/admin/{}", page_path()),
        &headers,
        body.as_bytes(),
    )
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("{css}: {e}\n{}", c.source().await.unwrap_or_default()),
    }
}

/// The `class` cell of `peer`'s row in the buddies table.
async fn cell(c: &Client, peer: &str, class: &str) -> String {
    let xpath =
        format!("//table[@id='buddies']//tr[td[@class='peer' and text()='{peer}']]/td[@class='{class}']");
    match c.find(Locator::XPath(&xpath)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("{xpath}: {e}\n{}", c.source().await.unwrap_or_default()),
    }
}

/// The Approve or Deny button of `peer`'s row in the pending table.
async fn click(c: &Client, peer: &str, act: &str) {
    let xpath =
        format!("//table[@id='pending']//tr[td[@class='peer' and text()='{peer}']]//input[@name='{act}']");
    let button = c.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("{xpath}: {e}"));
    // Clicked on the element itself, not at its on-screen position: with tall rows (the
    // evidence column) a late layout shift put a positional click on the next row's button.
    let this = serde_json::to_value(&button).unwrap();
    c.execute("arguments[0].click();", vec![this]).await.unwrap();
    c.wait().for_element(Locator::Css("#content h1")).await.unwrap();
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/webadmin-server-buddies.png")
}

fn subscribed_to(lab: &EjabberdLab, peer: &str) -> usize {
    lab.prosody()
        .received()
        .iter()
        .filter(|s| s.host == peer && presence_from(VERONA, "subscribed")(s))
        .count()
}

fn pending_peers(lab: &EjabberdLab) -> String {
    lab.sidecar.admin_api("GET", &format!("/v1/hosts/{VERONA}/pending"), "").body
}

#[test]
fn admin_approves_in_the_webadmin_and_others_cannot() {
    let lab = lab();
    let p = lab.prosody();
    for peer in [MONTAGUE, CAPULET, TYBALT] {
        p.admin(peer).cli(&["request", VERONA]);
    }
    for peer in [MONTAGUE, CAPULET, TYBALT] {
        lab.sidecar.wait_pending(peer, T);
    }
    readme_config_is_the_labs(&lab);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let token = rt.block_on(async {
        let c = driver.session().await;

        // Log in on the host's WebAdmin, follow the host menu's link.
        c.goto(&login_url(&lab, WEBADMIN_ADMIN, ADMIN_PASSWORD, &format!("server/{VERONA}/"))).await.unwrap();
        c.find(Locator::LinkText("Server buddies"))
            .await
            .expect("the host menu links the page")
            .click()
            .await
            .unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/server-buddies/"));
        assert_eq!(text_of(&c, "#content h1").await, format!("Server buddies ({VERONA})"));

        // The three requests wait, with their buttons; no buddy yet; nothing answered yet.
        let pending = text_of(&c, "#pending").await;
        for peer in [MONTAGUE, CAPULET, TYBALT] {
            assert!(pending.contains(peer), "{pending}");
        }
        // Each request with what is known about the requester (the engine's summary).
        let xpath = format!(
            "//table[@id='pending']//tr[td[@class='peer' and text()='{TYBALT}']]/td[@class='summary']"
        );
        let known = c.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("{xpath}: {e}"));
        let known = known.text().await.unwrap();
        assert!(known.contains("authenticated by: ") && known.contains("asked once"), "{known}");
        assert_eq!(cell(&c, MONTAGUE, "state").await, "none+pending-in");
        assert_eq!(cell(&c, MONTAGUE, "trusted").await, "no");
        assert_eq!(subscribed_to(&lab, MONTAGUE), 0, "answered before the decision");

        // capulet.lit is denied behind the page's back (the CLI's admin API): its row is stale,
        // and its Approve is refused by the sidecar (409), shown as an error.
        let r = lab.sidecar.admin_api("POST", &format!("/v1/hosts/{VERONA}/peers/{CAPULET}/deny"), "{}");
        assert_eq!(r.status, 200, "{r:?}");
        click(&c, CAPULET, "approve").await;
        let err = text_of(&c, "#act-error").await;
        assert!(err.contains("409"), "{err}");
        assert_eq!(subscribed_to(&lab, CAPULET), 0);

        // Approve montague.lit: it gets subscribed over s2s and becomes a buddy.
        click(&c, MONTAGUE, "approve").await;
        let result = text_of(&c, "#act-result").await;
        assert!(result.starts_with(&format!("Approved {MONTAGUE}")), "{result}");
        p.wait_for("subscribed from verona.lit", T, |s| {
            s.host == MONTAGUE && presence_from(VERONA, "subscribed")(s)
        });
        assert_eq!(cell(&c, MONTAGUE, "trusted").await, "yes");
        let audit = fs::read_to_string(lab.sidecar.audit_log()).unwrap();
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"approve\"") && l.contains(MONTAGUE) && l.contains("\"webadmin\"")),
            "{audit}"
        );
        lab.ejabberd.wait_log("the approve, by the WebAdmin", T, |l| {
            l.contains(&format!("approve {MONTAGUE} by webadmin {WEBADMIN_ADMIN}@{VERONA}"))
        });

        // The README's screenshot: a buddy, a request waiting, the act's result.
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        fs::create_dir_all(screenshot_path().parent().unwrap()).unwrap();
        fs::write(screenshot_path(), png).unwrap();

        let token =
            c.find(Locator::Css("input[name='token']")).await.unwrap().attr("value").await.unwrap().unwrap();
        c.close().await.unwrap();

        // An account without `configure`: the WebAdmin refuses it before the page runs (401
        // with a new basic-auth challenge, which headless Chromium leaves as an empty page).
        let c = driver.session().await;
        c.goto(&login_url(&lab, VIEWER, VIEWER_PASSWORD, &page_path())).await.unwrap();
        let src = c.source().await.unwrap();
        assert!(!src.contains("Server buddies") && !src.contains(TYBALT) && !src.contains("token"), "{src}");
        c.close().await.unwrap();
        token
    });
    drop(driver);

    // Forged posts (what another site's form could make the admin's browser send): nothing done.
    let form = format!("peer={TYBALT}&approve=Approve");
    let no_token = post_form(&lab, &form, &[]);
    assert_eq!(no_token.status, 200, "{no_token:?}");
    assert!(
        no_token.body.contains("act-error") && no_token.body.contains("form token is not valid"),
        "{no_token:?}"
    );
    let other_origin =
        post_form(&lab, &format!("{form}&token={token}"), &[("Origin", "http://evil.example")]);
    assert!(
        other_origin.body.contains("act-error") && other_origin.body.contains("(Origin)"),
        "{other_origin:?}"
    );
    // A GET never acts, whatever its query.
    let get = http_request(
        &format!("{}:5280", lab.ejabberd.ip),
        "GET",
        &format!("/admin/{}?{form}&token={token}", page_path()),
        &[("Authorization", &basic(WEBADMIN_ADMIN, ADMIN_PASSWORD))],
        b"",
    );
    // (23.01 redirects a GET whose raw path, query included, does not end in "/".)
    assert!(matches!(get.status, 200 | 301) && !get.body.contains("act-result"), "{get:?}");
    // The viewer's GET and post: refused by the WebAdmin (401).
    let viewer = http_request(
        &format!("{}:5280", lab.ejabberd.ip),
        "GET",
        &format!("/admin/{}", page_path()),
        &[("Authorization", &basic(VIEWER, VIEWER_PASSWORD))],
        b"",
    );
    assert_eq!(viewer.status, 401, "{viewer:?}");
    assert!(viewer.body.contains("Unauthorized") && !viewer.body.contains(TYBALT), "{viewer:?}");
    // The viewer's post: refused by the WebAdmin (401).
    let viewer = http_request(
        &format!("{}:5280", lab.ejabberd.ip),
        "POST",
        &format!("/admin/{}", page_path()),
        &[
            ("Authorization", &basic(VIEWER, VIEWER_PASSWORD)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("{form}&token={token}").as_bytes(),
    );
    assert_eq!(viewer.status, 401, "{viewer:?}");
    assert!(pending_peers(&lab).contains(TYBALT), "tybalt.lit decided by a forged post");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(subscribed_to(&lab, TYBALT), 0);
}

/// The README section's WebAdmin configuration is the one this test runs (line by line,
/// indentation and the listener's address aside).
fn readme_config_is_the_labs(lab: &EjabberdLab) {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ejabberd/mod_server_trust/README.md"))
            .unwrap();
    let section = readme.split_once("\n## WebAdmin page\n").expect("README section \"WebAdmin page\"").1;
    let yaml = section.split_once("```yaml\n").unwrap().1.split_once("```").unwrap().0;
    let lab_yml = fs::read_to_string(lab.ejabberd.etc.join("ejabberd.yml")).unwrap();
    let lab_lines: Vec<&str> = lab_yml.lines().map(str::trim).collect();
    for line in yaml.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("ip:")) {
        assert!(lab_lines.contains(&line), "the README's {line:?} is not in the lab's config:\n{lab_yml}");
    }
}
