//! Backup policies as code: the agent's TOML policy file, workload templates, and the
//! validation behind `bunker policy check`.
//!
//! [`Policy::parse`] reads a file into [`Policy`], applying templates and checking every
//! value; every problem found is reported with its line, column and key, not just the
//! first. [`Policy::effective_toml`] prints the policy as the agent will run it.

mod drills;
mod raw;
mod template;
mod toml_problems;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bunker_repo_format::backend::BandwidthLimits;
use bunker_repo_format::retention::{RetentionPolicy, parse_duration};
use toml::Spanned;

use crate::backup::{ChangeDetection, FixedChunks, TagFile};
use crate::schedule::Schedule;
pub use drills::{Database, VerifySettings};
use raw::{RawPolicy, RawQuiesce, RawRetention, RawSource};
pub use template::TEMPLATE_NAMES;

/// Where the policy file lives unless `--config` says otherwise.
pub const DEFAULT_POLICY_PATH: &str = "/etc/bunker/agent.toml";

/// The agent's whole policy, templates applied and every value checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Agent-wide settings.
    pub agent: AgentSettings,
    /// The repository every source backs up into.
    pub repository: RepositorySettings,
    /// Where metrics go.
    pub metrics: MetricsSettings,
    /// What to back up, in file order.
    pub sources: Vec<Source>,
    /// The file after templates, as TOML (what `policy show` prints).
    effective: String,
}

/// `[agent]`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Host name recorded in snapshots (default: the machine's).
    pub host: Option<String>,
    /// Where the agent keeps its schedule state and drill records.
    pub state_dir: PathBuf,
    /// Directories self-service restores may write into (empty: anywhere).
    pub restore_roots: Vec<PathBuf>,
    /// Time zone schedules are read in (default: the system's).
    pub time_zone: Option<String>,
    /// How long a graceful shutdown waits for running jobs before cancelling them.
    pub shutdown_timeout: Duration,
}

/// `[repository]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySettings {
    /// A local directory or `s3://bucket/prefix`.
    pub url: String,
    /// How the agent unlocks it.
    pub credentials: Credentials,
    /// Bytes per second the agent writes to it and reads from it at most (`limit_upload`,
    /// `limit_download`; see `bunker --limit-upload`).
    pub limits: BandwidthLimits,
}

/// How the agent unlocks the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The first line of this file is the password.
    PasswordFile(PathBuf),
    /// This shell command prints the password.
    PasswordCommand(String),
    /// A key file (e.g. a put-only key).
    KeyFile(PathBuf),
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Serve Prometheus metrics over HTTP here.
    pub listen: Option<SocketAddr>,
    /// Write Prometheus metrics to this file (node_exporter's textfile collector).
    pub textfile: Option<PathBuf>,
}

/// One `[[source]]`, resolved.
#[derive(Debug, Clone)]
pub struct Source {
    /// Unique name; snapshots get the tag `source=<name>`.
    pub name: String,
    /// The template it started from, if any.
    pub template: Option<String>,
    /// What it backs up.
    pub kind: SourceKind,
    /// For a `command` source: the database it dumps (`database = "postgresql"`), which
    /// makes its drills restore the dump into a temporary server.
    pub database: Option<Database>,
    /// When it runs.
    pub schedule: Schedule,
    /// A random delay of up to this much before each run, so a fleet does not start at once.
    pub jitter: Duration,
    /// A run that takes longer is cancelled and fails.
    pub timeout: Duration,
    /// Tags for every snapshot (`source` is added).
    pub tags: BTreeMap<String, String>,
    /// Commands run before and after the backup.
    pub hooks: Hooks,
    /// How the data is made consistent first.
    pub quiesce: Quiesce,
    /// Retention rules (`forget`), applied after a backup only when `forget` is set.
    pub retention: Option<RetentionPolicy>,
    /// Whether the agent applies `retention` itself (it needs a full key for that).
    pub forget: bool,
    /// Recovery point objective: the newest snapshot should never be older.
    pub rpo: Option<Duration>,
    /// Restore drills.
    pub verify: Option<VerifySettings>,
}

