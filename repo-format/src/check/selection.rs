//! Which packs a check reads in full: subsets, percentages and rolling verification
//! with its local state file.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::PackId;

/// Which packs a check reads in full (every byte re-hashed, every blob authenticated).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ReadData {
    /// None: structure only (trailers are still read and compared with the index).
    #[default]
    None,
    /// Every pack.
    All,
    /// Subset `n` of `m` (1-based): the packs whose id, its first four bytes read as a
    /// big-endian `u32`, is `n - 1` modulo `m`. Deterministic, so running `1/m` .. `m/m`
    /// reads every pack exactly once.
    Subset {
        /// Which subset, `1..=m`.
        n: u32,
        /// How many subsets.
        m: u32,
    },
    /// A random percentage of the packs, `0 < p <= 100` (at least one pack when there are any).
    Percent(f64),
    /// Rolling verification: packs least recently verified first (never-verified ones
    /// before all others) until `max_duration` has passed since the check started. At
    /// least one pack is read per run, so a tiny budget still makes progress. When each
    /// pack was last found intact is kept in `state_file` (see [`VerifiedPacks`]).
    Rolling {
        /// Time budget of the run.
        max_duration: Duration,
        /// Where the verification times are kept.
        state_file: PathBuf,
    },
}

impl ReadData {
    /// Parses a subset specification: `N/M` (subset `N` of `M`) or `P%` (a random `P`
    /// percent, fractions allowed).
    pub fn parse_subset(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let invalid = || {
            Error::Invalid(format!(
                "{spec:?} is not a data subset: give N/M with 1 <= N <= M (e.g. 2/7) or P% with 0 < P <= 100 (e.g. 10%)"
            ))
        };
        if let Some(percent) = spec.strip_suffix('%') {
            let percent: f64 = percent.trim().parse().map_err(|_| invalid())?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(invalid());
            }
            return Ok(ReadData::Percent(percent));
        }
        let (n, m) = spec.split_once('/').ok_or_else(invalid)?;
        let n: u32 = n.trim().parse().map_err(|_| invalid())?;
        let m: u32 = m.trim().parse().map_err(|_| invalid())?;
        if n == 0 || n > m {
            return Err(invalid());
        }
        Ok(ReadData::Subset { n, m })
    }

    /// A short description: `none`, `all`, `subset 2/7`, `10%`, `rolling 3600s`.
    pub fn describe(&self) -> String {
        match self {
            ReadData::None => "none".into(),
            ReadData::All => "all".into(),
            ReadData::Subset { n, m } => format!("subset {n}/{m}"),
            ReadData::Percent(p) => format!("{p}%"),
            ReadData::Rolling { max_duration, .. } => {
                format!("rolling {}s", max_duration.as_secs())
            }
        }
    }
}

/// The subset (`1..=m`) that `pack` belongs to when the packs are split into `m` subsets.
pub fn pack_subset(pack: &PackId, m: u32) -> u32 {
    let b = pack.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % m.max(1) + 1
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Which packs to read in full and authenticate blob by blob.
    pub read_data: ReadData,
    /// Threads reading packs (0 = number of CPUs, at most 8).
    pub threads: usize,
}

/// When each pack was last read in full and found intact: the memory of rolling checks.
///
/// It lives outside the repository, in a local cache directory
/// (`<cache>/<repository id hex>/verified-packs`, see [`VerifiedPacks::path`]), as one line
/// per pack: the pack id in hex, a space, the Unix time in seconds. A missing or corrupt
/// file means "nothing verified yet"; it is only ever replaced whole (temp file + rename).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedPacks {
    times: HashMap<PackId, i64>,
}

impl VerifiedPacks {
    /// File name of the state file.
    pub const FILE_NAME: &'static str = "verified-packs";

    /// The state file of the repository `repository_id` below the cache directory `cache`.
    pub fn path(cache: &Path, repository_id: &[u8; 32]) -> PathBuf {
        cache.join(hex::encode(repository_id)).join(Self::FILE_NAME)
    }

