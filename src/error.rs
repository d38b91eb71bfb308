//! The one error type of the crate: every failure names what was wrong and where.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
    /// Happens when an argument is out of range or unknown (presence type, decision, option).
    InvalidArgument(String),
    /// Happens when an admin acts on a request that does not exist.
    NoPendingRequest(String),
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
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NoPendingRequest(peer) => write!(f, "no pending request from {peer}"),
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
