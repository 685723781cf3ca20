//! Inline SVG charts for the HTML report: backup sizes and restore times over time.
//!
//! Each chart is a fixed-size `<svg>` with a time axis shared by both charts of a source,
//! a value axis from zero with labelled grid lines, and one `<g class="mark">` per data
//! point carrying a `<title>` (the browser's tooltip). No script, no external resources.

use std::fmt::Write as _;

use super::html::escape;
use super::model::{Backup, Drill, millis};
use crate::output::bytes;

/// Colour of the "bytes" bars (also what the rendering test looks for).
pub const BYTES_COLOUR: &str = "#2b6cb0";
/// Colour of the "bytes added" bars.
pub const ADDED_COLOUR: &str = "#dd6b20";
/// Colour of a passing drill.
pub const PASSED_COLOUR: &str = "#2f855a";
/// Colour of a failed drill.
pub const FAILED_COLOUR: &str = "#c53030";

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 30.0;

/// The time range both charts of a source share, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeAxis {
    start: i64,
    end: i64,
}

impl TimeAxis {
    /// Spans every snapshot and drill of a source.
    pub fn spanning(history: &[Backup], drills: &[Drill]) -> TimeAxis {
        let times = history
            .iter()
            .map(|b| b.unix)
            .chain(drills.iter().map(|d| d.unix));
        let (start, end) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if start > end {
            TimeAxis { start: 0, end: 0 }
        } else {
            TimeAxis { start, end }
        }
    }

    /// The x coordinate of `t`, inset by `pad` so marks stay inside the plot.
    fn x(&self, t: i64, pad: f64) -> f64 {
        let width = WIDTH - LEFT - RIGHT - 2.0 * pad;
        if self.end <= self.start {
            return LEFT + pad + width / 2.0;
        }
        let share = (t - self.start) as f64 / (self.end - self.start) as f64;
        LEFT + pad + share * width
    }
}

/// Backup sizes: per snapshot a bar of its bytes with its new bytes (bytes_added) inside.
pub fn sizes_chart(source: &str, axis: TimeAxis, history: &[Backup]) -> String {
    let max = history
        .iter()
        .map(|b| b.bytes.max(b.bytes_added))
        .max()
        .unwrap_or(0);
    let top = nice_bytes_ceiling(max);
    let bar = bar_width(history.len());
    let mut svg = open("sizes", source, "Backup sizes over time");
    if !history.is_empty() {
        grid(&mut svg, top, bytes);
    }
    legend(
        &mut svg,
        &[(BYTES_COLOUR, "bytes"), (ADDED_COLOUR, "bytes added")],
    );
    for b in history {
        let x = axis.x(b.unix, bar / 2.0) - bar / 2.0;
        let (y, h) = bar_extent(b.bytes, top);
        let (ya, ha) = bar_extent(b.bytes_added, top);
        let _ = write!(
            svg,
            r#"<g class="mark" data-snapshot="{id}"><title>{time}: {total}, {added} added</title><rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{BYTES_COLOUR}"/><rect x="{xa:.1}" y="{ya:.1}" width="{wa:.1}" height="{ha:.1}" fill="{ADDED_COLOUR}"/></g>"#,
            id = escape(&b.snapshot),
            time = escape(&b.time),
            total = bytes(b.bytes),
            added = bytes(b.bytes_added),
            xa = x + bar / 4.0,
            wa = bar / 2.0,
        );
    }
    if history.is_empty() {
        empty(&mut svg, "no snapshots");
    }
    time_labels(&mut svg, axis);
    svg.push_str("</svg>");
    svg
}

/// Restore times: per drill a dot at its RTO (restore_ms), green when it passed, red when
/// it failed (a failed drill without a restore time sits on the axis).
pub fn restore_chart(source: &str, axis: TimeAxis, drills: &[Drill]) -> String {
    let max = drills
        .iter()
        .filter_map(|d| d.restore_ms)
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(max);
    let mut svg = open("restores", source, "Restore time (RTO) of each drill");
    if !drills.is_empty() {
        grid(&mut svg, top, millis);
    }
    legend(
        &mut svg,
        &[
            (PASSED_COLOUR, "drill passed"),
            (FAILED_COLOUR, "drill failed"),
        ],
    );
    for d in drills {
        let passed = d.outcome == "passed";
        let colour = if passed { PASSED_COLOUR } else { FAILED_COLOUR };
        let x = axis.x(d.unix, 8.0);
        let (y, _) = bar_extent(d.restore_ms.unwrap_or(0), top);
        let rto = d
            .restore_ms
            .map_or_else(|| "no restore time".to_owned(), millis);
        let _ = write!(
            svg,
            r#"<g class="mark {outcome}"><title>{time}: {outcome}, RTO {rto}</title><circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{colour}"/></g>"#,
            outcome = escape(&d.outcome),
            time = escape(&d.time),
        );
    }
    if drills.is_empty() {
        empty(&mut svg, "no drills");
    }
    time_labels(&mut svg, axis);
    svg.push_str("</svg>");
    svg
}

