//! [`S3Backend`]: the synchronous [`Backend`] trait over `object_store`'s S3 client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bunker_repo_format::backend::{Backend, LockPolicy, ObjectMeta, ReadBytes, validate_name};
use bunker_repo_format::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig,
};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::errors::{Kind, classify, one_line, to_error};
use crate::location::S3Location;
use crate::raw::{LockInfo, RawClient};

/// Requests in flight at once, over all threads using one backend.
const MAX_IN_FLIGHT: usize = 16;
/// Worker threads of the internal runtime.
const WORKERS: usize = 2;
/// A lock writer is rebuilt (with a fresh retain-until date) after this long, on the wall
/// clock: the monotonic clock stops while the host is suspended.
const LOCK_REFRESH: Duration = Duration::from_secs(600);
/// Attempts of a create-only put whose connection fails before `object_store` retried it
/// (it does not resend a create whose answer may have been lost), and the waits between
/// them: doubling from the first to the most.
const PUT_ATTEMPTS: u32 = 8;
const PUT_RETRY_FIRST_WAIT: Duration = Duration::from_millis(250);
const PUT_RETRY_MAX_WAIT: Duration = Duration::from_secs(10);
/// After a put failed for the client's whole retry window, later puts are sent once,
/// without retries, for this long or until one succeeds ([`FailedWrite`]).
const HOLD_WRITES: Duration = Duration::from_secs(60);
/// How often an abandonable request (a pack put, a restore's range read) looks whether it
/// was abandoned.
const ABANDON_CHECK: Duration = Duration::from_millis(50);

/// A repository in an S3 bucket (AWS or any S3-compatible server).
///
/// Objects are stored under `PREFIX/<name>`. Puts are single create-only PUTs
/// (`If-None-Match: *`): a second put of a name fails with `AlreadyExists`, never retried.
/// Transient failures (5xx, throttling, connection errors) are retried with exponential
/// backoff by `object_store`'s client, and by `RawClient` for the requests it signs itself.
/// At most 16 requests are in flight at once.
///
/// With a lock policy ([`Backend::enable_lock`]) every put carries Object Lock headers
/// (mode and a retain-until date at least the policy's period ahead), deletes remove the
/// object's version (so a locked one is refused by the server instead of being hidden
/// behind a delete marker), and [`Backend::extend_retention`] sends PutObjectRetention.
#[derive(Debug)]
pub struct S3Backend {
    location: S3Location,
    runtime: Runtime,
    store: Arc<AmazonS3>,
    raw: RawClient,
    permits: Semaphore,
    lock: RwLock<Option<LockWriter>>,
    /// How `object_store` retries failed requests (every store built for this backend).
    retry: RetryConfig,
    /// The store without a lock that sends each request once ([`Writers::single_try`]).
    single_try: Arc<AmazonS3>,
    /// The last put that failed for the client's whole retry window.
    failed_write: FailedWrite,
}

/// The stores a put goes through.
#[derive(Debug, Clone)]
struct Writers {
    /// Retries as [`S3Backend`]'s `retry` says.
    retried: Arc<AmazonS3>,
    /// Sends each request once: for puts while [`FailedWrite`] holds them.
    single_try: Arc<AmazonS3>,
}

/// A put that failed after `object_store` retried it for its whole window: the storage
/// stopped answering (or kept failing). A command whose write failed so is ending (a
/// backup, prune or copy stops at its first failed write), and the writes it still makes
/// on its way out (the index of what it stored, its session's last heartbeat, the audit
/// record) would each wait a window again: for [`HOLD_WRITES`] after the failure every put
/// is sent once, without retries, and the first that succeeds ends the hold. Reads are
/// not held: a restore goes on with the files whose packs it can read, and a short outage
/// costs it only the ones being read meanwhile.
#[derive(Debug, Default)]
struct FailedWrite(Mutex<Option<(Instant, String)>>);

impl FailedWrite {
    fn record(&self, error: &Error) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), error.to_string()));
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long ago the last such failure was, and its message, while it is held.
    fn held(&self) -> Option<(Duration, String)> {
        let failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (when, message) = failed.as_ref()?;
        let age = when.elapsed();
        (age < HOLD_WRITES).then(|| (age, message.clone()))
    }
}

/// The store instance that writes locked objects: its default headers carry the lock.
#[derive(Debug, Clone)]
struct LockWriter {
    policy: LockPolicy,
    writers: Writers,
    /// The retain-until date its requests carry.
    until: SystemTime,
}

impl S3Backend {
    /// Connects to the bucket and checks that it exists and the credentials work; does not
    /// look for a repository.
    pub fn connect(location: S3Location) -> Result<Self> {
        let backend = Self::unprobed(location, default_retry())?;
        backend.probe()?;
        Ok(backend)
    }

