//! File primitives of the store: atomic replacement, reading with precise errors.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};

pub(super) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(super) fn read_text(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(Error::Corrupt { path: path.into(), line: None, message: "not valid UTF-8".into() })
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(super) fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Error::Corrupt { path: path.into(), line, message: e.message().to_string() }
    })
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    read_text(path)?.map(|text| parse_toml(path, &text)).transpose()
}

/// Reads a file named for `peer`; one that names another peer inside (a renamed or copied
/// file) is refused rather than acted on for the wrong server.
pub(super) fn read_named<T: for<'de> Deserialize<'de>>(
    path: &Path,
    peer: &Domain,
    named: impl Fn(&T) -> &Domain,
) -> Result<Option<T>> {
    match read_toml::<T>(path)? {
        Some(v) if named(&v) != peer => Err(Error::Corrupt {
            path: path.into(),
            line: None,
            message: format!("file is named for {peer} but says peer = {:?}", named(&v).as_str()),
        }),
        other => Ok(other),
    }
}

pub(super) fn toml_text<T: Serialize>(header: &str, value: &T) -> String {
    let body = toml::to_string_pretty(value).expect("store records always encode as TOML");
    format!("{header}{body}")
}

pub(super) fn write_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<()> {
    atomic_write(path, toml_text(header, value).as_bytes())
}

/// temp + fsync + rename + fsync(dir): readers and crashes see old or new, never a mix.
pub(super) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
