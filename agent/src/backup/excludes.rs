//! Path patterns: `backup --exclude` and `bunker find`.
//!
//! A pattern without `/` matches an entry's name at any depth (`*.tmp`, `node_modules`); a
//! pattern with `/` matches the entry's absolute path (`/srv/app/cache`, `/home/*/.cache`).
//! `*` and `?` never cross `/`; `**` does. An excluded directory is not descended into.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Compiled exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    patterns: Vec<String>,
}

/// A pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// Why it is invalid.
    pub reason: String,
}

fn glob(pattern: &str) -> Result<Glob, PatternError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| PatternError {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

impl Excludes {
    /// Compiles `patterns`.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            if trimmed.contains('/') {
                // Matched against absolute paths, it could never match: say so rather than
                // back up (or restore) what the user meant to leave out.
                if !trimmed.starts_with('/') && !trimmed.starts_with('*') {
                    return Err(PatternError {
                        pattern: pattern.clone(),
                        reason: format!(
                            "a pattern with `/` matches absolute paths, and this one can never \
                             match: write /full/path/{trimmed} or **/{trimmed}"
                        ),
                    });
                }
                paths.add(glob(trimmed)?);
            } else {
                names.add(glob(trimmed)?);
            }
        }
        let build = |builder: GlobSetBuilder| {
            builder.build().map_err(|e| PatternError {
                pattern: patterns.join(" "),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            patterns: patterns.to_vec(),
        })
    }

    /// True when the entry at absolute `path` matches a pattern (is excluded).
    pub fn matches(&self, path: &Path) -> bool {
        let name = path.file_name().unwrap_or_else(|| OsStr::from_bytes(b""));
        (!self.names.is_empty() && self.names.is_match(name))
            || (!self.paths.is_empty() && self.paths.is_match(path))
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let excludes = Excludes::new(&[
            "*.tmp".into(),
            "cache".into(),
            "/srv/*/logs".into(),
            "/data/**/secret".into(),
        ])
        .expect("valid");
        assert!(excludes.matches(Path::new("/a/b/x.tmp")));
        assert!(excludes.matches(Path::new("/a/cache")));
        assert!(!excludes.matches(Path::new("/a/cache2")));
        assert!(excludes.matches(Path::new("/srv/app/logs")));
        assert!(!excludes.matches(Path::new("/srv/app/sub/logs")));
        assert!(excludes.matches(Path::new("/data/x/y/secret")));
        assert!(!excludes.matches(Path::new("/srv/app/log")));
        assert!(Excludes::new(&["[".into()]).is_err());
    }

    #[test]
    fn a_relative_pattern_with_a_slash_is_refused_for_it_could_never_match() {
        let err = Excludes::new(&["app/cache".into()]).expect_err("refused");
        assert!(err.to_string().contains("**/app/cache"), "{err}");
        let excludes = Excludes::new(&["**/app/cache".into(), "cache/".into()]).expect("valid");
        assert!(excludes.matches(Path::new("/srv/app/cache")));
    }
}
