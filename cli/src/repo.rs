//! Opening and creating repositories from the global options.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use bunker_agent::{Cancel, cache_dirs};
use bunker_backend_s3::{S3Backend, S3Location};
use bunker_repo_format::backend::{
    Backend, BandwidthLimits, DryRunBackend, LocalBackend, ThrottledBackend,
};
use bunker_repo_format::config::Operation;
use bunker_repo_format::keyfile::KeyFile;
use bunker_repo_format::{Error, Repository};

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
        Location::Local(path) => limited(global, LocalBackend::open(&path)?),
        Location::S3(s3) => limited(global, S3Backend::open(s3)?),
    })
}

/// The process's stop flag (its [`Cancel`] flag, set by SIGINT and SIGTERM), which ends a
/// paced transfer's wait for its turn: see [`stop_waiting_when`].
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes every paced backend opened from now on stop waiting for its turn once `cancel`
/// is set, so that a stopping command is not held up by a bandwidth limit.
pub fn stop_waiting_when(cancel: &Cancel) {
    let _ = STOP.set(cancel.flag());
}

/// The backend of a repository whose `config` may be missing (`repair config`): one
/// holding key slots. Nothing is created.
pub fn open_backend_for_config_repair(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    let backend = match location(global)? {
        Location::Local(path) => {
            if !path.join("keys").is_dir() {
                return Err(Error::RepositoryNotFound {
                    location: path.display().to_string(),
                }
                .into());
            }
            match LocalBackend::open(&path) {
                Ok(backend) => limited(global, backend),
                // No config: `create` refuses only an existing one, and the layout's
                // directories are there already.
                Err(Error::RepositoryNotFound { .. }) => {
                    limited(global, LocalBackend::create(&path)?)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Location::S3(s3) => limited(global, S3Backend::connect(s3)?),
    };
    Ok(backend)
}

/// `backend`, paced to --limit-upload and --limit-download when either is given.
fn limited<B: Backend + 'static>(global: &GlobalOptions, backend: B) -> Arc<dyn Backend> {
    let limits = BandwidthLimits {
        upload: global.limit_upload,
        download: global.limit_download,
    };
    if limits.is_unlimited() {
        return Arc::new(backend);
    }
    let throttled = ThrottledBackend::new(backend, limits);
    Arc::new(match STOP.get() {
        Some(stop) => throttled.stopping_when(Arc::clone(stop)),
        None => throttled,
    })
}

/// The backend of an existing repository at `global.repo`.
pub fn backend(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    open_backend(global)
}

/// Opens the repository at `global.repo`, reading an S3 repository's metadata through the
/// copies in this host's cache directory (see [`cached`]).
fn open_cached(global: &GlobalOptions) -> Result<Repository> {
    let remote = matches!(location(global)?, Location::S3(_));
    let repository = unlock(global, backend(global)?)?;
    Ok(if remote {
        cached(global, repository)
    } else {
        repository
    })
}

/// `repository` reading its snapshots, index, trees and other metadata objects
/// through copies in `<cache dir>/<repository id>/objects` ([`MetadataCache`]), unless
/// --no-cache or no cache directory is known. Only for stores reached over a network: a
/// local directory is read as fast as the copies would be.
///
/// [`MetadataCache`]: bunker_repo_format::backend::MetadataCache
fn cached(global: &GlobalOptions, repository: Repository) -> Repository {
    match repository_cache_dir(global, &repository) {
        Some(dir) => repository.cache_metadata_in(dir.join("objects")),
        None => repository,
    }
}

/// This host's cache directory for `repository` (stamped as used now), or `None` with
/// --no-cache or when no cache directory is known (see [`cache_root`]).
pub fn repository_cache_dir(global: &GlobalOptions, repository: &Repository) -> Option<PathBuf> {
    if global.no_cache {
        return None;
    }
    let root = cache_root(global.cache_dir.as_deref())?;
    let dir = cache_dirs::repository_dir(&root, &repository.config().header.repository_id);
    // Only a stamp for `bunker cache --cleanup`: failing to set it changes nothing else.
    let _ = cache_dirs::mark_used(&dir);
    Some(dir)
}

/// Unlocks the repository in `backend` with `--key-file` / `BUNKER_KEY_FILE` when given,
/// else with the password from the usual sources.
fn unlock(global: &GlobalOptions, backend: Arc<dyn Backend>) -> Result<Repository> {
    let repository = match &global.key_file {
        Some(path) => {
            let key_file = KeyFile::read(path)?;
            Repository::open_with_key_file(backend, &key_file, &path.display().to_string())?
        }
        None => {
            let password = password::repository_password(global, false)?;
            Repository::open(backend, password.as_bytes())?
        }
    };
    Ok(repository)
}

/// Opens the repository for a command that reads backups: a put-only key is refused with
/// [`Error::KeyLacksReadAccess`] naming `operation`.
pub fn open(global: &GlobalOptions, operation: &'static str) -> Result<Repository> {
    let repository = open_cached(global)?;
    if repository.is_put_only() {
        return Err(Error::KeyLacksReadAccess { operation }.into());
    }
    repository.check_features(Operation::Read)?;
    // Only a command that may run leaves an audit record; a refused key leaves none.
    crate::audit::remember(&repository);
    Ok(repository)
}

/// Opens the repository for writing backups: any key, put-only keys included.
pub fn open_writer(global: &GlobalOptions) -> Result<Repository> {
    let repository = open_cached(global)?;
    // Backup reads the index; it checks `Write` on top.
    repository.check_features(Operation::Read)?;
    crate::audit::remember(&repository);
    Ok(repository)
}

/// Opens the repository for a backup that stores nothing (`--dry-run`): it reads as
/// [`open_writer`] does and every write stops in a [`DryRunBackend`]; no audit record.
pub fn open_dry_run_writer(global: &GlobalOptions) -> Result<Repository> {
    let repository = unlock(global, Arc::new(DryRunBackend::new(backend(global)?)))?;
    repository.check_features(Operation::Read)?;
    Ok(repository)
}

/// Opens `copy`'s target at `location` with its own password, or creates it when there is
/// no repository there: with `source`'s parameters and KDF cost, and sharing its writer
/// secret (FORMAT.md §4.5). Returns the repository and whether it was created.
pub fn open_or_create_target(
    global: &GlobalOptions,
    location: &str,
    source: &Repository,
) -> Result<(Repository, bool)> {
    let target = GlobalOptions {
        repo: Some(location.to_owned()),
        password_file: None,
        password_command: None,
        key_file: None,
        ..global.clone()
    };
    let password = password::target_password()?;
    match backend(&target) {
        Ok(existing) => {
            let repository = Repository::open(existing, password.as_bytes())
                .with_context(|| format!("opening the target {location}"))?;
            return Ok((repository, false));
        }
        Err(e) if matches!(e.downcast_ref(), Some(Error::RepositoryNotFound { .. })) => {}
        Err(e) => return Err(e),
    }
    let options = bunker_repo_format::InitOptions {
        params: source.config().params,
        kdf: source.config().header.kdf,
        slot_info: bunker_repo_format::keyslot::KeySlotInfo {
            created: bunker_agent::backup::now().sec,
            host: bunker_agent::platform::hostname(),
            username: bunker_agent::platform::username(),
            label: "created by copy".into(),
        },
    };
    let repository = Repository::init_sharing_writer(
        create_backend(&target)?,
        password.as_bytes(),
        options,
        source.writer_key(),
    )?;
    Ok((repository, true))
}

/// Creates the backend of a new repository (the directory, if missing).
pub fn create_backend(global: &GlobalOptions) -> Result<Arc<dyn Backend>> {
    Ok(match location(global)? {
        Location::Local(path) => limited(
            global,
            LocalBackend::create(&path)
                .with_context(|| format!("could not create a repository at {}", path.display()))?,
        ),
        Location::S3(s3) => {
            let url = s3.url();
            limited(
                global,
                S3Backend::create(s3)
                    .with_context(|| format!("could not create a repository at {url}"))?,
            )
        }
    })
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
