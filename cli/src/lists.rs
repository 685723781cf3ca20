//! Lists read from files: `--files-from` and `--exclude-file` (of `backup` and `rewrite`).

use std::ffi::OsString;
use std::io;
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

/// The lines of a list file: blank lines and `#` comments skipped, any bytes (file names
/// need not be UTF-8).
pub fn lines(path: &Path) -> Result<Vec<OsString>, ListError> {
    let text = std::fs::read(path).map_err(|source| ListError {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(|line| OsString::from_vec(line.to_vec()))
        .collect())
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
