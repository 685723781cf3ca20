//! Workload templates: the defaults a source gets from `template = "..."`. A source's own
//! keys always win; tables (`retention`, `hooks`, `verify`, `tags`) are replaced whole,
//! not merged key by key, so what a source writes is exactly what it gets.

use std::collections::BTreeMap;

use toml::Spanned;

use super::raw::{RawRetention, RawSource, RawVerify};

/// The names `template = ...` accepts.
pub const TEMPLATE_NAMES: [&str; 4] = ["database", "volume", "files", "dev-env"];

/// A value that came from a template: it has no position in the user's file.
fn t<T>(value: T) -> Option<Spanned<T>> {
    Some(Spanned::new(0..0, value))
}

fn s(text: &str) -> Option<Spanned<String>> {
    t(text.to_owned())
}

/// The defaults of template `name`, or `None` if there is no such template.
pub fn template(name: &str) -> Option<RawSource> {
    let template = match name {
        // Dumps are cheap to take and precious: hourly, long daily history, drill weekly.
        "database" => RawSource {
            kind: s("command"),
            schedule: s("0 * * * *"),
            jitter: s("5m"),
            timeout: s("2h"),
            rpo: s("2h"),
            retention: t(RawRetention {
                keep_hourly: Some(24),
                keep_daily: Some(14),
                keep_weekly: Some(8),
                keep_monthly: Some(12),
                ..RawRetention::default()
            }),
            verify: t(RawVerify {
                schedule: s("0 4 * * 0"),
                window: s("8d"),
                ..RawVerify::default()
            }),
            ..RawSource::default()
        },
        // Whole disks: nightly, a month of dailies, drilled weekly.
        "volume" => RawSource {
            kind: s("volume"),
            schedule: s("0 2 * * *"),
            jitter: s("15m"),
            timeout: s("6h"),
            rpo: s("26h"),
            retention: t(RawRetention {
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(6),
                ..RawRetention::default()
            }),
            verify: t(RawVerify {
                schedule: s("0 5 * * 6"),
                window: s("8d"),
                ..RawVerify::default()
            }),
            ..RawSource::default()
        },
        // Application files: hourly, the usual restic-style ladder.
        "files" => RawSource {
            kind: s("paths"),
            schedule: s("0 * * * *"),
            jitter: s("10m"),
            timeout: s("4h"),
            rpo: s("2h"),
            retention: t(RawRetention {
                keep_hourly: Some(24),
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(12),
                ..RawRetention::default()
            }),
            verify: t(RawVerify {
                schedule: s("0 6 1 * *"),
                window: s("32d"),
                ..RawVerify::default()
            }),
            ..RawSource::default()
        },
        // Developer machines: often, short history, build output left out.
        "dev-env" => RawSource {
            kind: s("paths"),
            schedule: s("*/30 * * * *"),
            jitter: s("5m"),
            timeout: s("1h"),
            rpo: s("1h"),
            excludes: t([
                "target",
                "node_modules",
                ".cache",
                "__pycache__",
                "*.o",
                ".venv",
            ]
            .map(str::to_owned)
            .to_vec()),
            retention: t(RawRetention {
                keep_last: Some(10),
                keep_daily: Some(7),
                keep_weekly: Some(4),
                ..RawRetention::default()
            }),
            tags: t(BTreeMap::from([("env".to_owned(), "dev".to_owned())])),
            ..RawSource::default()
        },
        _ => return None,
    };
    Some(template)
}

/// `source` with every key it leaves out taken from `defaults`.
pub fn apply(source: &RawSource, defaults: RawSource) -> RawSource {
    let source = source.clone();
    RawSource {
        name: source.name,
        template: source.template,
        kind: source.kind.or(defaults.kind),
        paths: source.paths.or(defaults.paths),
        excludes: source.excludes.or(defaults.excludes),
        one_file_system: source.one_file_system.or(defaults.one_file_system),
        exclude_if_present: source.exclude_if_present.or(defaults.exclude_if_present),
        exclude_caches: source.exclude_caches.or(defaults.exclude_caches),
        exclude_larger_than: source.exclude_larger_than.or(defaults.exclude_larger_than),
        fixed_chunks: source.fixed_chunks.or(defaults.fixed_chunks),
        ignore_inode: source.ignore_inode.or(defaults.ignore_inode),
        ignore_ctime: source.ignore_ctime.or(defaults.ignore_ctime),
        images_by_content: source.images_by_content.or(defaults.images_by_content),
        device: source.device.or(defaults.device),
        command: source.command.or(defaults.command),
        env: source.env.or(defaults.env),
        database: source.database.or(defaults.database),
        schedule: source.schedule.or(defaults.schedule),
        jitter: source.jitter.or(defaults.jitter),
        timeout: source.timeout.or(defaults.timeout),
        tags: source.tags.or(defaults.tags),
        hooks: source.hooks.or(defaults.hooks),
        quiesce: source.quiesce.or(defaults.quiesce),
        retention: source.retention.or(defaults.retention),
        forget: source.forget.or(defaults.forget),
        rpo: source.rpo.or(defaults.rpo),
        verify: source.verify.or(defaults.verify),
    }
}