/// What a source backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Files and directories.
    Paths {
        /// Absolute paths.
        paths: Vec<PathBuf>,
        /// Exclude patterns.
        excludes: Vec<String>,
        /// Stay on each path's filesystem (`one_file_system`; see `backup --one-file-system`).
        one_file_system: bool,
        /// Directories holding one of these files are left out (`exclude_if_present`, and
        /// `CACHEDIR.TAG` with `exclude_caches`).
        exclude_if_present: Vec<TagFile>,
        /// Regular files larger than this many bytes are left out (`exclude_larger_than`).
        exclude_larger_than: Option<u64>,
        /// Files read are cut into fixed chunks of this size (`fixed_chunks`; see `backup
        /// --fixed-chunks`).
        fixed_chunks: Option<FixedChunks>,
        /// Raw disk images are cut by content too (`images_by_content`; see `backup
        /// --images-by-content`).
        images_by_content: bool,
        /// How an unchanged file is told (`ignore_inode`, `ignore_ctime`; see `backup
        /// --ignore-inode`).
        change_detection: ChangeDetection,
    },
    /// A block device or disk image.
    Volume {
        /// The device or image file.
        device: PathBuf,
    },
    /// A program whose standard output is the data, stored as the file `/<source name>`.
    Command {
        /// Run with `/bin/sh -c`.
        command: String,
        /// Extra environment for it.
        env: BTreeMap<String, String>,
    },
}

impl SourceKind {
    /// `paths`, `volume` or `command`.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Paths { .. } => "paths",
            SourceKind::Volume { .. } => "volume",
            SourceKind::Command { .. } => "command",
        }
    }
}

/// Commands around a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Runs first; a failure fails the run (nothing is backed up).
    pub pre: Option<String>,
    /// Runs last, whatever happened; its failure is reported.
    pub post: Option<String>,
    /// Each hook is killed after this long.
    pub timeout: Duration,
}

/// How a source is made consistent before it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quiesce {
    /// Nothing: the snapshot is crash-consistent at best.
    None,
    /// `fsfreeze` this mounted filesystem for the duration of the backup.
    Fsfreeze(PathBuf),
    /// Take a read-only btrfs snapshot of this subvolume and back up from it.
    BtrfsSnapshot(PathBuf),
    /// Application hooks (e.g. a database's backup mode): pre before, post after.
    Commands {
        /// Puts the application into a consistent state.
        pre: String,
        /// Releases it.
        post: Option<String>,
        /// Each command is killed after this long.
        timeout: Duration,
    },
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line, 0 when the problem has no place in the file (e.g. a missing section).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key, as a path (`source[2].schedule`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a policy file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyErrors {
    /// The file, as given.
    pub file: String,
    /// In file order.
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {error}", self.file)?;
        }
        Ok(())
    }
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a valid policy.
    #[error("{0}")]
    Invalid(#[from] PolicyErrors),
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        // Not UTF-8 is a policy problem (TOML is UTF-8), with its place.
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            PolicyErrors {
                file: path.display().to_string(),
                errors: vec![PolicyError {
                    line,
                    column,
                    key: String::new(),
                    message: "not UTF-8 text (a TOML file must be UTF-8)".into(),
                }],
            }
        })?;
        Ok(Policy::parse(&text, &path.display().to_string())?)
    }

    /// Parses and checks policy text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyErrors> {
        let mut checker = Checker {
            text,
            errors: Vec::new(),
        };
        // TOML-level problems are all reported, but not what follows from them: the checks
        // below would only repeat them as missing keys.
        let raw: RawPolicy = match toml_problems::deserialize(text) {
            Ok(raw) => raw,
            Err(problems) => {
                for problem in problems {
                    checker.at(problem.span, &problem.key, problem.message);
                }
                return Err(checker.into_errors(file));
            }
        };
        let policy = checker.policy(&raw);
        match policy {
            Some(policy) if checker.errors.is_empty() => Ok(policy),
            _ => Err(checker.into_errors(file)),
        }
    }

    /// What the policy names on this host that will not work: a password or key file that
    /// cannot be read, or a put-only key file for sources with restore drills (a drill
    /// reads snapshots). Each is `KEY: problem`. `bunker policy check` warns of them.
    pub fn host_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.repository.credentials {
            Credentials::PasswordFile(path) => {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(format!(
                        "repository.password_file: {} cannot be read: {e}",
                        path.display()
                    ));
                }
            }
            Credentials::KeyFile(path) => match bunker_repo_format::keyfile::KeyFile::read(path) {
                Err(e) => problems.push(format!("repository.key_file: {e}")),
                Ok(key_file) if key_file.key.is_put_only() => {
                    let drilled: Vec<&str> = self
                        .sources
                        .iter()
                        .filter(|s| s.verify.is_some())
                        .map(|s| s.name.as_str())
                        .collect();
                    if !drilled.is_empty() {
                        problems.push(format!(
                            "repository.key_file: {} is a put-only key, which cannot read \
                             snapshots, and source(s) {} have restore drills (verify): use a \
                             full key here, or drill from a host that has one",
                            path.display(),
                            drilled.join(", ")
                        ));
                    }
                }
                Ok(_) => {}
            },
            Credentials::PasswordCommand(_) => {}
        }
        problems
    }

    /// The policy as TOML with every template applied: what the agent will do.
    pub fn effective_toml(&self) -> &str {
        &self.effective
    }

    /// The source called `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Collects errors while resolving the raw file.