fn open(class: &str, source: &str, label: &str) -> String {
    format!(
        r#"<svg class="chart {class}" data-source="{source}" role="img" aria-label="{label}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">"#,
        source = escape(source),
    )
}

/// Horizontal grid lines at 0, 1/2 and 1 of `top`, labelled on the left.
fn grid(svg: &mut String, top: u64, label: impl Fn(u64) -> String) {
    for step in 0..=2u64 {
        let value = top / 2 * step;
        let (y, _) = bar_extent(value, top);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d4da" stroke-width="1"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="axis">{text}</text>"##,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            text = escape(&label(value)),
        );
    }
}

fn legend(svg: &mut String, entries: &[(&str, &str)]) {
    let mut x = LEFT;
    for (colour, text) in entries {
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="8" width="10" height="10" fill="{colour}"/><text x="{tx}" y="17" class="axis">{text}</text>"#,
            tx = x + 14.0,
        );
        x += 120.0;
    }
}

fn time_labels(svg: &mut String, axis: TimeAxis) {
    let y = HEIGHT - BOTTOM + 18.0;
    let first = day_minute(axis.start);
    if axis.end > axis.start {
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{y}" class="axis">{first}</text><text x="{x}" y="{y}" text-anchor="end" class="axis">{last}</text>"#,
            x = WIDTH - RIGHT,
            last = day_minute(axis.end),
        );
    } else if axis.start != 0 {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle" class="axis">{first}</text>"#,
            x = (LEFT + WIDTH - RIGHT) / 2.0,
        );
    }
}

fn empty(svg: &mut String, text: &str) {
    let _ = write!(
        svg,
        r#"<text x="{x}" y="{y}" text-anchor="middle" class="empty">{text}</text>"#,
        x = (LEFT + WIDTH - RIGHT) / 2.0,
        y = (TOP + HEIGHT - BOTTOM) / 2.0,
    );
}

/// `YYYY-MM-DD HH:MM` UTC.
fn day_minute(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The top y and the height of a bar of `value` on an axis ending at `top`.
fn bar_extent(value: u64, top: u64) -> (f64, f64) {
    let plot = HEIGHT - TOP - BOTTOM;
    let h = if top == 0 {
        0.0
    } else {
        plot * (value as f64 / top as f64)
    };
    (HEIGHT - BOTTOM - h, h)
}

fn bar_width(count: usize) -> f64 {
    let plot = WIDTH - LEFT - RIGHT;
    (plot / count.max(1) as f64 * 0.6).clamp(3.0, 24.0)
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `value` (and even, so
/// half of it is a whole grid value).
fn nice_ceiling(value: u64) -> u64 {
    let mut power = 1u64;
    loop {
        for factor in [1u64, 2, 5] {
            let candidate = factor.saturating_mul(power);
            if candidate >= value && (candidate % 2 == 0 || candidate == 1) {
                return candidate.max(2);
            }
        }
        if power > u64::MAX / 10 {
            return value;
        }
        power *= 10;
    }
}

/// [`nice_ceiling`] in the binary unit (KiB, MiB, ...) the value is shown in, so the grid
/// reads `2 MiB`, not `1.91 MiB`.
fn nice_bytes_ceiling(value: u64) -> u64 {
    let mut unit = 1u64;
    while value / unit >= 1024 && unit <= u64::MAX / 1024 / 1024 {
        unit *= 1024;
    }
    nice_ceiling(value.div_ceil(unit)).saturating_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_cover_the_value() {
        assert_eq!(nice_ceiling(0), 2);
        assert_eq!(nice_ceiling(3), 10);
        assert_eq!(nice_ceiling(15), 20);
        assert_eq!(nice_ceiling(1_500_000), 2_000_000);
        assert_eq!(nice_ceiling(2_000_001), 5_000_000);
        assert!(nice_ceiling(u64::MAX) >= u64::MAX / 2);
        assert_eq!(nice_bytes_ceiling(900), 1000);
        assert_eq!(nice_bytes_ceiling(800 * 1024), 1000 * 1024);
        assert_eq!(nice_bytes_ceiling(3 << 20), 10 << 20);
        assert!(nice_bytes_ceiling(u64::MAX / 3) >= u64::MAX / 3);
    }

    #[test]
    fn bars_stay_inside_the_plot() {
        let (y, h) = bar_extent(10, 10);
        assert!((y - TOP).abs() < 1e-9);
        assert!((y + h - (HEIGHT - BOTTOM)).abs() < 1e-9);
        let axis = TimeAxis { start: 0, end: 100 };
        let pad = bar_width(1) / 2.0;
        assert!(axis.x(0, pad) - pad >= LEFT);
        assert!(axis.x(100, pad) + pad <= WIDTH - RIGHT + 1e-9);
    }
}
