//! The one error type of the crate: every failure names what was wrong and where.
//!
//! Each variant is one condition a driver may want to tell apart (the C ABI maps each to its
//! own status); the text is for humans and names the file, peer or value concerned.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::domain::Domain;

/// Everything that can go wrong in server-trust.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Happens when a string is not a bare server domain (user JID, full JID, bad label, ...).
    InvalidDomain {
        /// What was given (truncated for display).
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// Happens when a name is not in the wire vocabulary (presence type, actor, decision).
    UnknownName {
        /// What kind of name was expected, e.g. `presence type`.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// Happens when an engine option has a value it cannot take.
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// Happens when an act or a stanza names our own host as the peer.
    OwnHost(Domain),
    /// Happens when an admin acts on a peer the roster does not know.
    NotInRoster(Domain),
    /// Happens when an admin decides on a request that does not exist.
    NoPendingRequest(Domain),
    /// Happens when an admin's decision conflicts with one recorded before it: the first
    /// recorded decision stands, and the later act changes nothing.
    AlreadyDecided {
        /// The peer whose request it is.
        peer: Domain,
        /// The decision recorded first.
        decision: crate::store::Decision,
        /// Who recorded it (`None`: an editor of the pending file).
        by: Option<crate::engine::Actor>,
        /// When, as recorded (RFC 3339), when known.
        at: Option<String>,
        /// It was carried out already (the answer went out), not only recorded.
        applied: bool,
    },
    /// Happens when a store folder does not serve the host asked for, or the host is ambiguous.
    UnknownHost {
        /// The store folder.
        store: PathBuf,
        /// What was wrong and what to pass instead.
        detail: String,
    },
    /// Happens when some store files could not be read; the readable ones were still used.
    Unreadable {
        /// How many files were skipped (each was reported on its own).
        count: usize,
    },
    /// Happens when another program is writing a store file we would replace (an in-place
    /// copy, an editor without the lock): we do not write over it.
    Changed {
        /// The file.
        path: PathBuf,
        /// What was seen.
        detail: String,
    },
    /// Happens when the store (or a folder in it) cannot be written by the user we run as.
    Permission {
        /// The folder.
        path: PathBuf,
        /// Who owns it, who we are, and what to run.
        detail: String,
    },
    /// Happens when the store lock stays held by another process longer than we may wait.
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote in the lock file.
        holder: String,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// Happens when a store file cannot be parsed; the file is left untouched.
    Corrupt {
        /// The file that failed to parse.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// Happens when the file system refuses an operation.
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidDomain { input, reason } => {
                write!(f, "invalid server domain {input:?}: {reason}")
            }
            Error::UnknownName { what, value } => write!(f, "not a {what}: {value:?}"),
            Error::InvalidOption { name, reason } => write!(f, "invalid option {name}: {reason}"),
            Error::OwnHost(host) => write!(f, "{host} is this host, not a peer"),
            Error::NotInRoster(peer) => write!(f, "{peer} is not in the roster"),
            Error::NoPendingRequest(peer) => write!(f, "no pending request from {peer}"),
            Error::AlreadyDecided { peer, decision, by, at, applied } => {
                let verb = if *decision == crate::store::Decision::Approve { "approve" } else { "deny" };
                let by = by.map_or("an editor of its pending file", |a| a.as_str());
                let at = at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default();
                let state =
                    if *applied { "carried out" } else { "recorded, carried out at the server's next poll" };
                write!(
                    f,
                    "{peer}: `{verb}` by {by}{at} came first ({state}); the first decision stands, nothing changed"
                )
            }
            Error::UnknownHost { store, detail } => write!(f, "{}: {detail}", store.display()),
            Error::Unreadable { count } => write!(f, "{count} unreadable store file(s), reported above"),
            Error::Permission { path, detail } => write!(f, "{}: {detail}", path.display()),
            Error::Busy { path, holder, waited } => {
                write!(
                    f,
                    "the store is locked by {holder} ({}); gave up after {} ms",
                    path.display(),
                    waited.as_millis()
                )
            }
            Error::Changed { path, detail } => {
                write!(
                    f,
                    "{}: {detail}; not written over (the act was not applied, try again)",
                    path.display()
                )
            }
            Error::Corrupt { path, line: Some(l), message } => {
                write!(f, "corrupt store file {}:{l}: {message}", path.display())
            }
            Error::Corrupt { path, line: None, message } => {
                write!(f, "corrupt store file {}: {message}", path.display())
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