    /// Reads the state file; a missing, unreadable or corrupt one gives an empty state.
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| Self::decode(&text))
            .unwrap_or_default()
    }

    /// Parses the file's text; `None` when any line is malformed.
    pub fn decode(text: &str) -> Option<Self> {
        let mut times: HashMap<PackId, i64> = HashMap::new();
        for line in text.lines() {
            let (id, time) = line.split_once(' ')?;
            let id: PackId = id.parse().ok()?;
            let time: i64 = time.parse().ok()?;
            let slot = times.entry(id).or_insert(time);
            *slot = (*slot).max(time);
        }
        Some(Self { times })
    }

    /// The file's text, sorted by pack id.
    pub fn encode(&self) -> String {
        let mut entries: Vec<_> = self.times.iter().collect();
        entries.sort();
        let mut out = String::with_capacity(entries.len() * 76);
        for (id, time) in entries {
            out.push_str(&format!("{id} {time}\n"));
        }
        out
    }

    /// Replaces the state file atomically: the text goes to a temporary file in the same
    /// directory (created if missing), which is synced and renamed over the old one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = dir.join(format!(
            ".{}.tmp-{}-{}",
            Self::FILE_NAME,
            std::process::id(),
            hex::encode(crate::crypto::random_array::<6>())
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(self.encode().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written?;
        // Make the rename durable; a failure here loses at most this run's record.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// When `pack` was last found intact (Unix seconds).
    pub fn get(&self, pack: &PackId) -> Option<i64> {
        self.times.get(pack).copied()
    }

    /// Records that `pack` was found intact at `unix_time`.
    pub fn record(&mut self, pack: PackId, unix_time: i64) {
        self.times.insert(pack, unix_time);
    }

    /// Forgets `pack` (it is read first next time).
    pub fn forget(&mut self, pack: &PackId) {
        self.times.remove(pack);
    }

    /// Keeps only the packs for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&PackId) -> bool) {
        self.times.retain(|id, _| keep(id));
    }

    /// Packs recorded.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when no pack is recorded.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// The packs to check, in the order to check them, each with whether to read it in full.
pub(crate) fn plan_reads(
    read_data: &ReadData,
    packs: &[PackId],
    verified: Option<&VerifiedPacks>,
) -> Vec<(PackId, bool)> {
    match read_data {
        ReadData::None => packs.iter().map(|pack| (*pack, false)).collect(),
        ReadData::All => packs.iter().map(|pack| (*pack, true)).collect(),
        ReadData::Subset { n, m } => packs
            .iter()
            .map(|pack| (*pack, pack_subset(pack, *m) == *n))
            .collect(),
        ReadData::Percent(percent) => {
            let wanted = ((packs.len() as f64) * percent / 100.0).ceil();
            let wanted = if wanted.is_finite() && wanted > 0.0 {
                (wanted as usize).min(packs.len())
            } else {
                0
            };
            // A partial Fisher-Yates shuffle picks `wanted` distinct packs.
            let mut order: Vec<usize> = (0..packs.len()).collect();
            let mut rng = SplitMix64(u64::from_le_bytes(crate::crypto::random_array()));
            for i in 0..wanted {
                let span = (packs.len() - i) as u64;
                let j = i + (rng.next() % span) as usize;
                order.swap(i, j);
            }
            let chosen: HashSet<usize> = order[..wanted].iter().copied().collect();
            packs
                .iter()
                .enumerate()
                .map(|(i, pack)| (*pack, chosen.contains(&i)))
                .collect()
        }
        ReadData::Rolling { .. } => {
            let mut order = packs.to_vec();
            // Never verified (`None`) sorts first, then oldest first; ties by id.
            order.sort_by_key(|pack| (verified.and_then(|v| v.get(pack)), *pack));
            order.into_iter().map(|pack| (pack, true)).collect()
        }
    }
}

/// A small, fast generator for picking random packs (not for secrets).
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