    /// The backend for `location`, its requests retried as `retry` says; nothing is sent.
    fn unprobed(location: S3Location, retry: RetryConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("bunker-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the S3 client runtime", e))?;
        let store = Arc::new(build_store(&location, None, &retry)?);
        let single_try = Arc::new(build_store(&location, None, &single_try_retry())?);
        let raw = RawClient::new(Arc::clone(&store), location.clone())?;
        Ok(Self {
            location,
            runtime,
            store,
            raw,
            permits: Semaphore::new(MAX_IN_FLIGHT),
            lock: RwLock::new(None),
            retry,
            single_try,
            failed_write: FailedWrite::default(),
        })
    }

    /// Opens the repository at `location`; fails with `RepositoryNotFound` when there is
    /// no `config` under its prefix.
    pub fn open(location: S3Location) -> Result<Self> {
        let backend = Self::connect(location)?;
        match backend.head("config") {
            Ok(_) => Ok(backend),
            Err(e) if e.is_not_found() => Err(Error::RepositoryNotFound {
                location: backend.location(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Prepares a new repository at `location`; fails with `RepositoryExists` when there is
    /// a `config` under its prefix already.
    pub fn create(location: S3Location) -> Result<Self> {
        let backend = Self::connect(location)?;
        match backend.head("config") {
            Ok(_) => Err(Error::RepositoryExists {
                location: backend.location(),
            }),
            Err(e) if e.is_not_found() => Ok(backend),
            Err(e) => Err(e),
        }
    }

    /// Bucket, prefix and connection settings.
    pub fn s3_location(&self) -> &S3Location {
        &self.location
    }

    /// Version id and lock of the current version of `name`, from a HEAD request.
    pub fn lock_info(&self, name: &str) -> Result<LockInfo> {
        validate_name(name)?;
        self.run(self.raw.head(name))
    }

    /// Deletes one version of `name` (a versioned DELETE, which Object Lock can refuse).
    pub fn delete_version(&self, name: &str, version: &str) -> Result<()> {
        validate_name(name)?;
        self.run(self.raw.delete_version(name, version))
    }

    /// Deletes `name` with a plain DELETE (no version), the way a client other than bunker
    /// could: on a versioned bucket this only hides every version behind a new delete
    /// marker, whose version id is returned. Bunker itself deletes versions
    /// ([`Self::delete_version`]); this exists to prove that the hidden data survives.
    pub fn delete_unversioned(&self, name: &str) -> Result<Option<String>> {
        validate_name(name)?;
        self.run(self.raw.delete_current(name))
    }

    /// Reads one version of `name`, e.g. one hidden behind a delete marker or overwritten.
    pub fn get_version(&self, name: &str, version: &str) -> Result<Vec<u8>> {
        validate_name(name)?;
        let path = self.path(name)?;
        let options = GetOptions {
            version: Some(version.to_owned()),
            ..GetOptions::default()
        };
        self.run(async {
            let result = self.store.get_opts(&path, options).await;
            let bytes = match result {
                Ok(result) => result.bytes().await,
                Err(e) => Err(e),
            };
            bytes
                .map(Vec::from)
                .map_err(|e| self.error(e, "reading", name))
        })
    }

    /// Writes `bytes` under `name` with a plain, unconditional PUT, the way a client other
    /// than bunker could: on a versioned bucket it adds a version and keeps the old one.
    /// Bunker itself never overwrites; this exists to prove that the old version survives.
    pub fn overwrite_unconditionally(&self, name: &str, bytes: &[u8]) -> Result<()> {
        validate_name(name)?;
        let path = self.path(name)?;
        let store = self.writer()?.retried;
        let payload = PutPayload::from(bytes.to_vec());
        self.run(async {
            store
                .put(&path, payload)
                .await
                .map(|_| ())
                .map_err(|e| self.error(e, "writing", name))
        })
    }

    /// Runs `future` on the internal runtime, holding one of the in-flight permits.
    fn run<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        self.runtime.block_on(self.with_permit(future))
    }

    /// [`Self::run`] for a request on `name` that is dropped (its connection closed) once
    /// `abandon`, when given, is set; checked every [`ABANDON_CHECK`].
    fn run_abandoning<T>(
        &self,
        name: &str,
        abandon: Option<&AtomicBool>,
        future: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(abandon) = abandon else {
            return self.run(future);
        };
        self.runtime.block_on(async {
            let mut request = std::pin::pin!(self.with_permit(future));
            loop {
                if abandon.load(Ordering::SeqCst) {
                    return Err(Error::Abandoned {
                        object: format!(
                            "s3://{}/{}",
                            self.location.bucket,
                            self.location.key(name)
                        ),
                    });
                }
                if let Ok(result) = tokio::time::timeout(ABANDON_CHECK, request.as_mut()).await {
                    return result;
                }
            }
        })
    }

    /// `future`, once one of the in-flight permits is free, holding it.
    async fn with_permit<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Invalid("the S3 client was shut down".into()))?;
        future.await
    }

    /// `length` bytes at `offset` of `name`, as [`Backend::get_range`] says; given up once
    /// `abandon`, when given, is set.
    fn read_range(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: Option<&AtomicBool>,
    ) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        let past_end = |size: u64| {
            Error::corrupt(
                name,
                format!(
                    "range of {length} bytes at offset {offset} runs past the end of the \
                     {size}-byte object"
                ),
            )
        };
        let Some(end) = offset.checked_add(length).filter(|_| length > 0) else {
            // S3 cannot read an empty range; the size alone answers.
            let size = self.head(name)?.size;
            return match offset.checked_add(length) {
                Some(end) if end <= size => Ok(Vec::new()),
                _ => Err(past_end(size)),
            };
        };
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..end)),
            ..GetOptions::default()
        };
        let read = self.run_abandoning(name, abandon, async {
            let fetched = async {
                let result = self.store.get_opts(&path, options).await?;
                let size = result.meta.size;
                let bytes = result.bytes().await?;
                Ok::<_, object_store::Error>((size, bytes))
            };
            Ok(fetched.await)
        })?;
        match read {
            Ok((size, _)) if end > size => Err(past_end(size)),
            Ok((_, bytes)) if bytes.len() as u64 == length => Ok(Vec::from(bytes)),
            Ok((size, bytes)) => Err(Error::corrupt(
                name,
                format!(
                    "asked {length} bytes at {offset}, the {size}-byte object gave {}",
                    bytes.len()
                ),
            )),
            Err(e) => {
                let error = self.error(e, "reading", name);
                if error.is_not_found() {
                    return Err(error);
                }
                // An unsatisfiable range: tell past-the-end apart from other failures.
                match self.head(name) {
                    Ok(meta) if end > meta.size => Err(past_end(meta.size)),
                    Err(e) if e.is_not_found() => Err(e),
                    _ => Err(error),
                }
            }
        }
    }

    /// A create-only put of `bytes` as `name`, retried as [`Backend::put_if_absent_owned`]
    /// says; given up once `abandon`, when given, is set.
    fn put_create(&self, name: &str, bytes: Vec<u8>, abandon: Option<&AtomicBool>) -> Result<()> {
        let path = self.path(name)?;
        let held = self.failed_write.held();
        let writers = self.writer()?;
        let (store, attempts) = match held {
            Some(_) => (writers.single_try, 1),
            None => (writers.retried, PUT_ATTEMPTS),
        };
        // The body shares the buffer (retries included); nothing is copied.
        let payload = PutPayload::from(bytes);
        self.run_abandoning(name, abandon, async {
            let mut backoff = Backoff::doubling(PUT_RETRY_FIRST_WAIT, PUT_RETRY_MAX_WAIT);
            for attempt in 1..=attempts {
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let e = match store.put_opts(&path, payload.clone(), options).await {
                    Ok(_) => {
                        if held.is_some() {
                            self.failed_write.clear();
                        }
                        return Ok(());
                    }
                    Err(e) => e,
                };
                let text = error_chain(&e);
                let kind = kind_of(&e, &text);
                // `object_store` may itself have sent the put again after a lost answer, so
                // even a first attempt can find its own object.
                if kind == Kind::AlreadyExists {
                    let stored = match self.store.get_opts(&path, GetOptions::default()).await {
                        Ok(result) => result.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match stored {
                        Ok(Some(stored))
                            if payload
                                .iter()
                                .flat_map(|part| part.iter())
                                .eq(stored.iter()) =>
                        {
                            return Ok(());
                        }
                        // Refused, yet not there: another write of the name is in progress
                        // (S3 answers 409 ConditionalRequestConflict, such as to this put's
                        // own earlier attempt whose connection broke mid-upload and which
                        // the server may still drop). Nothing is stored: try again.
                        Ok(None) if attempt < attempts => {
                            backoff.wait().await;
                            continue;
                        }
                        Ok(None) => {
                            return Err(Error::io(
                                format!(
                                    "writing s3://{}/{}",
                                    self.location.bucket,
                                    self.location.key(name)
                                ),
                                std::io::Error::other(format!(
                                    "refused as existing, yet not stored: another write of \
                                     it is in progress ({})",
                                    one_line(&text)
                                )),
                            ));
                        }
                        // Someone else's object, or one that cannot be read back to compare.
                        Ok(Some(_)) | Err(_) => {}
                    }
                }
                if kind != Kind::Other || attempt == attempts || client_retried(&text) {
                    let error = self.error(e, "writing", name);
                    if client_retried(&text) {
                        self.failed_write.record(&error);
                    }
                    return Err(match &held {
                        Some((age, first)) if kind == Kind::Other => Error::io(
                            format!(
                                "writing s3://{}/{}",
                                self.location.bucket,
                                self.location.key(name)
                            ),
                            std::io::Error::other(format!(
                                "{}; tried once, since a write failed {} s ago after the \
                                 client's retries ({first})",
                                one_line(&text),
                                age.as_secs(),
                            )),
                        ),
                        _ => error,
                    });
                }
                backoff.wait().await;
            }
            Err(Error::io(
                format!("writing {name}"),
                std::io::Error::other("no attempt was made"),
            ))
        })
    }

    /// Lists (at most one key of) the prefix, to surface a missing bucket or bad
    /// credentials. Through [`RawClient`], as [`Backend::list`]: `object_store`'s listing
    /// fails on a key it cannot parse (`p//x`), which anyone allowed to put can store.
    fn probe(&self) -> Result<()> {
        self.run(self.raw.probe(&self.location.key("")))
    }

    /// The path of object `name`.
    fn path(&self, name: &str) -> Result<Path> {
        validate_name(name)?;
        Path::parse(self.location.key(name))
            .map_err(|e| Error::Invalid(format!("invalid object name {name:?}: {e}")))
    }

    /// Maps an `object_store` error on `name` to the repository's error.
    fn error(&self, e: object_store::Error, what: &str, name: &str) -> Error {
        let text = error_chain(&e);
        let kind = kind_of(&e, &text);
        let key = if name.is_empty() {
            self.location.prefix.clone()
        } else {
            self.location.key(name)
        };
        to_error(kind, what, &self.location.bucket, &key, name, &text)
    }

    /// The stores to write with: the lock writer's when a policy is on (rebuilt when its
    /// retain-until date has aged), else the plain ones.
    fn writer(&self) -> Result<Writers> {
        let current = self.lock.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(writer) = current else {
            return Ok(Writers {
                retried: Arc::clone(&self.store),
                single_try: Arc::clone(&self.single_try),
            });
        };
        // Still good while every object it writes stays locked `period` from now. Judged
        // on the wall clock, whose dates the server compares: an `Instant` does not move
        // while a laptop sleeps, and a writer built before a week's sleep would lock the
        // objects written after it a week short.
        if SystemTime::now() + writer.policy.period <= writer.until {
            return Ok(writer.writers);
        }
        let fresh = self.lock_writer(writer.policy, SystemTime::now())?;
        let writers = fresh.writers.clone();
        *self.lock.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        Ok(writers)
    }

    /// A store whose every request carries the lock headers of `policy`, dated so that an
    /// object it writes within [`LOCK_REFRESH`] stays locked at least `policy.period`.
    fn lock_writer(&self, policy: LockPolicy, now: SystemTime) -> Result<LockWriter> {
        let until = now + policy.period + LOCK_REFRESH;
        let lock = Some((policy, until));
        Ok(LockWriter {
            policy,
            writers: Writers {
                retried: Arc::new(build_store(&self.location, lock, &self.retry)?),
                single_try: Arc::new(build_store(&self.location, lock, &single_try_retry())?),
            },
            until,
        })
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.url()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.put_if_absent_owned(name, bytes.to_vec())
    }

    /// A create-only put is not retried by `object_store` after a connection failure
    /// once the request was sent (it is not idempotent), so it is retried here: if an
    /// earlier attempt landed and only its answer was lost, the retry finds the object, and
    /// the write succeeded when the stored bytes are ours. An object found in place is
    /// compared so whatever the attempt. A failure `object_store` already retried for its
    /// whole retry window (a server that stopped answering) is not tried again: eight
    /// windows would keep a command waiting for minutes per object.
    fn put_if_absent_owned(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_create(name, bytes, None)
    }

    /// The put is dropped (its connection closed) within `ABANDON_CHECK` of `abandon`
    /// being set, also while it waits for an in-flight permit or between its retries.
    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        self.put_create(name, bytes, Some(abandon))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        self.run(async {
            let result = match self.store.get_opts(&path, GetOptions::default()).await {
                Ok(result) => result.bytes().await,
                Err(e) => Err(e),
            };
            result
                .map(Vec::from)
                .map_err(|e| self.error(e, "reading", name))
        })
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.read_range(name, offset, length, None)
    }

    /// The request is dropped within `ABANDON_CHECK` of `abandon` being set.
    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        self.read_range(name, offset, length, Some(abandon))
            .map(ReadBytes::from)
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let path = self.path(name)?;
        self.run(async {
            match self.store.head(&path).await {
                Ok(meta) => Ok(ObjectMeta {
                    name: name.to_owned(),
                    size: meta.size,
                    modified: meta.last_modified.into(),
                }),
                Err(e) => Err(self.error(e, "reading metadata of", name)),
            }
        })
    }

    /// Lists through [`RawClient`] (ListObjectsV2), not `object_store`, whose listing fails
    /// as a whole on the first key it cannot parse as a `Path` (an empty, `.` or `..`
    /// segment, a control character): one such key stored by anyone allowed to put would
    /// stop every listing. Keys that are not object names of ours are left out.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let strip = self.location.key("");
        let listed = self.run(self.raw.list(&self.location.key(prefix)))?;
        Ok(listed
            .into_iter()
            .filter_map(|object| {
                let name = object.key.strip_prefix(&strip)?.to_owned();
                let ours = name.starts_with(prefix) && validate_name(&name).is_ok();
                ours.then_some(ObjectMeta {
                    name,
                    size: object.size,
                    modified: object.modified,
                })
            })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let locked = self
            .lock
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if locked {
            // Remove the version itself: a plain DELETE would only hide a locked object
            // behind a delete marker.
            let info = match self.lock_info(name) {
                Ok(info) => info,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            return match info.version {
                Some(version) => self.delete_version(name, &version),
                None => Err(Error::Unsupported {
                    object: self.location(),
                    what: format!("{name} has no version id: the bucket is not versioned"),
                }),
            };
        }
        self.run(async {
            match self.store.delete(&path).await {
                Ok(()) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.error(e, "deleting", name)),
            }
        })
    }

    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        policy.validate()?;
        self.run(self.raw.check_object_lock())?;
        let writer = self.lock_writer(policy, SystemTime::now())?;
        *self.lock.write().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        Ok(())
    }

    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        Ok(self.lock_info(name)?.retain_until)
    }

    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        let info = self.lock_info(name)?;
        if info.retain_until.is_some_and(|current| current >= until) {
            return Ok(());
        }
        let policy = self
            .lock
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.policy);
        let mode = match (info.mode, policy) {
            (Some(mode), _) => mode,
            (None, Some(policy)) => policy.mode.s3_name().to_owned(),
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "{name}: not locked, and no lock mode is enabled to lock it with"
                )));
            }
        };
        let Some(version) = info.version else {
            return Err(Error::Unsupported {
                object: self.location(),
                what: format!("{name} has no version id: the bucket is not versioned"),
            });
        };
        self.run(self.raw.put_retention(name, &version, &mode, until))
    }
}

