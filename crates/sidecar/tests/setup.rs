//! Issue 17 (set up on the first try), through the real binary: `--check` refuses a store
//! folder that is missing or that the user it runs as cannot write (the packaged unit's
//! `ReadWritePaths=` must exist, and the service runs as `ejabberd`), and the token commands
//! make files the sidecar accepts, owned by the user it runs as.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_server-trust-sidecar");
/// An unprivileged user every Debian system has.
const NOBODY: (u32, u32) = (65534, 65534);

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn token(dir: &Path, name: &str, owner: Option<(u32, u32)>) {
    let o = Command::new(BIN).args(["gen-token", "--out"]).arg(dir.join(name)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.join(name), Some(uid), Some(gid)).unwrap();
    }
}

/// A config in `dir` (store `dir/store`, not created) whose token files belong to `owner`.
fn setup(dir: &Path, owner: Option<(u32, u32)>) -> std::path::PathBuf {
    token(dir, "hook.token", owner);
    token(dir, "admin.token", owner);
    token(dir, "api.token", owner);
    let config = dir.join("sidecar.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    config
}

fn check(config: &Path, as_user: Option<(u32, u32)>) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--config").arg(config).arg("--check").env("SERVER_TRUST_LOG", "warn");
    if let Some((uid, gid)) = as_user {
        c.uid(uid).gid(gid); // std drops root's groups
    }
    c.output().unwrap()
}

#[test]
fn check_refuses_a_missing_store_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), None);
    let o = check(&config, None);
    assert_eq!(o.status.code(), Some(2), "a missing store must fail --check: {}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("no such folder") && out.contains(&dir.path().join("store").display().to_string()),
        "{out}"
    );
    assert!(out.contains("install -d -o ejabberd"), "says how to make it: {out}");
    assert!(!dir.path().join("store").exists(), "--check creates nothing");
    // A file where the folder should be.
    std::fs::write(dir.path().join("store"), "").unwrap();
    let o = check(&config, None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a folder"), "{}", text(&o));
    std::fs::remove_file(dir.path().join("store")).unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let o = check(&config, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK"), "{}", text(&o));
}

#[test]
fn check_refuses_a_store_the_user_it_runs_as_cannot_write() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run the sidecar as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), Some(NOBODY));
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    // root's folder, the sidecar run as nobody (as the unit runs it as ejabberd).
    let o = check(&config, Some(NOBODY));
    assert_eq!(o.status.code(), Some(2), "an unwritable store must fail --check: {}", text(&o));
    let out = text(&o);
    assert!(out.contains("not writable by nobody") && out.contains("owner root"), "{out}");
    assert!(out.contains(&format!("chown -R nobody: {}", store.display())), "{out}");
    std::os::unix::fs::chown(&store, Some(NOBODY.0), Some(NOBODY.1)).unwrap();
    let o = check(&config, Some(NOBODY));
    assert!(o.status.success(), "given to nobody, it passes: {}", text(&o));
}

#[test]
fn gen_token_owner_gives_the_new_file_to_the_user_the_sidecar_runs_as() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hook.token");
    let o = Command::new(BIN)
        .args(["gen-token", "--out"])
        .arg(&out)
        .args(["--owner", "nobody"])
        .output()
        .unwrap();
    if !is_root() {
        assert_ne!(o.status.code(), Some(0), "chown needs root");
        assert!(!out.exists(), "nothing left half-made: {}", text(&o));
        return;
    }
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::metadata(&out).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (NOBODY.0, NOBODY.1, 0o600));
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim().len(), 64);
    let o = Command::new(BIN)
        .args(["gen-token", "--out"])
        .arg(dir.path().join("x"))
        .args(["--owner", "no-such-user-st"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no such user"), "{}", text(&o));
    assert!(!dir.path().join("x").exists());
}

fn save_token(out: &Path, owner: Option<&str>, stdin: &str) -> Output {
    let mut c = Command::new(BIN);
    c.args(["save-token", "--out"]).arg(out);
    if let Some(o) = owner {
        c.args(["--owner", o]);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn save_token_stores_ejabberds_token_privately_and_refuses_empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ejabberd-api.token");
    // What `ejabberdctl oauth_issue_token … | cut -f1` prints when ejabberdctl failed.
    let o = save_token(&out, None, "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no token on stdin"), "{}", text(&o));
    assert!(!out.exists(), "no empty token file left behind");
    let o = save_token(&out, None, "two words\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.exists());
    let owner = is_root().then_some("nobody");
    let o = save_token(&out, owner, "  MpU2QjhQ8c1tXyZ7a0bE3fG5hJ9kL4nR\n");
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::metadata(&out).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    if is_root() {
        assert_eq!((m.uid(), m.gid()), NOBODY);
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "MpU2QjhQ8c1tXyZ7a0bE3fG5hJ9kL4nR\n");
    let o = save_token(&out, None, "another\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
}

/// The fenced block right after the marker `<!-- name -->` in `markdown`.
fn marked_block<'a>(markdown: &'a str, name: &str) -> &'a str {
    let marker = format!("<!-- {name} -->\n```");
    let at = markdown.find(&marker).unwrap_or_else(|| panic!("no block marked {name}"));
    let rest = &markdown[at + marker.len()..];
    let body = &rest[rest.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

/// The README shows the packaged unit and example config as they are: an admin who copies
/// the README gets what the package installs (issue 17: the README's unit had another path,
/// ordering and checks than the packaged one).
#[test]
fn the_readme_shows_the_packaged_unit_and_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for file in ["packaging/server-trust-sidecar.service", "packaging/sidecar.toml"] {
        let packaged = std::fs::read_to_string(dir.join("../..").join(file)).unwrap();
        assert_eq!(marked_block(&readme, file), packaged, "crates/sidecar/README.md's copy of {file}");
    }
}

/// One set of names everywhere: the example config, the module's conf file and the unit
/// agree on the token path, the two addresses and the store.
#[test]
fn the_module_conf_the_example_config_and_the_unit_name_the_same_things() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
    let toml = read("packaging/sidecar.toml");
    let conf = read("ejabberd/mod_server_trust/conf/mod_server_trust.yml");
    let unit = read("packaging/server-trust-sidecar.service");
    let module_readme = read("ejabberd/mod_server_trust/README.md");
    assert!(
        toml.contains("listen = \"127.0.0.1:5267\"")
            && conf.contains("sidecar_url: \"http://127.0.0.1:5267\"")
    );
    assert!(toml.contains("hook_token_file = \"/etc/server-trust/hook.token\""));
    assert!(conf.contains("token_file: \"/etc/server-trust/hook.token\""));
    assert!(toml.contains("api_url = \"http://127.0.0.1:5280/api\""));
    let yml = marked_block(&module_readme, "ejabberd-setup ejabberd.yml");
    assert!(yml.contains("port: 5280\n    ip: 127.0.0.1 "), "the API listener on the api_url's address");
    assert!(yml.contains("ip: 127.0.0.1/32"), "the API allowed from the sidecar's address");
    assert!(toml.contains("store = \"/var/lib/ejabberd/server_trust\""));
    assert!(unit.contains("ReadWritePaths=-/var/lib/ejabberd/server_trust\n"));
    assert!(
        unit.contains("ExecStart=/usr/bin/server-trust-sidecar --config /etc/server-trust/sidecar.toml\n")
    );
    for other in ["127.0.0.24", "/etc/ejabberd/server-trust-hook.token", "/usr/local/bin"] {
        for (f, t) in [("conf", &conf), ("toml", &toml), ("unit", &unit), ("module README", &module_readme)] {
            assert!(!t.contains(other), "{f} still names {other}");
        }
    }
}
