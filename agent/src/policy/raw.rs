//! The policy file as written: serde structures that keep each value's position, so errors
//! can name the line and key. [`super::Policy`] is what the rest of the agent uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<RawAgent>,
    pub repository: Option<Spanned<RawRepository>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawMetrics>,
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<RawSource>>,
}

/// `[agent]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_roots: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Spanned<String>>,
}

/// `[repository]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    pub url: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download: Option<Spanned<String>>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile: Option<Spanned<String>>,
}

/// One `[[source]]`. Every field is optional here: templates fill the gaps, validation
/// reports what is still missing.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_file_system: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_if_present: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_caches: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_larger_than: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_chunks: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_inode: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_ctime: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_by_content: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Spanned<RawHooks>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<Spanned<RawQuiesce>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Spanned<RawRetention>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Spanned<RawVerify>>,
}

/// `hooks = { pre = "...", post = "...", timeout = "5m" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
}

/// `quiesce = { fsfreeze = "/srv/app" }`, `{ btrfs_snapshot = "/srv" }` or hooks.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuiesce {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsfreeze: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btrfs_snapshot: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
}

/// `retention = { keep_daily = 7, ... }`: the `forget` rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_tags: Option<BTreeMap<String, String>>,
}

/// `verify = { schedule = "...", smoke = "...", window = "8d", ... }`: restore drills, with
/// the keys of volume (`fsck`, `mount`) and database (`smoke_sql`, `database_name`,
/// `pg_bin`) drills.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsck: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_sql: Option<Spanned<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bin: Option<Spanned<String>>,
}