/// What kind of failure an `object_store` error is, from its variant and `text` (its
/// [`error_chain`]).
fn kind_of(e: &object_store::Error, text: &str) -> Kind {
    let status = match e {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Some(412)
        }
        object_store::Error::Unauthenticated { .. } => Some(401),
        object_store::Error::PermissionDenied { .. } => Some(403),
        _ => None,
    };
    let kind = classify(status, text);
    // A 404 naming the bucket is a missing bucket, not a missing object.
    if kind == Kind::NotFound && text.contains("NoSuchBucket") {
        Kind::NoSuchBucket
    } else {
        kind
    }
}

/// How `object_store` retries a failed request (5xx, throttling, connection failures
/// before the request was sent, and any failure of an idempotent one). It draws each wait
/// at random between the first wait and `base` times the one before: with 4 the waits
/// about double, so ten retries span half a minute to a minute.
fn default_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 4.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// How a held put is sent: once, without retries.
fn single_try_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..default_retry()
    }
}

/// True when `text` (an error's chain) says `object_store` retried the request before it
/// gave up: `... after 10 retries, max_retries: 10, retry_timeout: 180s ...`.
fn client_retried(text: &str) -> bool {
    text.contains(" retries, max_retries: ")
}

/// The message of `e` and of each error it wraps, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Builds an `object_store` S3 client for `location`; with `lock`, every request it sends
/// carries the Object Lock headers for that mode and retain-until date.
fn build_store(
    location: &S3Location,
    lock: Option<(LockPolicy, SystemTime)>,
    retry: &RetryConfig,
) -> Result<AmazonS3> {
    let mut headers = http::HeaderMap::new();
    // Buckets with Object Lock refuse uploads without an integrity checksum.
    headers.insert(
        "x-amz-sdk-checksum-algorithm",
        http::HeaderValue::from_static("SHA256"),
    );
    if let Some((policy, until)) = lock {
        let date = crate::raw::format_date(until);
        let value = |text: &str| {
            http::HeaderValue::from_str(text)
                .map_err(|e| Error::Invalid(format!("lock header {text:?}: {e}")))
        };
        headers.insert("x-amz-object-lock-mode", value(policy.mode.s3_name())?);
        headers.insert("x-amz-object-lock-retain-until-date", value(&date)?);
    }
    let options = ClientOptions::new()
        .with_default_headers(headers)
        .with_allow_http(location.allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(300))
        .with_pool_max_idle_per_host(MAX_IN_FLIGHT);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&location.bucket)
        .with_region(&location.region)
        .with_allow_http(location.allow_http)
        .with_checksum_algorithm(Checksum::SHA256)
        .with_client_options(options)
        .with_retry(retry.clone());
    if let Some(endpoint) = &location.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(id) = &location.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &location.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &location.session_token {
        builder = builder.with_token(token);
    }
    builder.build().map_err(|e| {
        Error::Invalid(format!(
            "S3 settings for {}: {}",
            location.url(),
            error_chain(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::location;

    /// A backend for `port`, on which nothing listens yet, which retries each request for
    /// about a second (its ten retries take about half a minute to a minute by default).
    fn backend_nothing_answers() -> (S3Backend, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: Duration::from_secs(1),
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend =
            S3Backend::unprobed(location(&endpoint, "bucket", "p"), retry).expect("backend");
        (backend, port)
    }

    /// Answers every request on `port` with an empty `200 OK`, as a server that stores
    /// every put would.
    fn serve_ok(port: u16) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the port");
        serve_scripted_on(listener, |_, _| {
            "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n".to_owned()
        });
    }

    #[test]
    fn a_put_the_client_retried_in_vain_is_not_tried_again_and_holds_the_next_puts() {
        let (backend, port) = backend_nothing_answers();
        let started = Instant::now();
        let err = backend
            .put_if_absent("snapshots/aa", b"ours")
            .expect_err("nothing answers");
        let took = started.elapsed();
        assert!(
            err.to_string().contains(" retries, max_retries: "),
            "the client retried: {err}"
        );
        // One retry window (about a second), not eight of them with the waits between
        // them (about half a minute).
        assert!(took < Duration::from_secs(8), "{took:?}: {err}");

        // The next put is sent once, without retries, and its failure names the first.
        let started = Instant::now();
        let next = backend
            .put_if_absent("index/bb", b"ours")
            .expect_err("held");
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let text = next.to_string();
        assert!(text.contains("s3://bucket/p/index/bb"), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
        assert!(
            text.contains("tried once, since a write failed 0 s ago"),
            "{text}"
        );
        assert!(text.contains("snapshots/aa"), "{text}");
        // Reads are still sent (and retried).
        let started = Instant::now();
        let read = backend.get("snapshots/aa").expect_err("nothing answers");
        assert!(started.elapsed() >= Duration::from_millis(500), "{read}");
        assert!(
            read.to_string().contains(" retries, max_retries: "),
            "{read}"
        );

        // A server answers again: the single try succeeds and ends the hold.
        serve_ok(port);
        assert!(backend.failed_write.held().is_some());
        backend
            .put_if_absent("index/cc", b"ours")
            .expect("the server is back");
        assert!(backend.failed_write.held().is_none());
    }

    #[test]
    fn client_retried_reads_object_stores_message() {
        assert!(client_retried(
            "Generic S3 error: Error performing PUT http://h/b/k in 1.2s, after 10 retries, \
             max_retries: 10, retry_timeout: 1s - HTTP error: error sending request"
        ));
        assert!(!client_retried(
            "Generic S3 error: Error performing PUT http://h/b/k in 3ms - HTTP error: \
             error sending request: connection closed before message completed"
        ));
    }

    /// One request a [`serve_scripted`] server received.
    #[derive(Debug, Clone)]
    struct Request {
        method: String,
        /// With its query.
        path: String,
        /// The header lines, lower-cased.
        headers: String,
        body: Vec<u8>,
    }

    /// Serves `answer(request, earlier requests)` (a whole HTTP response) on a fresh port;
    /// returns the port and every request received.
    fn serve_scripted(
        answer: impl Fn(&Request, &[Request]) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<Mutex<Vec<Request>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        (port, serve_scripted_on(listener, answer))
    }

    /// Serves `answer` as [`serve_scripted`] does, on `listener`.
    fn serve_scripted_on(
        listener: std::net::TcpListener,
        answer: impl Fn(&Request, &[Request]) -> String + Send + Sync + 'static,
    ) -> Arc<Mutex<Vec<Request>>> {
        use std::io::{BufRead, BufReader, Read, Write};
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let answer = Arc::new(answer);
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, answer) = (Arc::clone(&log), Arc::clone(&answer));
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    loop {
                        let mut start = String::new();
                        if reader.read_line(&mut start).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = start.split_whitespace();
                        let method = parts.next().unwrap_or_default().to_owned();
                        let path = parts.next().unwrap_or_default().to_owned();
                        let mut length = 0usize;
                        let mut headers = String::new();
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(value) = lower.strip_prefix("content-length:") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                            headers.push_str(&lower);
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let request = Request {
                            method,
                            path,
                            headers,
                            body,
                        };
                        let reply = {
                            let mut seen = seen.lock().unwrap();
                            let reply = answer(&request, &seen);
                            seen.push(request);
                            reply
                        };
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        seen
    }

    /// A whole HTTP response with `status` and an XML `body`.
    fn reply(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: application/xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn a_create_refused_while_another_write_of_the_name_is_in_progress_is_not_taken_as_stored() {
        // S3 answers a conditional PUT with 409 ConditionalRequestConflict while another
        // write of that name is in progress (such as this put's own earlier attempt whose
        // connection broke mid-upload, which the server drops later). Nothing is stored
        // then: reporting AlreadyExists makes a writer take its pack as stored.
        let (port, seen) = serve_scripted(|request, earlier| {
            let puts = earlier.iter().filter(|r| r.method == "PUT").count();
            match request.method.as_str() {
                "PUT" if puts == 0 => reply(
                    "409 Conflict",
                    "",
                    "<Error><Code>ConditionalRequestConflict</Code><Message>A conflicting \
                     conditional operation is currently in progress against this resource. \
                     Try again.</Message></Error>",
                ),
                "PUT" => reply("200 OK", "ETag: \"e\"\r\n", ""),
                _ => reply(
                    "404 Not Found",
                    "",
                    "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>",
                ),
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend = S3Backend::unprobed(location(&endpoint, "bucket", "p"), default_retry())
            .expect("backend");
        let result = backend.put_if_absent("data/ab/abcd", b"pack bytes");
        // Only the second PUT was answered 200: the object is stored only if it was sent.
        let puts = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "PUT" && r.body == b"pack bytes")
            .count();
        let stored = puts >= 2;
        for put in seen.lock().unwrap().iter().filter(|r| r.method == "PUT") {
            assert!(put.path.starts_with("/bucket/p/data/ab/abcd"), "{put:?}");
            assert!(put.headers.contains("if-none-match: *"), "{put:?}");
        }
        assert!(
            result.is_ok() && stored,
            "put: {result:?}; the server holds the object: {stored}"
        );
    }

    /// A bucket's answer to `GET ?object-lock`: Object Lock enabled.
    fn lock_enabled() -> String {
        reply(
            "200 OK",
            "",
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
             </ObjectLockConfiguration>",
        )
    }

    #[test]
    fn a_refused_version_delete_of_an_object_whose_lock_lapsed_is_access_denied_not_locked() {
        // Credentials without s3:DeleteObjectVersion: the server refuses every versioned
        // delete with 403. An object whose lock lapsed long ago is not "locked".
        let (port, _) = serve_scripted(|request, _| match request.method.as_str() {
            "GET" if request.path.contains("object-lock") => lock_enabled(),
            "HEAD" => reply(
                "200 OK",
                "x-amz-version-id: v1\r\nx-amz-object-lock-mode: GOVERNANCE\r\n\
                 x-amz-object-lock-retain-until-date: 2001-01-01T00:00:00.000Z\r\n",
                "",
            ),
            "DELETE" => reply(
                "403 Forbidden",
                "",
                "<Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/b is not \
                 authorized to perform: s3:DeleteObjectVersion</Message></Error>",
            ),
            _ => reply("500 Internal Server Error", "", ""),
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend = S3Backend::unprobed(location(&endpoint, "bucket", "p"), default_retry())
            .expect("backend");
        backend
            .enable_lock(LockPolicy {
                mode: bunker_repo_format::backend::LockMode::Governance,
                period: Duration::from_secs(86_400),
            })
            .expect("lock");
        let err = backend.delete("snapshots/aa").expect_err("refused");
        assert!(!matches!(err, Error::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("access denied") && text.contains("s3://bucket/p/snapshots/aa"),
            "{text}"
        );
    }

    #[test]
    fn a_lock_writer_built_before_the_host_slept_is_rebuilt_with_a_fresh_date() {
        let (port, seen) = serve_scripted(|request, _| match request.method.as_str() {
            "GET" if request.path.contains("object-lock") => lock_enabled(),
            "PUT" => reply("200 OK", "ETag: \"e\"\r\n", ""),
            _ => reply("404 Not Found", "", "<Error><Code>NoSuchKey</Code></Error>"),
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend = S3Backend::unprobed(location(&endpoint, "bucket", "p"), default_retry())
            .expect("backend");
        let policy = LockPolicy {
            mode: bunker_repo_format::backend::LockMode::Compliance,
            period: Duration::from_secs(30 * 86_400),
        };
        backend.enable_lock(policy).expect("lock");
        // The host slept a week right after the writer was built: its date is a week old
        // by the wall clock, while the monotonic clock (which stops in suspend) calls it
        // new.
        let week = Duration::from_secs(7 * 86_400);
        let slept = backend
            .lock_writer(policy, SystemTime::now() - week)
            .expect("writer");
        *backend.lock.write().unwrap() = Some(slept);

        let before = SystemTime::now();
        backend
            .put_if_absent("snapshots/aa", b"snapshot")
            .expect("put");
        let headers = seen
            .lock()
            .unwrap()
            .iter()
            .rfind(|r| r.method == "PUT")
            .map(|r| r.headers.clone())
            .expect("a put");
        let date = headers
            .lines()
            .find_map(|line| line.strip_prefix("x-amz-object-lock-retain-until-date:"))
            .expect("a retain-until date")
            .trim()
            .to_uppercase();
        let until: SystemTime = date.parse::<jiff::Timestamp>().expect("a date").into();
        assert!(
            until >= before + policy.period,
            "locked until {date}: {} days short of the period",
            (before + policy.period)
                .duration_since(until)
                .unwrap_or_default()
                .as_secs()
                / 86_400
        );
    }

    /// A ListObjectsV2 answer with `keys` (URL-encoded), continued at `next` if given.
    fn list_reply(keys: &[&str], next: Option<&str>) -> String {
        let mut body = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bucket</Name>\
             <EncodingType>url</EncodingType>",
        );
        match next {
            Some(token) => body.push_str(&format!(
                "<IsTruncated>true</IsTruncated><NextContinuationToken>{token}\
                 </NextContinuationToken>"
            )),
            None => body.push_str("<IsTruncated>false</IsTruncated>"),
        }
        for key in keys {
            body.push_str(&format!(
                "<Contents><Key>{key}</Key><LastModified>2026-09-21T14:13:21.000Z\
                 </LastModified><ETag>&quot;e&quot;</ETag><Size>3</Size></Contents>"
            ));
        }
        body.push_str("</ListBucketResult>");
        reply("200 OK", "", &body)
    }

    #[test]
    fn a_listing_pages_on_with_the_token_and_leaves_out_keys_that_are_not_names() {
        let (port, seen) = serve_scripted(|request, _| {
            if request.path.contains("continuation-token=a%2Fb%2Bc%3D%3D") {
                list_reply(&["p/data/cd/two", "p/data/./x"], None)
            } else {
                list_reply(
                    &[
                        "p/data//stray",
                        "p/data/ab/one",
                        "p/data/ab/ctl%01",
                        "p/datum",
                    ],
                    Some("a/b+c=="),
                )
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend = S3Backend::unprobed(location(&endpoint, "bucket", "p"), default_retry())
            .expect("backend");
        let listed = backend.list("data/").expect("listed");
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["data/ab/one", "data/cd/two"]);
        assert_eq!(listed[0].size, 3);
        assert_eq!(
            listed[0].modified,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_001)
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for request in seen.iter() {
            assert_eq!(request.method, "GET");
            assert!(request.path.starts_with("/bucket/?"), "{request:?}");
            for part in ["list-type=2", "encoding-type=url", "prefix=p%2Fdata%2F"] {
                assert!(request.path.contains(part), "{part}: {request:?}");
            }
        }
    }

    #[test]
    fn a_refused_or_endless_listing_is_a_one_line_error_naming_bucket_and_prefix() {
        let (port, _) = serve_scripted(|request, _| {
            if request.path.contains("prefix=p%2Fsnapshots%2F") {
                reply(
                    "403 Forbidden",
                    "",
                    "<Error><Code>AccessDenied</Code>\n<Message>not allowed: \
                     s3:ListBucket</Message></Error>",
                )
            } else if request.path.contains("prefix=p%2Fdata%2F") {
                list_reply(&["p/data/ab/one"], Some("same"))
            } else if request.path.contains("prefix=p%2Findex%2F") {
                reply("200 OK", "", "<html>a captive portal</html>")
            } else {
                reply(
                    "404 Not Found",
                    "",
                    "<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>",
                )
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let backend = S3Backend::unprobed(location(&endpoint, "bucket", "p"), default_retry())
            .expect("backend");
        let err = backend.list("snapshots/").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "listing s3://bucket/p/snapshots: access denied by the server (HTTP 403: \
             <Error><Code>AccessDenied</Code> <Message>not allowed: s3:ListBucket</Message>\
             </Error>)"
        );
        let err = backend.list("data/").expect_err("the same token again");
        let text = err.to_string();
        assert!(
            text.starts_with("listing s3://bucket/p/data: ") && text.contains("\"same\""),
            "{text}"
        );
        let err = backend.list("index/").expect_err("not a listing");
        let text = err.to_string();
        assert!(
            text.starts_with("listing s3://bucket/p/index: unreadable listing"),
            "{text}"
        );
        let err = backend.probe().expect_err("no bucket");
        assert_eq!(
            err.to_string(),
            "listing s3://bucket/p: bucket bucket does not exist (or is in another region \
             than AWS_REGION)"
        );
    }
}
