//! Log lines to stderr, one per record. Under systemd (`JOURNAL_STREAM` set) each line starts
//! with the syslog priority (`<4>`), which journald turns into the entry's level; elsewhere
//! with the level name. The level comes from `SERVER_TRUST_LOG` (`error`, `warn`, `info`,
//! `debug`, `trace`; default `info`): a level, not a secret, so the environment is fine.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    journald: bool,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = if self.journald {
            let prio = match r.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{prio}>{}\n", r.args())
        } else {
            format!("server-trust-sidecar [{}] {}\n", r.level().as_str().to_lowercase(), r.args())
        };
        #[cfg(test)]
        capture::push(r.level(), &line);
        // One write per line, so lines from several threads do not interleave. (eprint!
        // rather than io::stderr(): the test harness captures it per test.)
        eprint!("{line}");
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let level = std::env::var("SERVER_TRUST_LOG").ok().and_then(|s| s.parse::<LevelFilter>().ok());
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_logger(Box::leak(Box::new(Stderr { journald }))).is_ok() {
        log::set_max_level(level.unwrap_or(LevelFilter::Info));
    }
}

/// What was logged, so tests can check for a line (shared by all tests in the process:
/// look for text unique to your test).
#[cfg(test)]
pub mod capture {
    use std::sync::Mutex;

    static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

    pub(super) fn push(level: log::Level, line: &str) {
        LINES.lock().unwrap().push((level, line.to_string()));
    }

    /// Lines at `level` containing every one of `needles`.
    pub fn find(level: log::Level, needles: &[&str]) -> Vec<String> {
        let lines = LINES.lock().unwrap();
        lines
            .iter()
            .filter(|(l, s)| *l == level && needles.iter().all(|n| s.contains(n)))
            .map(|(_, s)| s.clone())
            .collect()
    }
}
