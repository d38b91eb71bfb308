//! Self-signed certificates for lab servers (s2s needs TLS; dialback does the authentication).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::run_with_timeout;

/// Writes `<certs>/<host>.key` and `<certs>/<host>.crt` (EC P-256, CN and subjectAltName =
/// `host`, ten years) with `openssl`. Panics with openssl's stderr on failure.
pub fn self_signed(certs: &Path, host: &str) {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "3650", "-subj"])
        .arg(format!("/CN={host}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{host}"))
        .arg("-keyout")
        .arg(certs.join(format!("{host}.key")))
        .arg("-out")
        .arg(certs.join(format!("{host}.crt")));
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "openssl failed for {host}: {}", String::from_utf8_lossy(&out.stderr));
}
