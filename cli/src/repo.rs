//! Opening and creating repositories from the global options.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bunker_repo_format::Repository;
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::config::Operation;

use crate::args::GlobalOptions;
use crate::password;

fn location(global: &GlobalOptions) -> Result<PathBuf> {
    let Some(repo) = &global.repo else {
        bail!("no repository given: use --repo or set BUNKER_REPOSITORY");
    };
    if repo.contains("://") {
        bail!("{repo}: only local directory repositories are supported by this version");
    }
    Ok(PathBuf::from(repo))
}

/// Opens the repository with the password from the usual sources.
pub fn open(global: &GlobalOptions) -> Result<Repository> {
    let path = location(global)?;
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(&path)?);
    let password = password::repository_password(global, false)?;
    let repository = Repository::open(backend, password.as_bytes())?;
    // Every command reads (backup reads the index); writers check `Write` on top.
    repository.check_features(Operation::Read)?;
    Ok(repository)
}

/// Creates the backend of a new repository (the directory, if missing).
pub fn create_backend(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    let path = location(global)?;
    let backend = LocalBackend::create(&path)
        .with_context(|| format!("could not create a repository at {}", path.display()))?;
    Ok(Arc::new(backend))
}

/// The local cache directory: `explicit` (`--cache-dir`, `BUNKER_CACHE_DIR`), else
/// `$XDG_CACHE_HOME/bunker`, else `$HOME/.cache/bunker`; `None` when none is known.
/// Each repository's state goes below it in a directory named by the repository id.
pub fn cache_root(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_owned());
    }
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(std::path::PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    from_env("XDG_CACHE_HOME")
        .map(|cache| cache.join("bunker"))
        .or_else(|| from_env("HOME").map(|home| home.join(".cache").join("bunker")))
}
