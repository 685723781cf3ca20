//! Object Lock: the retention a repository asks its backend to enforce.
//!
//! A repository created with a lock mode and period writes every object with a retain-until
//! date at least `period` after the write. Until that date the storage refuses to delete or
//! overwrite the object (S3 Object Lock; a local directory keeps the same bookkeeping in a
//! sidecar file and refuses the delete itself). `bunker lock extend` moves the date forward
//! for objects that live snapshots still need; prune deletes an object only once its date
//! has passed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with a special permission may still shorten or remove the lock.
    Governance,
    /// Nobody, not even the account root, can shorten or remove the lock.
    Compliance,
}

impl LockMode {
    /// The value S3 expects in `x-amz-object-lock-mode` and retention documents.
    pub fn s3_name(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// The byte stored in the config (§7 of FORMAT.md).
    pub fn code(self) -> u8 {
        match self {
            LockMode::Governance => 1,
            LockMode::Compliance => 2,
        }
    }

    /// The mode of a config byte, if it is a known one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(LockMode::Governance),
            2 => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        })
    }
}

impl FromStr for LockMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "governance" => Ok(LockMode::Governance),
            "compliance" => Ok(LockMode::Compliance),
            other => Err(Error::Invalid(format!(
                "lock mode {other:?}: expected governance or compliance"
            ))),
        }
    }
}

/// How a repository's objects are locked: a mode and a minimum retention per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// Retention mode.
    pub mode: LockMode,
    /// Every object stays locked at least this long after it is written.
    pub period: Duration,
}

/// Shortest lock period accepted (one day: S3 counts default retention in days).
pub const MIN_LOCK_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Longest lock period accepted (100 years).
pub const MAX_LOCK_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl LockPolicy {
    /// Checks the period is within [`MIN_LOCK_PERIOD`]..=[`MAX_LOCK_PERIOD`].
    pub fn validate(&self) -> Result<()> {
        if (MIN_LOCK_PERIOD..=MAX_LOCK_PERIOD).contains(&self.period) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "lock period of {}s must be between 1 day and 100 years",
                self.period.as_secs()
            )))
        }
    }
}

/// Parses a lock period: a number followed by `d` (days), `h` (hours) or `y` (365 days).
pub fn parse_period(text: &str) -> Result<Duration> {
    let invalid = || {
        Error::Invalid(format!(
            "lock period {text:?}: expected a number of days, hours or years, like 30d, 720h or 1y"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let count: u64 = number.parse().map_err(|_| invalid())?;
    let unit_secs = match unit {
        "h" => 3600,
        "d" => 24 * 3600,
        "y" => 365 * 24 * 3600,
        _ => return Err(invalid()),
    };
    count
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_in_days_hours_and_years() {
        assert_eq!(
            parse_period("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_period("36h").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(
            parse_period("1y").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        for bad in ["", "d", "30", "30m", "-1d", "1.5d", "99999999999999999y"] {
            assert!(parse_period(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn modes_round_trip_through_names_and_codes() {
        for mode in [LockMode::Governance, LockMode::Compliance] {
            assert_eq!(mode.to_string().parse::<LockMode>().unwrap(), mode);
            assert_eq!(LockMode::from_code(mode.code()), Some(mode));
        }
        assert!("GOVERNANCE".parse::<LockMode>().is_err());
        assert_eq!(LockMode::from_code(0), None);
    }
}
