//! A source's restore-drill settings: its `verify = { ... }` table and the `database` key,
//! checked against the source's kind.
//!
//! Keys that only make sense for one kind are errors elsewhere, never silently ignored:
//! `fsck` and `mount` belong to volume sources; `smoke_sql`, `database_name` and `pg_bin`
//! to database sources (a `command` source with `database = "postgresql"`).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawSource, RawVerify};
use super::{Checker, SourceKind};
use crate::schedule::Schedule;

/// The database a `command` source dumps, which decides how its drill restores the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// The command writes a `pg_dump -Fc` archive; the drill restores it with `pg_restore`
    /// into a temporary PostgreSQL server.
    Postgresql,
}

impl Database {
    /// The names `database = ...` accepts.
    pub const NAMES: [&str; 1] = ["postgresql"];

    /// `postgresql`.
    pub fn name(self) -> &'static str {
        match self {
            Database::Postgresql => "postgresql",
        }
    }
}

/// Restore-drill settings of a source.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// When drills run.
    pub schedule: Schedule,
    /// A command run against the restored data (`BUNKER_RESTORE_DIR` is set).
    pub smoke: Option<String>,
    /// A source counts as covered if a drill passed within this window.
    pub window: Duration,
    /// Volume sources: run `fsck -n -f` on the restored image (default true).
    pub fsck: bool,
    /// Volume sources: mount the restored image read-only for the smoke command
    /// (default false).
    pub mount: bool,
    /// Database sources: SQL statements run against the restored database; each must
    /// succeed and, when it returns one value, that value must not be false, 0 or empty.
    pub smoke_sql: Vec<String>,
    /// Database sources: the name of the restored database (default: the source name).
    pub database_name: Option<String>,
    /// Database sources: the directory of the PostgreSQL server programs (default: the
    /// newest `/usr/lib/postgresql/*/bin`, else `PATH`).
    pub pg_bin: Option<PathBuf>,
}

impl Checker<'_> {
    /// The source's `database` key: command sources only, one of [`Database::NAMES`].
    pub(super) fn database(
        &mut self,
        raw: &RawSource,
        kind: &SourceKind,
        span: Range<usize>,
        key: &str,
    ) -> Option<Database> {
        let value = raw.database.as_ref()?;
        let field = format!("{key}.database");
        if !matches!(kind, SourceKind::Command { .. }) {
            self.on(
                value,
                span,
                &field,
                format!(
                    "applies to command sources only, not to a {} source",
                    kind.name()
                ),
            );
            return None;
        }
        match value.get_ref().as_str() {
            "postgresql" => Some(Database::Postgresql),
            other => {
                self.on(
                    value,
                    span,
                    &field,
                    format!(
                        "unknown database {other:?} (known: {})",
                        Database::NAMES.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The `verify` table of a source of `kind` (with `database`, if it has one).
    pub(super) fn verify(
        &mut self,
        v: &Spanned<RawVerify>,
        kind: &SourceKind,
        database: Option<Database>,
        span: Range<usize>,
        key: &str,
    ) -> Option<VerifySettings> {
        let field = |name: &str| format!("{key}.verify.{name}");
        let inner = v.get_ref();
        let schedule = match &inner.schedule {
            Some(text) => match Schedule::parse(text.get_ref()) {
                Ok(s) if s.next_after(&jiff::Zoned::now()).is_none() => {
                    self.on(
                        text,
                        v.span(),
                        &field("schedule"),
                        "never fires (no such day in the next eight years)".into(),
                    );
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    self.on(text, v.span(), &field("schedule"), e.reason);
                    None
                }
            },
            None => {
                self.on(v, span, &field("schedule"), "missing".into());
                None
            }
        };
        let window = self.duration(
            inner.window.as_ref(),
            v.span(),
            &field("window"),
            Duration::from_secs(8 * 86_400),
        );
        let volume = matches!(kind, SourceKind::Volume { .. });
        for (name, at) in [
            ("fsck", inner.fsck.as_ref().map(Spanned::span)),
            ("mount", inner.mount.as_ref().map(Spanned::span)),
        ] {
            if let Some(at) = at
                && !volume
            {
                let at = if at == (0..0) { v.span() } else { at };
                self.at(
                    at,
                    &field(name),
                    format!(
                        "applies to volume sources only, not to a {} source",
                        kind.name()
                    ),
                );
            }
        }
        for (name, at) in [
            ("smoke_sql", inner.smoke_sql.as_ref().map(Spanned::span)),
            (
                "database_name",
                inner.database_name.as_ref().map(Spanned::span),
            ),
            ("pg_bin", inner.pg_bin.as_ref().map(Spanned::span)),
        ] {
            if let Some(at) = at
                && database.is_none()
            {
                let at = if at == (0..0) { v.span() } else { at };
                self.at(
                    at,
                    &field(name),
                    "applies to database sources only (a command source with \
                     database = \"postgresql\")"
                        .into(),
                );
            }
        }
        let smoke_sql = inner
            .smoke_sql
            .as_ref()
            .map(|sql| {
                if sql.get_ref().iter().any(|s| s.trim().is_empty()) {
                    self.on(
                        sql,
                        v.span(),
                        &field("smoke_sql"),
                        "a statement must not be empty".into(),
                    );
                }
                sql.get_ref().clone()
            })
            .unwrap_or_default();
        let database_name = inner.database_name.as_ref().map(|name| {
            let text = name.get_ref();
            // `=` would make pg_restore read the name as a connection string.
            if text.is_empty() || text.len() > 63 || text.contains(['\0', '=']) {
                self.on(
                    name,
                    v.span(),
                    &field("database_name"),
                    format!("{text:?} is not a database name (1 to 63 bytes, no '=')"),
                );
            }
            text.clone()
        });
        let pg_bin = inner
            .pg_bin
            .as_ref()
            .map(|dir| self.absolute_path(dir, v.span(), &field("pg_bin")));
        schedule.map(|schedule| VerifySettings {
            schedule,
            smoke: inner.smoke.as_ref().map(|s| s.get_ref().clone()),
            window,
            fsck: inner.fsck.as_ref().is_none_or(|f| *f.get_ref()),
            mount: inner.mount.as_ref().is_some_and(|m| *m.get_ref()),
            smoke_sql,
            database_name,
            pg_bin,
        })
    }
}
