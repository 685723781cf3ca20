//! Which entries a restore brings back: `--include` and `--exclude` patterns (those of
//! `backup --exclude`, see [`Excludes`]) matched against each entry's path in the snapshot.
//!
//! An excluded entry is left out with everything below it. With includes, an entry is
//! restored when it matches or lies below a directory that matches; the directories on the
//! way to it are restored too (with their metadata), and a directory with nothing restored
//! below it is not. Excludes win over includes.

use std::path::Path;

use crate::backup::{Excludes, PatternError};

/// The patterns of one restore; the default restores everything.
#[derive(Debug, Clone, Default)]
pub struct RestoreFilter {
    includes: Option<Excludes>,
    excludes: Option<Excludes>,
}

/// What a restore does with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Left out, and everything below it.
    Skip,
    /// Restored, and everything below it that is not excluded.
    Restore,
    /// A directory restored only if something below it is.
    Explore,
}

impl RestoreFilter {
    /// Compiles the patterns; empty lists do not filter.
    pub fn new(includes: &[String], excludes: &[String]) -> Result<Self, PatternError> {
        let compile = |patterns: &[String]| {
            (!patterns.is_empty())
                .then(|| Excludes::new(patterns))
                .transpose()
        };
        Ok(Self {
            includes: compile(includes)?,
            excludes: compile(excludes)?,
        })
    }

    /// True when every entry is restored.
    pub fn is_everything(&self) -> bool {
        self.includes.is_none() && self.excludes.is_none()
    }

    /// What to do with the entry at `path` in the snapshot; `inside` when a directory above
    /// it was restored whole (or there are no includes).
    pub(super) fn decide(&self, path: &Path, is_dir: bool, inside: bool) -> Decision {
        if self.excludes.as_ref().is_some_and(|e| e.matches(path)) {
            return Decision::Skip;
        }
        match &self.includes {
            None => Decision::Restore,
            Some(_) if inside => Decision::Restore,
            Some(includes) if includes.matches(path) => Decision::Restore,
            Some(_) if is_dir => Decision::Explore,
            Some(_) => Decision::Skip,
        }
    }

    /// Whether entries below the root are inside an included directory from the start.
    pub(super) fn starts_inside(&self) -> bool {
        self.includes.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(includes: &[&str], excludes: &[&str]) -> RestoreFilter {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        RestoreFilter::new(&owned(includes), &owned(excludes)).expect("valid patterns")
    }

    #[test]
    fn excludes_win_and_includes_open_the_way_to_their_matches() {
        let everything = filter(&[], &[]);
        assert!(everything.is_everything());
        assert_eq!(
            everything.decide(Path::new("/a/b"), false, true),
            Decision::Restore
        );

        let f = filter(&["*.conf", "/srv/keep"], &["/srv/keep/cache", "*.tmp"]);
        assert!(!f.starts_inside());
        let decide = |path: &str, is_dir, inside| f.decide(Path::new(path), is_dir, inside);
        assert_eq!(decide("/etc", true, false), Decision::Explore);
        assert_eq!(decide("/etc/app.conf", false, false), Decision::Restore);
        assert_eq!(decide("/etc/passwd", false, false), Decision::Skip);
        assert_eq!(decide("/srv/keep", true, false), Decision::Restore);
        assert_eq!(decide("/srv/keep/data", false, true), Decision::Restore);
        assert_eq!(decide("/srv/keep/cache", true, true), Decision::Skip);
        assert_eq!(decide("/srv/keep/x.tmp", false, true), Decision::Skip);
        assert_eq!(decide("/srv/other.conf.tmp", false, false), Decision::Skip);
    }
}
