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
