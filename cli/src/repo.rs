//! Opening and creating repositories from the global options.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bunker_backend_s3::{S3Backend, S3Location};
use bunker_repo_format::Repository;
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::config::Operation;

use crate::args::GlobalOptions;
use crate::password;

/// Where a repository lives.
enum Location {
    /// A local directory.
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`, with the connection settings from the environment.
    S3(S3Location),
}

fn location(global: &GlobalOptions) -> Result<Location> {
    let Some(repo) = &global.repo else {
        bail!("no repository given: use --repo or set BUNKER_REPOSITORY");
    };
    if S3Location::is_s3_url(repo) {
        return Ok(Location::S3(S3Location::from_url_and_env(repo)?));
    }
    if repo.contains("://") {
        bail!("{repo}: unknown repository scheme: use a local directory or s3://BUCKET/PREFIX");
    }
    Ok(Location::Local(PathBuf::from(repo)))
}

/// Opens the backend of an existing repository.
pub fn open_backend(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    Ok(match location(global)? {
        Location::Local(path) => Arc::new(LocalBackend::open(&path)?),
        Location::S3(s3) => Arc::new(S3Backend::open(s3)?),
    })
}

/// Opens the repository with the password from the usual sources.
pub fn open(global: &GlobalOptions) -> Result<Repository> {
    let backend = open_backend(global)?;
    let password = password::repository_password(global, false)?;
    let repository = Repository::open(backend, password.as_bytes())?;
    // Every command reads (backup reads the index); writers check `Write` on top.
    repository.check_features(Operation::Read)?;
    Ok(repository)
}

/// Creates the backend of a new repository (the directory, if missing).
pub fn create_backend(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    Ok(match location(global)? {
        Location::Local(path) => Arc::new(
            LocalBackend::create(&path)
                .with_context(|| format!("could not create a repository at {}", path.display()))?,
        ),
        Location::S3(s3) => {
            let url = s3.url();
            Arc::new(
                S3Backend::create(s3)
                    .with_context(|| format!("could not create a repository at {url}"))?,
            )
        }
    })
}
