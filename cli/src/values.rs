//! Parsers of option values that clap cannot parse alone: durations, sizes, percentages,
//! tags, times. Each is a clap `value_parser`, so a bad value is a usage error: exit 2, with
//! clap's message naming the option, before any password is asked for.

use std::num::NonZeroU64;
use std::time::Duration;

use bunker_agent::policy::parse_policy_duration;
use bunker_repo_format::check::ReadData;
use bunker_repo_format::retention::{CalendarDuration, GroupBy};
use bunker_repo_format::tree::Timestamp;

/// A repository location: a directory or a URL, never empty (an empty `BUNKER_REPOSITORY`
/// is a mistake, not the current directory).
pub fn location(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a repository location must not be empty".into());
    }
    Ok(text.to_owned())
}

/// A wall-clock duration: `90s`, `30m`, `1h30m`, `7d`, `2w` (as in policy files), or a plain
/// number of seconds (`0`).
pub fn duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_policy_duration(text),
    }
}

/// `value` as [`duration`] reads it: whole days, hours, minutes and seconds (`30d`,
/// `1h30m`, `0s`).
pub fn duration_text(value: Duration) -> String {
    let mut left = value.as_secs();
    let mut text = String::new();
    for (unit, seconds) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= seconds {
            text.push_str(&format!("{}{unit}", left / seconds));
            left %= seconds;
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

/// A size in bytes: `500M`, `10G`, `1T` (powers of 1024; `MiB`, `GB` and the like too), or a
/// plain number of bytes.
pub fn size(text: &str) -> Result<u64, String> {
    bunker_agent::policy::parse_policy_size(text)
}

/// A fixed chunk size for `backup --fixed-chunks`: `64K`, `1M` (a power of two from 4 KiB
/// to 8 MiB).
pub fn fixed_chunks(text: &str) -> Result<bunker_agent::backup::FixedChunks, String> {
    let bytes = size(text)?;
    bunker_agent::backup::FixedChunks::new(bytes).map_err(|e| e.to_string())
}

/// A transfer rate in bytes per second, a size per second with its unit: `500K`, `10M`,
/// `1.5MiB/s`.
pub fn rate(text: &str) -> Result<NonZeroU64, String> {
    bunker_agent::policy::parse_policy_rate(text)
}

/// A percentage, 0 to 100.
pub fn percent(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a percentage between 0 and 100")),
    }
}

/// A `key=value` tag (the value may be empty, the key may not).
pub fn tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err("the tag's key is empty".into()),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err("a tag is KEY=VALUE".into()),
    }
}

/// A volume chunk size in KiB: a power of two from 4 KiB to 64 MiB.
pub fn volume_chunk_kib(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(kib) if kib.is_power_of_two() && (4..=64 << 10).contains(&kib) => Ok(kib),
        _ => Err(format!(
            "{text:?} is not a power of two from 4 to 65536 (KiB)"
        )),
    }
}

/// An exclude pattern, checked as `backup` will use it.
pub fn exclude(text: &str) -> Result<String, String> {
    let pattern = text.to_owned();
    bunker_agent::backup::Excludes::new(std::slice::from_ref(&pattern))
        .map(|_| pattern)
        .map_err(|e| e.to_string())
}

/// An RFC 3339 time.
pub fn time(text: &str) -> Result<Timestamp, String> {
    let parsed: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
    Ok(Timestamp {
        sec: parsed.as_second(),
        nsec: u32::try_from(parsed.subsec_nanosecond()).unwrap_or(0),
    })
}

/// An Object Lock period: `30d`, `720h`, `1y`.
pub fn lock_period(text: &str) -> Result<Duration, String> {
    use bunker_repo_format::backend::lock::{MAX_LOCK_PERIOD, MIN_LOCK_PERIOD, parse_period};
    let period = parse_period(text).map_err(|e| e.to_string())?;
    if !(MIN_LOCK_PERIOD..=MAX_LOCK_PERIOD).contains(&period) {
        return Err(format!(
            "lock period {text:?} must be between 1 day and 100 years"
        ));
    }
    Ok(period)
}

/// A retention duration in calendar units: `30d`, `12h`, `1y2m3d4h` (`m` is months).
pub fn calendar_duration(text: &str) -> Result<CalendarDuration, String> {
    text.parse()
        .map_err(|e: bunker_repo_format::Error| e.to_string())
}

/// The fields snapshots are grouped by: a comma-separated subset of host, paths and tags.
pub fn group_by(text: &str) -> Result<GroupBy, String> {
    text.parse()
        .map_err(|e: bunker_repo_format::Error| e.to_string())
}

/// A subset of the packs to read: `N/M` or `P%`.
pub fn read_data_subset(text: &str) -> Result<ReadData, String> {
    ReadData::parse_subset(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_never_empty() {
        assert_eq!(location("s3://b/p"), Ok("s3://b/p".to_owned()));
        assert_eq!(location("repo"), Ok("repo".to_owned()));
        assert!(location("").is_err());
        assert!(location("  ").is_err());
    }

    #[test]
    fn durations_are_compound_or_plain_seconds() {
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "soon", "1x", "-5", "1.5h", "h"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(duration("2w3d"), Ok(Duration::from_secs(17 * 86_400)));
        for text in ["30d", "1h30m", "17d", "0s", "1m30s"] {
            let parsed = duration(text).expect("a duration");
            assert_eq!(duration_text(parsed), text);
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(size("512"), Ok(512));
        assert_eq!(size("10G"), Ok(10 << 30));
        assert_eq!(size("1.5MiB"), Ok(3 << 19));
        assert_eq!(size("2kb"), Ok(2048));
        for bad in ["", "G", "10Q", "-1G", "NaN"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_need_a_unit_and_more_than_zero() {
        assert_eq!(rate("500K").map(NonZeroU64::get), Ok(500 << 10));
        assert_eq!(rate("10M/s").map(NonZeroU64::get), Ok(10 << 20));
        assert_eq!(rate(" 1.5MiB/s ").map(NonZeroU64::get), Ok(3 << 19));
        let no_unit = rate("1024").unwrap_err();
        assert!(no_unit.contains("has no unit"), "{no_unit}");
        let zero = rate("0K").unwrap_err();
        assert!(zero.contains("above zero"), "{zero}");
        for bad in ["", "/s", "K", "10Q", "-1M", "fast"] {
            assert!(rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentages_tags_and_times() {
        assert_eq!(percent("5"), Ok(5.0));
        assert!(percent("101").is_err() && percent("-1").is_err() && percent("x").is_err());
        assert_eq!(tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(tag("a="), Ok(("a".into(), String::new())));
        assert!(tag("=b").is_err() && tag("ab").is_err());
        assert_eq!(
            time("2021-03-04T05:06:07.5Z"),
            Ok(Timestamp {
                sec: 1_614_834_367,
                nsec: 500_000_000
            })
        );
        assert!(time("yesterday").is_err());
    }
}
