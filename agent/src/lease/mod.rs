//! Self-service restores that expire.
//!
//! - A [`Lease`] records one restore made with an expiry: who, what (source, snapshot,
//!   path), where (the canonical target) and until when. Leases are small JSON files in a
//!   [`LeaseDir`], each written atomically (temporary file, fsync, rename).
//! - [`RestoreRoots`] is the policy's `agent.restore_roots`: [`RestoreRoots::check`] refuses
//!   a target outside every root, judged on the resolved path (`..` and symlinked parents
//!   resolved), and [`RestoreRoots::check_leasable`] the targets an expiry must never remove.
//! - [`expire`] removes the targets of expired leases (never following a symlink, see
//!   [`crate::platform::remove_tree_nofollow`]) and drops their leases; `bunker restores
//!   expire` and the agent daemon both call it, and [`audit_record`] describes each removal.
//!
//! Times are Unix seconds passed in by the caller, so tests move the clock without sleeping.

mod expire;
mod roots;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use expire::{Expiry, ExpiryAction, audit_record, expire};
pub use roots::{RestoreRoots, resolve_target};

/// Version of the lease file written by this build; newer versions are refused.
pub const LEASE_VERSION: u32 = 1;

/// One self-service restore that expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// Format version ([`LEASE_VERSION`]).
    pub version: u32,
    /// 16 lowercase hex digits; also the file name (`<id>.json`).
    pub id: String,
    /// Who asked for the restore (`--owner`, else the invoking user, `SUDO_USER` under sudo).
    pub owner: String,
    /// The host the restore was made on.
    pub host: String,
    /// The snapshot's `source` tag ("" when it has none).
    pub source: String,
    /// The snapshot id (hex).
    pub snapshot: String,
    /// The path inside the snapshot that was restored (`/` for all of it).
    pub path: String,
    /// The restore target: absolute and canonical when the lease was made.
    pub target: PathBuf,
    /// `files` (a directory tree) or `volume` (an image file).
    pub kind: String,
    /// Bytes restored into the target.
    pub bytes: u64,
    /// When the restore finished (Unix seconds).
    #[serde(with = "rfc3339")]
    pub created: i64,
    /// When the target may be removed (Unix seconds).
    #[serde(with = "rfc3339")]
    pub expires: i64,
}

impl Lease {
    /// True when the lease has expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires <= now
    }
}

/// Lease files as RFC 3339 UTC times, for people reading them.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(second: &i64, s: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::from_second(*second) {
            Ok(t) => s.serialize_str(&t.to_string()),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| D::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

/// Why a lease could not be recorded, read or honoured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The restore target is outside every restore root of the policy.
    #[error("restore target {} is outside the restore roots ({}){}", target.display(), list(roots), resolves_to(target, resolved))]
    OutsideRoots {
        /// The target as given.
        target: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
        /// The policy's roots.
        roots: Vec<PathBuf>,
    },
    /// The target may never carry a lease (`/`, a restore root itself, a device).
    #[error("restore target {} cannot expire: {reason}", target.display())]
    Unleasable {
        /// The target.
        target: PathBuf,
        /// Why.
        reason: String,
    },
    /// The target's path could not be resolved.
    #[error("cannot resolve restore target {}: {source}", target.display())]
    Resolve {
        /// The target as given.
        target: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A lease file or directory could not be read or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A lease file is not a lease this build understands.
    #[error("lease file {} is unreadable: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn resolves_to(target: &Path, resolved: &Path) -> String {
    if target == resolved {
        String::new()
    } else {
        format!("; it resolves to {}", resolved.display())
    }
}

fn list(roots: &[PathBuf]) -> String {
    let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    names.join(", ")
}

/// A lease file found in a [`LeaseDir`]: the lease, or why it could not be read.
#[derive(Debug)]
pub struct Listed {
    /// The file.
    pub file: PathBuf,
    /// Its lease.
    pub lease: Result<Lease, LeaseError>,
}

/// The directory that holds the leases (`<state_dir>/restores`, or the user's state dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseDir {
    path: PathBuf,
}