struct Checker<'a> {
    text: &'a str,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        (line, column)
    }

    fn at(&mut self, span: Range<usize>, key: &str, message: String) {
        let (line, column) = if span == (0..0) {
            (0, 0)
        } else {
            self.line_column(span.start)
        };
        self.errors.push(PolicyError {
            line,
            column,
            key: key.to_owned(),
            message,
        });
    }

    /// An error about `value`, or about `fallback` when the value came from a template.
    fn on<T>(&mut self, value: &Spanned<T>, fallback: Range<usize>, key: &str, message: String) {
        let span = if value.span() == (0..0) {
            fallback
        } else {
            value.span()
        };
        self.at(span, key, message);
    }

    fn into_errors(mut self, file: &str) -> PolicyErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        PolicyErrors {
            file: file.to_owned(),
            errors: self.errors,
        }
    }

    fn duration(
        &mut self,
        value: Option<&Spanned<String>>,
        fallback: Range<usize>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        match parse_policy_duration(value.get_ref()) {
            Ok(d) => d,
            Err(message) => {
                self.on(value, fallback, key, message);
                default
            }
        }
    }

    /// A duration that limits a run: zero would stop it at once.
    fn timeout(
        &mut self,
        value: Option<&Spanned<String>>,
        fallback: Range<usize>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let timeout = self.duration(value, fallback.clone(), key, default);
        if timeout.is_zero()
            && let Some(value) = value
        {
            self.on(
                value,
                fallback,
                key,
                "a timeout of 0 would stop every run at once".into(),
            );
        }
        timeout
    }

    fn absolute_path(
        &mut self,
        value: &Spanned<String>,
        fallback: Range<usize>,
        key: &str,
    ) -> PathBuf {
        let path = PathBuf::from(value.get_ref());
        if !path.is_absolute() {
            self.on(
                value,
                fallback,
                key,
                format!("{:?} must be an absolute path", value.get_ref()),
            );
        } else if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            // A backup resolves `..` by name, so the path compared here (to a btrfs
            // subvolume, a mount point) would not be the one read.
            self.on(
                value,
                fallback,
                key,
                format!(
                    "{:?} must not contain \"..\": write the path it leads to",
                    value.get_ref()
                ),
            );
        }
        path
    }

    fn policy(&mut self, raw: &RawPolicy) -> Option<Policy> {
        let agent = self.agent(raw);
        let repository = self.repository(raw);
        let metrics = self.metrics(raw);
        let mut sources = Vec::new();
        let mut effective_sources = Vec::new();
        let mut names = BTreeSet::new();
        for (i, spanned) in raw.sources.iter().enumerate() {
            let key = format!("source[{}]", i + 1);
            let merged = self.with_template(spanned, &key);
            if let Some(name) = &merged.name
                && !names.insert(name.get_ref().clone())
            {
                self.at(
                    name.span(),
                    &format!("{key}.name"),
                    format!("a source named {:?} is already defined", name.get_ref()),
                );
            }
            if let Some(source) = self.source(&merged, spanned.span(), &key) {
                sources.push(source);
            }
            effective_sources.push(merged);
        }
        let effective = RawPolicy {
            agent: raw.agent.clone(),
            repository: raw.repository.clone(),
            metrics: raw.metrics.clone(),
            sources: effective_sources
                .into_iter()
                .map(|s| Spanned::new(0..0, s))
                .collect(),
        };
        let effective = toml::to_string(&effective).unwrap_or_default();
        Some(Policy {
            agent,
            repository: repository?,
            metrics,
            sources,
            effective,
        })
    }

    fn agent(&mut self, raw: &RawPolicy) -> AgentSettings {
        let default = RawAgentDefaults::default();
        let Some(agent) = &raw.agent else {
            return default.settings();
        };
        let state_dir = match &agent.state_dir {
            Some(dir) => self.absolute_path(dir, 0..0, "agent.state_dir"),
            None => default.state_dir.clone(),
        };
        let restore_roots = match &agent.restore_roots {
            Some(roots) => roots
                .get_ref()
                .iter()
                .map(|root| {
                    let value = Spanned::new(roots.span(), root.clone());
                    self.absolute_path(&value, 0..0, "agent.restore_roots")
                })
                .collect(),
            None => Vec::new(),
        };
        if let Some(zone) = &agent.time_zone
            && jiff::tz::TimeZone::get(zone.get_ref()).is_err()
        {
            self.on(
                zone,
                0..0,
                "agent.time_zone",
                format!("unknown time zone {:?}", zone.get_ref()),
            );
        }
        AgentSettings {
            host: agent.host.as_ref().map(|h| h.get_ref().clone()),
            state_dir,
            restore_roots,
            time_zone: agent.time_zone.as_ref().map(|z| z.get_ref().clone()),
            shutdown_timeout: self.duration(
                agent.shutdown_timeout.as_ref(),
                0..0,
                "agent.shutdown_timeout",
                default.shutdown_timeout,
            ),
        }
    }

    fn repository(&mut self, raw: &RawPolicy) -> Option<RepositorySettings> {
        let Some(repository) = &raw.repository else {
            self.at(
                0..0,
                "repository",
                "the [repository] section is missing".into(),
            );
            return None;
        };
        let span = repository.span();
        let repository = repository.get_ref();
        let Some(url) = &repository.url else {
            self.at(
                span,
                "repository.url",
                "missing (a directory or s3://bucket/prefix)".into(),
            );
            return None;
        };
        if url.get_ref().trim().is_empty() {
            self.on(
                url,
                span.clone(),
                "repository.url",
                "must not be empty".into(),
            );
        }
        let given: Vec<Credentials> = [
            repository
                .password_file
                .as_ref()
                .map(|f| Credentials::PasswordFile(f.get_ref().into())),
            repository
                .password_command
                .as_ref()
                .map(|c| Credentials::PasswordCommand(c.get_ref().clone())),
            repository
                .key_file
                .as_ref()
                .map(|f| Credentials::KeyFile(f.get_ref().into())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            self.at(
                span,
                "repository",
                "give exactly one of password_file, password_command and key_file".into(),
            );
            return None;
        }
        let mut rate = |value: &Option<Spanned<String>>, key: &str| {
            let value = value.as_ref()?;
            parse_policy_rate(value.get_ref())
                .map_err(|e| self.on(value, span.clone(), key, e))
                .ok()
        };
        let limits = BandwidthLimits {
            upload: rate(&repository.limit_upload, "repository.limit_upload"),
            download: rate(&repository.limit_download, "repository.limit_download"),
        };
        Some(RepositorySettings {
            url: url.get_ref().clone(),
            credentials: given.into_iter().next()?,
            limits,
        })
    }

    fn metrics(&mut self, raw: &RawPolicy) -> MetricsSettings {
        let Some(metrics) = &raw.metrics else {
            return MetricsSettings::default();
        };
        let listen = metrics.listen.as_ref().and_then(|listen| {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.on(
                        listen,
                        0..0,
                        "metrics.listen",
                        format!("{:?} is not an address:port", listen.get_ref()),
                    );
                    None
                }
            }
        });
        let textfile = metrics
            .textfile
            .as_ref()
            .map(|f| self.absolute_path(f, 0..0, "metrics.textfile"));
        MetricsSettings { listen, textfile }
    }

    fn with_template(&mut self, spanned: &Spanned<RawSource>, key: &str) -> RawSource {
        let source = spanned.get_ref();
        let Some(name) = &source.template else {
            return source.clone();
        };
        match template::template(name.get_ref()) {
            Some(defaults) => template::apply(source, defaults),
            None => {
                self.on(
                    name,
                    spanned.span(),
                    &format!("{key}.template"),
                    format!(
                        "unknown template {:?} (known: {})",
                        name.get_ref(),
                        TEMPLATE_NAMES.join(", ")
                    ),
                );
                source.clone()
            }
        }
    }

    fn source(&mut self, raw: &RawSource, span: Range<usize>, key: &str) -> Option<Source> {
        let field = |name: &str| format!("{key}.{name}");
        let name = match &raw.name {
            Some(name) => {
                let valid = !name.get_ref().is_empty()
                    && name
                        .get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && !name.get_ref().starts_with('.');
                if !valid {
                    self.on(
                        name,
                        span.clone(),
                        &field("name"),
                        format!(
                            "{:?} is not a valid name (letters, digits, '.', '_', '-')",
                            name.get_ref()
                        ),
                    );
                }
                name.get_ref().clone()
            }
            None => {
                self.at(span.clone(), key, "missing name".into());
                String::new()
            }
        };
        let kind = self.kind(raw, span.clone(), key)?;
        let schedule = match &raw.schedule {
            Some(text) => match Schedule::parse(text.get_ref()) {
                Ok(schedule) if schedule.next_after(&jiff::Zoned::now()).is_none() => {
                    self.on(
                        text,
                        span.clone(),
                        &field("schedule"),
                        "never fires (no such day in the next eight years)".into(),
                    );
                    None
                }
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    self.on(text, span.clone(), &field("schedule"), e.reason);
                    None
                }
            },
            None => {
                self.at(
                    span.clone(),
                    &field("schedule"),
                    "missing (a cron expression, or use a template)".into(),
                );
                None
            }
        };
        let jitter = self.duration(
            raw.jitter.as_ref(),
            span.clone(),
            &field("jitter"),
            Duration::ZERO,
        );
        let timeout = self.timeout(
            raw.timeout.as_ref(),
            span.clone(),
            &field("timeout"),
            Duration::from_secs(4 * 3600),
        );
        let mut tags = BTreeMap::new();
        if let Some(given) = &raw.tags {
            for (k, v) in given.get_ref() {
                if k.is_empty() || k == "source" {
                    self.on(
                        given,
                        span.clone(),
                        &field("tags"),
                        format!("tag key {k:?} is reserved or empty"),
                    );
                }
                tags.insert(k.clone(), v.clone());
            }
        }
        tags.insert("source".to_owned(), name.clone());
        let hooks = match &raw.hooks {
            Some(hooks) => {
                let h = hooks.get_ref();
                Hooks {
                    pre: h.pre.as_ref().map(|c| c.get_ref().clone()),
                    post: h.post.as_ref().map(|c| c.get_ref().clone()),
                    timeout: self.timeout(
                        h.timeout.as_ref(),
                        hooks.span(),
                        &field("hooks.timeout"),
                        DEFAULT_HOOK_TIMEOUT,
                    ),
                }
            }
            None => Hooks {
                timeout: DEFAULT_HOOK_TIMEOUT,
                ..Hooks::default()
            },
        };
        let quiesce = match &raw.quiesce {
            Some(q) => self.quiesce(q, &kind, &field("quiesce")),
            None => Quiesce::None,
        };
        let retention = raw
            .retention
            .as_ref()
            .and_then(|r| self.retention(r, span.clone(), &field("retention")));
        let forget = raw.forget.as_ref().is_some_and(|f| *f.get_ref());
        if forget && retention.is_none() {
            let at = raw.forget.as_ref().map_or(span.clone(), |f| f.span());
            self.at(
                at,
                &field("forget"),
                "forget = true needs a retention table".into(),
            );
        }
        let rpo = raw
            .rpo
            .as_ref()
            .map(|r| self.duration(Some(r), span.clone(), &field("rpo"), Duration::ZERO));
        let database = self.database(raw, &kind, span.clone(), key);
        let verify = raw
            .verify
            .as_ref()
            .and_then(|v| self.verify(v, &kind, database, span.clone(), key));
        Some(Source {
            name,
            template: raw.template.as_ref().map(|t| t.get_ref().clone()),
            kind,
            database,
            schedule: schedule?,
            jitter,
            timeout,
            tags,
            hooks,
            quiesce,
            retention,
            forget,
            rpo,
            verify,
        })
    }

    fn kind(&mut self, raw: &RawSource, span: Range<usize>, key: &str) -> Option<SourceKind> {
        let field = |name: &str| format!("{key}.{name}");
        let Some(kind) = &raw.kind else {
            self.at(
                span,
                &field("kind"),
                "missing (paths, volume or command; or use a template)".into(),
            );
            return None;
        };
        // Keys that belong to another kind are mistakes, not silently ignored.
        let foreign: Vec<(&str, Option<Range<usize>>)> = vec![
            ("paths", raw.paths.as_ref().map(Spanned::span)),
            ("excludes", raw.excludes.as_ref().map(Spanned::span)),
            (
                "one_file_system",
                raw.one_file_system.as_ref().map(Spanned::span),
            ),
            (
                "exclude_if_present",
                raw.exclude_if_present.as_ref().map(Spanned::span),
            ),
            (
                "exclude_caches",
                raw.exclude_caches.as_ref().map(Spanned::span),
            ),
            (
                "exclude_larger_than",
                raw.exclude_larger_than.as_ref().map(Spanned::span),
            ),
            ("fixed_chunks", raw.fixed_chunks.as_ref().map(Spanned::span)),
            ("ignore_inode", raw.ignore_inode.as_ref().map(Spanned::span)),
            ("ignore_ctime", raw.ignore_ctime.as_ref().map(Spanned::span)),
            (
                "images_by_content",
                raw.images_by_content.as_ref().map(Spanned::span),
            ),
            ("device", raw.device.as_ref().map(Spanned::span)),
            ("command", raw.command.as_ref().map(Spanned::span)),
            ("env", raw.env.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "paths" => &[
                "paths",
                "excludes",
                "one_file_system",
                "exclude_if_present",
                "exclude_caches",
                "exclude_larger_than",
                "fixed_chunks",
                "ignore_inode",
                "ignore_ctime",
                "images_by_content",
            ],
            "volume" => &["device"],
            "command" => &["command", "env"],
            other => {
                self.on(
                    kind,
                    span,
                    &field("kind"),
                    format!("unknown kind {other:?} (paths, volume or command)"),
                );
                return None;
            }
        };
        for (name, at) in foreign {
            if let Some(at) = at
                && !allowed.contains(&name)
                && at != (0..0)
            {
                self.at(
                    at,
                    &field(name),
                    format!("does not apply to a {} source", kind.get_ref()),
                );
            }
        }
        let missing = |checker: &mut Self, name: &str, what: &str| {
            checker.at(span.clone(), &field(name), format!("missing ({what})"));
        };
        match kind.get_ref().as_str() {
            "paths" => {
                let Some(paths) = &raw.paths else {
                    missing(self, "paths", "the directories to back up");
                    return None;
                };
                if paths.get_ref().is_empty() {
                    self.on(
                        paths,
                        span.clone(),
                        &field("paths"),
                        "must not be empty".into(),
                    );
                }
                let resolved = paths
                    .get_ref()
                    .iter()
                    .map(|p| {
                        let value = Spanned::new(paths.span(), p.clone());
                        self.absolute_path(&value, span.clone(), &field("paths"))
                    })
                    .collect();
                Some(SourceKind::Paths {
                    paths: resolved,
                    excludes: raw
                        .excludes
                        .as_ref()
                        .map(|e| e.get_ref().clone())
                        .unwrap_or_default(),
                    one_file_system: flag(&raw.one_file_system),
                    exclude_if_present: TagFile::list(
                        raw.exclude_if_present.iter().flat_map(|n| n.get_ref()),
                        raw.exclude_caches.as_ref().is_some_and(|c| *c.get_ref()),
                    ),
                    exclude_larger_than: raw.exclude_larger_than.as_ref().and_then(|size| {
                        parse_policy_size(size.get_ref())
                            .map_err(|e| {
                                self.on(size, span.clone(), &field("exclude_larger_than"), e);
                            })
                            .ok()
                    }),
                    fixed_chunks: raw.fixed_chunks.as_ref().and_then(|size| {
                        parse_policy_size(size.get_ref())
                            .and_then(|bytes| FixedChunks::new(bytes).map_err(|e| e.to_string()))
                            .map_err(|e| {
                                self.on(size, span.clone(), &field("fixed_chunks"), e);
                            })
                            .ok()
                    }),
                    images_by_content: flag(&raw.images_by_content),
                    change_detection: ChangeDetection {
                        read_all: false,
                        ignore_inode: flag(&raw.ignore_inode),
                        ignore_ctime: flag(&raw.ignore_ctime),
                    },
                })
            }
            "volume" => {
                let Some(device) = &raw.device else {
                    missing(self, "device", "a block device or image file");
                    return None;
                };
                Some(SourceKind::Volume {
                    device: self.absolute_path(device, span.clone(), &field("device")),
                })
            }
            _ => {
                let Some(command) = &raw.command else {
                    missing(self, "command", "the program whose output is backed up");
                    return None;
                };
                if command.get_ref().trim().is_empty() {
                    self.on(
                        command,
                        span.clone(),
                        &field("command"),
                        "must not be empty".into(),
                    );
                }
                Some(SourceKind::Command {
                    command: command.get_ref().clone(),
                    env: raw
                        .env
                        .as_ref()
                        .map(|e| e.get_ref().clone())
                        .unwrap_or_default(),
                })
            }
        }
    }

    fn quiesce(&mut self, q: &Spanned<RawQuiesce>, kind: &SourceKind, key: &str) -> Quiesce {
        let span = q.span();
        let raw = q.get_ref();
        let methods = [
            raw.fsfreeze.is_some(),
            raw.btrfs_snapshot.is_some(),
            raw.pre.is_some(),
        ]
        .iter()
        .filter(|m| **m)
        .count();
        if methods != 1 {
            self.at(
                span,
                key,
                "give exactly one of fsfreeze, btrfs_snapshot or pre (with optional post)".into(),
            );
            return Quiesce::None;
        }
        if let Some(mount) = &raw.fsfreeze {
            return Quiesce::Fsfreeze(self.absolute_path(mount, span, &format!("{key}.fsfreeze")));
        }
        if let Some(subvolume) = &raw.btrfs_snapshot {
            if !matches!(kind, SourceKind::Paths { .. }) {
                self.on(
                    subvolume,
                    span.clone(),
                    &format!("{key}.btrfs_snapshot"),
                    "applies to paths sources only".into(),
                );
            }
            let subvolume_path =
                self.absolute_path(subvolume, span.clone(), &format!("{key}.btrfs_snapshot"));
            if let SourceKind::Paths { paths, .. } = kind
                && let Some(outside) = paths.iter().find(|p| !p.starts_with(&subvolume_path))
            {
                self.on(
                    subvolume,
                    span,
                    &format!("{key}.btrfs_snapshot"),
                    format!(
                        "path {} is not inside the subvolume {}: it would be read live",
                        outside.display(),
                        subvolume_path.display()
                    ),
                );
            }
            return Quiesce::BtrfsSnapshot(subvolume_path);
        }
        let timeout = self.timeout(
            raw.timeout.as_ref(),
            span.clone(),
            &format!("{key}.timeout"),
            DEFAULT_HOOK_TIMEOUT,
        );
        Quiesce::Commands {
            pre: raw
                .pre
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_default(),
            post: raw.post.as_ref().map(|p| p.get_ref().clone()),
            timeout,
        }
    }

    fn retention(
        &mut self,
        r: &Spanned<RawRetention>,
        fallback: Range<usize>,
        key: &str,
    ) -> Option<RetentionPolicy> {
        let raw = r.get_ref();
        let mut duration = |text: &Option<Spanned<String>>, name: &str| {
            let text = text.as_ref()?;
            match parse_duration(text.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    let at = format!("{key}.{name}");
                    self.on(text, fallback.clone(), &at, e.to_string());
                    None
                }
            }
        };
        let keep_within = duration(&raw.keep_within, "keep_within");
        let keep_within_hourly = duration(&raw.keep_within_hourly, "keep_within_hourly");
        let keep_within_daily = duration(&raw.keep_within_daily, "keep_within_daily");
        let keep_within_weekly = duration(&raw.keep_within_weekly, "keep_within_weekly");
        let keep_within_monthly = duration(&raw.keep_within_monthly, "keep_within_monthly");
        let keep_within_yearly = duration(&raw.keep_within_yearly, "keep_within_yearly");
        let policy = RetentionPolicy {
            keep_last: raw.keep_last,
            keep_hourly: raw.keep_hourly,
            keep_daily: raw.keep_daily,
            keep_weekly: raw.keep_weekly,
            keep_monthly: raw.keep_monthly,
            keep_yearly: raw.keep_yearly,
            keep_within,
            keep_within_hourly,
            keep_within_daily,
            keep_within_weekly,
            keep_within_monthly,
            keep_within_yearly,
            keep_tags: raw
                .keep_tags
                .as_ref()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            keep_min: raw.keep_min.unwrap_or(1),
        };
        if let Err(e) = policy.check() {
            self.on(r, fallback, key, e.to_string());
            return None;
        }
        Some(policy)
    }
}

