//! Restore roots: the directories self-service restores may write into.
//!
//! Every decision is made on the resolved path: relative to the working directory, with
//! `.`/`..` applied and every existing symlink resolved, so `/srv/restore/../etc` and a
//! symlink inside a root that points out of it are both judged by where they really lead.
//! The part of the path that does not exist yet is taken as written.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::LeaseError;

/// The absolute path `target` leads to: `..` and symlinks resolved for the part that
/// exists, the rest appended as written. A dangling symlink on the way is an error.
pub fn resolve_target(target: &Path) -> Result<PathBuf, LeaseError> {
    let failed = |source: io::Error| LeaseError::Resolve {
        target: target.to_owned(),
        source,
    };
    let absolute = if target.is_absolute() {
        target.to_owned()
    } else {
        std::env::current_dir().map_err(failed)?.join(target)
    };
    let mut resolved = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                let candidate = resolved.join(name);
                match std::fs::symlink_metadata(&candidate) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        resolved = std::fs::canonicalize(&candidate).map_err(|e| {
                            failed(io::Error::new(
                                e.kind(),
                                format!("symlink {} leads nowhere: {e}", candidate.display()),
                            ))
                        })?;
                    }
                    Ok(_) => resolved = candidate,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        ) =>
                    {
                        resolved = candidate;
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
        }
    }
    Ok(resolved)
}

/// The policy's `agent.restore_roots`, each resolved; empty means "anywhere".
#[derive(Debug, Clone, Default)]
pub struct RestoreRoots {
    configured: Vec<PathBuf>,
    resolved: Vec<PathBuf>,
}

impl RestoreRoots {
    /// The roots as configured (absolute paths); each is resolved like a target.
    pub fn new(configured: &[PathBuf]) -> Result<Self, LeaseError> {
        let resolved = configured
            .iter()
            .map(|root| resolve_target(root))
            .collect::<Result<_, _>>()?;
        Ok(RestoreRoots {
            configured: configured.to_vec(),
            resolved,
        })
    }

    /// True when no roots are configured: restores may go anywhere.
    pub fn is_empty(&self) -> bool {
        self.configured.is_empty()
    }

    /// The roots as configured.
    pub fn configured(&self) -> &[PathBuf] {
        &self.configured
    }

    /// Resolves `target` and returns the resolved path when it is a root or lies under
    /// one (always, when no roots are configured); otherwise
    /// [`LeaseError::OutsideRoots`].
    pub fn check(&self, target: &Path) -> Result<PathBuf, LeaseError> {
        let resolved = resolve_target(target)?;
        if self.is_empty() || self.resolved.iter().any(|root| resolved.starts_with(root)) {
            return Ok(resolved);
        }
        Err(LeaseError::OutsideRoots {
            target: target.to_owned(),
            resolved,
            roots: self.configured.clone(),
        })
    }

    /// Whether the resolved target of a lease may ever be removed: an absolute path of
    /// plain names that is not `/`, not a restore root itself, and (when roots are
    /// configured) strictly under one of them.
    pub fn check_leasable(&self, resolved: &Path) -> Result<(), LeaseError> {
        let refuse = |reason: String| {
            Err(LeaseError::Unleasable {
                target: resolved.to_owned(),
                reason,
            })
        };
        let mut components = resolved.components();
        if components.next() != Some(Component::RootDir)
            || !components.all(|c| matches!(c, Component::Normal(_)))
        {
            return refuse("not an absolute path of plain names".to_owned());
        }
        if resolved == Path::new("/") {
            return refuse("it is the root directory".to_owned());
        }
        if let Some(root) = self
            .resolved
            .iter()
            .zip(&self.configured)
            .find(|(r, _)| r.as_path() == resolved)
        {
            return refuse(format!("it is the restore root {}", root.1.display()));
        }
        if !self.is_empty() && !self.resolved.iter().any(|root| resolved.starts_with(root)) {
            return Err(LeaseError::OutsideRoots {
                target: resolved.to_owned(),
                resolved: resolved.to_owned(),
                roots: self.configured.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(temp.path()).unwrap();
        fs::create_dir_all(base.join("restore/alice")).unwrap();
        fs::create_dir_all(base.join("etc")).unwrap();
        symlink(base.join("etc"), base.join("restore/escape")).unwrap();
        symlink(base.join("restore/alice"), base.join("restore/inside")).unwrap();
        (temp, base)
    }

    #[test]
    fn targets_are_judged_by_where_they_resolve() {
        let (_temp, base) = setup();
        let roots = RestoreRoots::new(&[base.join("restore")]).unwrap();
        let inside = roots.check(&base.join("restore/new/deeper")).unwrap();
        assert_eq!(inside, base.join("restore/new/deeper"));
        assert_eq!(
            roots.check(&base.join("restore/inside/x")).unwrap(),
            base.join("restore/alice/x")
        );
        assert_eq!(
            roots.check(&base.join("restore/missing/../alice")).unwrap(),
            base.join("restore/alice")
        );
        for outside in [
            "etc/x",
            "restore/../etc",
            "restore/escape",
            "restore/escape/x",
        ] {
            let err = roots.check(&base.join(outside)).unwrap_err();
            assert!(matches!(err, LeaseError::OutsideRoots { .. }), "{outside}");
            let text = err.to_string();
            assert!(text.contains(outside), "{text}");
            assert!(
                text.contains(&base.join("restore").display().to_string()),
                "{text}"
            );
        }
        // No roots: anywhere, still resolved.
        let anywhere = RestoreRoots::default();
        assert_eq!(
            anywhere.check(&base.join("restore/escape")).unwrap(),
            base.join("etc")
        );
    }

    #[test]
    fn a_dangling_symlink_is_not_resolved_by_guessing() {
        let (_temp, base) = setup();
        symlink(base.join("nowhere"), base.join("restore/dangling")).unwrap();
        let roots = RestoreRoots::new(&[base.join("restore")]).unwrap();
        let err = roots.check(&base.join("restore/dangling")).unwrap_err();
        assert!(err.to_string().contains("leads nowhere"), "{err}");
    }

    #[test]
    fn only_paths_strictly_inside_a_root_can_expire() {
        let (_temp, base) = setup();
        let roots = RestoreRoots::new(&[base.join("restore")]).unwrap();
        roots.check_leasable(&base.join("restore/alice")).unwrap();
        assert!(roots.check_leasable(&base.join("restore")).is_err());
        assert!(roots.check_leasable(Path::new("/")).is_err());
        assert!(roots.check_leasable(&base.join("etc")).is_err());
        assert!(roots.check_leasable(&base.join("restore/../etc")).is_err());
        assert!(roots.check_leasable(Path::new("relative")).is_err());
        let anywhere = RestoreRoots::default();
        anywhere.check_leasable(&base.join("etc")).unwrap();
        assert!(anywhere.check_leasable(Path::new("/")).is_err());
    }
}
