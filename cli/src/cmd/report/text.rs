//! The recovery report as a plain-text table, for a terminal.

use std::io::{self, Write};

use super::model::{Report, duration, millis, utc_minute};
use crate::output::bytes;

/// Writes the table, the findings and the cost per tag.
pub fn write(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let rows: Vec<[String; 10]> = report
        .sources
        .iter()
        .map(|row| {
            let backup = row.last_backup.as_ref();
            let pass = row.last_passing_drill.as_ref();
            [
                if row.in_policy || report.policy.is_none() {
                    row.name.clone()
                } else {
                    format!("{} (not in policy)", row.name)
                },
                row.kind.clone(),
                backup.map_or_else(|| "-".into(), |b| utc_minute(&b.time)),
                backup.map_or_else(|| "-".into(), |b| duration(b.age_seconds)),
                row.rpo_seconds
                    .map_or_else(|| "-".into(), |s| duration(s as i64)),
                row.rpo_status.to_owned(),
                backup.map_or("-", |b| b.consistency).to_owned(),
                row.snapshots.to_string(),
                pass.map_or_else(
                    || "-".into(),
                    |d| {
                        let rto = d.restore_ms.map_or_else(|| "-".into(), millis);
                        if d.checks.is_empty() {
                            format!("{} RTO {rto}", utc_minute(&d.time))
                        } else {
                            format!("{} RTO {rto} +{}", utc_minute(&d.time), d.checks.join(","))
                        }
                    },
                ),
                row.drill_status.to_owned(),
            ]
        })
        .collect();
    let header = [
        "source",
        "kind",
        "last backup (UTC)",
        "age",
        "rpo",
        "status",
        "consistency",
        "snaps",
        "last passing drill",
        "drill",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(cell.chars().count()),
                ));
            }
        }
        text
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }

    writeln!(out)?;
    if report.out_of_policy.is_empty() {
        writeln!(out, "Every source is within policy.")?;
    } else {
        writeln!(out, "Out of policy ({}):", report.out_of_policy.len())?;
        for f in &report.out_of_policy {
            writeln!(out, "  {}: {}: {}", f.source, f.reason, f.detail)?;
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "Repository bytes by tag (bytes first stored by the snapshots carrying it; {} in all):",
        bytes(report.total_bytes_stored)
    )?;
    for tag in &report.cost {
        for entry in &tag.values {
            let label = format!(
                "{}={}",
                tag.tag,
                entry.value.as_deref().unwrap_or("(untagged)")
            );
            writeln!(
                out,
                "  {label:<28} {:>12}  {} snapshot{}",
                bytes(entry.bytes_stored),
                entry.snapshots,
                if entry.snapshots == 1 { "" } else { "s" }
            )?;
        }
    }
    if report.unattributed_drills > 0 {
        writeln!(
            out,
            "\n{} drill records name no source and no snapshot still present.",
            report.unattributed_drills
        )?;
    }
    Ok(())
}