const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Defaults of `[agent]`.
struct RawAgentDefaults {
    state_dir: PathBuf,
    shutdown_timeout: Duration,
}

impl Default for RawAgentDefaults {
    fn default() -> Self {
        RawAgentDefaults {
            state_dir: PathBuf::from("/var/lib/bunker/agent"),
            shutdown_timeout: Duration::from_secs(60),
        }
    }
}

impl RawAgentDefaults {
    fn settings(&self) -> AgentSettings {
        AgentSettings {
            host: None,
            state_dir: self.state_dir.clone(),
            restore_roots: Vec::new(),
            time_zone: None,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// The value of a boolean key, false when it is not set.
fn flag(value: &Option<Spanned<bool>>) -> bool {
    value.as_ref().is_some_and(|flag| *flag.get_ref())
}

/// A size in bytes: `500M`, `10G`, `1T` (powers of 1024; `MiB`, `GB` and the like too), or a
/// plain number of bytes.
pub fn parse_policy_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let value: f64 = match number.trim().parse() {
        Ok(value) if f64::is_finite(value) && value >= 0.0 => value,
        _ => return Err(format!("{text:?} is not a size (e.g. 500M, 10G)")),
    };
    let exponent = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    Ok((value * 1024f64.powi(exponent)) as u64)
}

/// A transfer rate in bytes per second: a size per second with its unit (`500K`, `10M`,
/// `1.5MiB/s`; powers of 1024). A bare number is refused: restic reads `--limit-upload
/// 1024` as KiB, a size here is bytes, and a limit a thousand times off is worse than
/// none.
pub fn parse_policy_rate(text: &str) -> Result<NonZeroU64, String> {
    let size = text.trim();
    let size = size.strip_suffix("/s").unwrap_or(size).trim_end();
    if !size.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "{text:?} has no unit: give bytes per second with one (500K, 10M, 1G)"
        ));
    }
    let bytes = parse_policy_size(size)?;
    NonZeroU64::new(bytes).ok_or_else(|| {
        format!("{text:?} is no rate: a limit must be above zero (leave it out for none)")
    })
}

/// A duration like `90s`, `15m`, `2h`, `1h30m` or `7d` (days are 24 hours).
pub fn parse_policy_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 30s, 15m, 2h, 1h30m, 7d)");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            ' ' if number.is_empty() => continue,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests;