impl LeaseDir {
    /// The lease directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LeaseDir { path: path.into() }
    }

    /// `<state_dir>/restores` when a policy is in effect, else
    /// `$XDG_STATE_HOME/bunker/restores`, else `$HOME/.local/state/bunker/restores`
    /// (relative variables are ignored); `None` when neither variable is usable.
    pub fn locate(policy_state_dir: Option<&Path>) -> Option<Self> {
        if let Some(dir) = policy_state_dir {
            return Some(LeaseDir::new(dir.join("restores")));
        }
        let absolute = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        absolute("XDG_STATE_HOME")
            .map(|d| d.join("bunker/restores"))
            .or_else(|| absolute("HOME").map(|h| h.join(".local/state/bunker/restores")))
            .map(LeaseDir::new)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}.json"))
    }

    /// Writes `lease` as `<id>.json`: to a temporary file first, synced, then renamed into
    /// place (and the directory synced), so a reader sees the whole lease or none. Creates
    /// the directory (mode 0700) when missing. Never replaces an existing lease.
    pub fn create(&self, lease: &Lease) -> Result<PathBuf, LeaseError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| LeaseError::Io { op, path, source }
        };
        if !is_lease_id(&lease.id) {
            return Err(LeaseError::Corrupt {
                path: self.file(&lease.id),
                reason: format!("{:?} is not a lease id", lease.id),
            });
        }
        create_private_dir(&self.path).map_err(io("create the lease directory", &self.path))?;
        let file = self.file(&lease.id);
        if file.exists() {
            return Err(LeaseError::Io {
                op: "create lease",
                path: file,
                source: io::ErrorKind::AlreadyExists.into(),
            });
        }
        let temporary = self.path.join(format!(".{}.json.tmp", lease.id));
        let mut text = serde_json::to_vec_pretty(lease).map_err(|e| LeaseError::Corrupt {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(io("create", &temporary))?;
        out.write_all(&text)
            .and_then(|()| out.sync_all())
            .map_err(io("write", &temporary))?;
        drop(out);
        fs::rename(&temporary, &file).map_err(io("rename into place", &file))?;
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &self.path))?;
        Ok(file)
    }

    /// Every lease file, sorted by expiry (unreadable files last, by name). A missing
    /// directory holds no leases.
    pub fn list(&self) -> Result<Vec<Listed>, LeaseError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseError::Io {
                    op: "list the lease directory",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| LeaseError::Io {
                op: "list the lease directory",
                path: self.path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_lease_id(id) {
                continue;
            }
            let file = entry.path();
            let lease = read_lease(&file, id);
            listed.push(Listed { file, lease });
        }
        listed.sort_by_key(|l| match &l.lease {
            Ok(lease) => (0, lease.expires, l.file.clone()),
            Err(_) => (1, 0, l.file.clone()),
        });
        Ok(listed)
    }

    /// Deletes the lease file of `id`; a lease already gone is not an error.
    pub fn remove(&self, id: &str) -> Result<(), LeaseError> {
        let file = self.file(id);
        match fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LeaseError::Io {
                op: "remove lease",
                path: file,
                source,
            }),
        }
    }

    /// How many leases are active and how many have expired (their target not yet
    /// removed) at `now`; unreadable lease files count as neither.
    pub fn counts(&self, now: i64) -> Result<(u64, u64), LeaseError> {
        let mut active = 0;
        let mut expired = 0;
        for listed in self.list()? {
            match listed.lease {
                Ok(lease) if lease.is_expired(now) => expired += 1,
                Ok(_) => active += 1,
                Err(_) => {}
            }
        }
        Ok((active, expired))
    }
}

fn read_lease(file: &Path, id: &str) -> Result<Lease, LeaseError> {
    let corrupt = |reason: String| LeaseError::Corrupt {
        path: file.to_owned(),
        reason,
    };
    let text = fs::read(file).map_err(|source| LeaseError::Io {
        op: "read lease",
        path: file.to_owned(),
        source,
    })?;
    let version: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    match version.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(LEASE_VERSION) => {}
        Some(v) => return Err(corrupt(format!("version {v} is newer than this bunker"))),
        None => return Err(corrupt("no version".to_owned())),
    }
    let lease: Lease = serde_json::from_value(version).map_err(|e| corrupt(e.to_string()))?;
    if lease.id != id {
        return Err(corrupt(format!("holds lease {:?}", lease.id)));
    }
    if !lease.target.is_absolute() {
        return Err(corrupt(format!(
            "target {} is not absolute",
            lease.target.display()
        )));
    }
    Ok(lease)
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// True for 16 lowercase hex digits.
pub fn is_lease_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh lease id: 16 hex digits from the time, the process and `target`.
pub fn new_lease_id(target: &Path) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(target.as_os_str().as_encoded_bytes());
    let hash = hasher.finalize();
    hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
