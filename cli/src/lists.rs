//! Lists read from files: `--files-from` (and its `-verbatim` and `-raw` forms) and
//! `--exclude-file` (of `backup` and `rewrite`).

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::values;

/// A list that cannot be read, or holds a line that is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ListError {
    /// The list file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// How a list of paths is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// One per line; blank lines and `#` comments skipped, a line's `\r` end dropped
    /// (`--files-from`, `--exclude-file`).
    Lines,
    /// One per line, taken as written: only blank lines are skipped
    /// (`--files-from-verbatim`).
    Verbatim,
    /// Separated by NUL bytes, as `find -print0` writes them, so a name may hold any other
    /// byte, a newline included (`--files-from-raw`).
    Raw,
}

/// The entries of the list file `path` (`-`: standard input) written as `format`, any
/// bytes (file names need not be UTF-8).
pub fn entries(path: &Path, format: ListFormat) -> Result<Vec<OsString>, ListError> {
    let read = if path == Path::new("-") {
        let mut text = Vec::new();
        io::stdin().lock().read_to_end(&mut text).map(|_| text)
    } else {
        std::fs::read(path)
    };
    let text = read.map_err(|source| ListError {
        path: path.to_owned(),
        source,
    })?;
    let separator = if format == ListFormat::Raw { 0 } else { b'\n' };
    Ok(text
        .split(|&b| b == separator)
        .map(|line| match format {
            ListFormat::Lines => line.strip_suffix(b"\r").unwrap_or(line),
            ListFormat::Verbatim | ListFormat::Raw => line,
        })
        .filter(|line| !line.is_empty())
        .filter(|line| format != ListFormat::Lines || !line.starts_with(b"#"))
        .map(|line| OsString::from_vec(line.to_vec()))
        .collect())
}

/// The lines of a list file ([`ListFormat::Lines`]).
pub fn lines(path: &Path) -> Result<Vec<OsString>, ListError> {
    entries(path, ListFormat::Lines)
}

/// `given` and then the patterns of each `--exclude-file`, each checked as an `--exclude`
/// value is.
pub fn exclude_patterns(given: &[String], files: &[PathBuf]) -> Result<Vec<String>, ListError> {
    let invalid = |list: &Path, reason: String| ListError {
        path: list.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    };
    let mut patterns = given.to_vec();
    for list in files {
        for line in lines(list)? {
            let pattern = line
                .into_string()
                .map_err(|line| invalid(list, format!("{line:?} is not UTF-8")))?;
            patterns.push(values::exclude(&pattern).map_err(|e| invalid(list, e))?);
        }
    }
    Ok(patterns)
}
