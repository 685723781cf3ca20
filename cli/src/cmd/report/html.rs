//! The recovery report as one self-contained HTML page: inline CSS, inline SVG charts
//! (see `svg`), no script and no external URL. Every string that comes from the repository
//! or the policy goes through [`escape`].

use std::fmt::Write as _;

use super::model::{Backup, Drill, Report, SourceRow, duration, millis, utc_minute};
use super::svg::{TimeAxis, restore_chart, sizes_chart};
use crate::output::bytes;

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 24px; color: #1a202c; background: #ffffff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.meta { color: #4a5568; margin: 0; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e2e8f0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f7fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.out td { background: #fff5f5; }
.status-ok, .status-passed { color: #276749; font-weight: 600; }
.status-late, .status-failed, .status-no-backup, .status-stale { color: #9b2c2c; font-weight: 600; }
section.findings { border: 2px solid #c53030; background: #fff5f5; padding: 8px 16px; }
section.findings.clear { border-color: #2f855a; background: #f0fff4; }
li.finding { margin: 4px 0; }
li.finding code { background: #fed7d7; padding: 0 4px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #e2e8f0; padding: 4px; }
figcaption { font-size: 12px; color: #4a5568; }
svg .axis { font-size: 11px; fill: #4a5568; }
svg .empty { font-size: 13px; fill: #a0aec0; }
footer { margin-top: 28px; font-size: 12px; color: #4a5568; }
"#;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>bunker recovery report</title><style>{STYLE}</style></head><body>\
         <header><h1>Recovery report</h1><p class=\"meta\">Repository <b>{repo}</b> \
         &middot; generated {time} &middot; {policy}</p></header>",
        repo = escape(&report.repository),
        time = escape(&minute(&report.generated)),
        policy = match &report.policy {
            Some(file) => format!("policy <b>{}</b>", escape(file)),
            None => "no policy file".to_owned(),
        },
    );
    findings(&mut page, report);
    sources_table(&mut page, &report.sources);
    charts(&mut page, &report.sources);
    cost(&mut page, report);
    page.push_str(
        "<footer>Bytes per tag are the bytes first stored by the snapshots carrying the tag \
         (their <code>bytes_stored</code>), not a share of the deduplicated data: data a \
         snapshot shares with earlier ones counts where it was first stored, and pruned data \
         is not subtracted.</footer></body></html>\n",
    );
    page
}

fn findings(page: &mut String, report: &Report) {
    if report.out_of_policy.is_empty() {
        page.push_str(
            "<section id=\"out-of-policy\" class=\"findings clear\"><h2>Out of policy</h2>\
             <p>Every source is within policy.</p></section>",
        );
        return;
    }
    let _ = write!(
        page,
        "<section id=\"out-of-policy\" class=\"findings\"><h2>Out of policy ({})</h2><ul>",
        report.out_of_policy.len()
    );
    for f in &report.out_of_policy {
        let _ = write!(
            page,
            "<li class=\"finding\" data-source=\"{source}\" data-reason=\"{reason}\">\
             <b>{source}</b> <code>{reason}</code> {detail}</li>",
            source = escape(&f.source),
            reason = escape(f.reason),
            detail = escape(&f.detail),
        );
    }
    page.push_str("</ul></section>");
}

fn sources_table(page: &mut String, rows: &[SourceRow]) {
    page.push_str(
        "<h2>Sources</h2><table id=\"sources\"><thead><tr><th>source</th><th>kind</th>\
         <th>host</th><th>service</th><th>env</th><th>last backup</th><th>age</th>\
         <th>RPO</th><th>status</th><th>consistency</th><th>snapshots</th>\
         <th>last passing drill</th><th>RTO</th><th>verify</th><th>drill</th>\
         <th>verify window</th></tr></thead><tbody>",
    );
    for row in rows {
        let cell = |v: Option<&str>| escape(v.unwrap_or("-"));
        let backup = row.last_backup.as_ref();
        let pass = row.last_passing_drill.as_ref();
        let _ = write!(
            page,
            "<tr class=\"source-row{out}\" data-source=\"{name}\"><td>{name}{policy}</td>\
             <td>{kind}</td><td>{host}</td><td>{service}</td><td>{env}</td><td>{last}</td>\
             <td class=\"num\">{age}</td><td class=\"num\">{rpo}</td>\
             <td class=\"status-{rpo_status}\">{rpo_status}</td><td>{consistency}</td>\
             <td class=\"num\">{count}</td><td>{pass}</td><td class=\"num\">{rto}</td>\
             <td class=\"num\">{verify}</td><td class=\"status-{drill_status}\">{drill_status}</td>\
             <td>{window}</td></tr>",
            out = if row.out_of_policy.is_empty() {
                ""
            } else {
                " out"
            },
            name = escape(&row.name),
            policy = if row.in_policy {
                ""
            } else {
                " <i>(not in policy)</i>"
            },
            kind = escape(&row.kind),
            host = cell(row.host.as_deref()),
            service = cell(row.service.as_deref()),
            env = cell(row.env.as_deref()),
            last = backup.map_or_else(|| "-".to_owned(), backup_cell),
            age = backup.map_or_else(|| "-".to_owned(), |b| duration(b.age_seconds)),
            rpo = row
                .rpo_seconds
                .map_or_else(|| "-".to_owned(), |s| duration(s as i64)),
            rpo_status = escape(row.rpo_status),
            consistency = backup.map_or("-", |b| b.consistency),
            count = row.snapshots,
            pass = pass.map_or_else(|| "-".to_owned(), drill_cell),
            rto = pass
                .and_then(|d| d.restore_ms)
                .map_or_else(|| "-".to_owned(), millis),
            verify = pass
                .and_then(|d| d.verify_ms)
                .map_or_else(|| "-".to_owned(), millis),
            drill_status = escape(row.drill_status),
            window = row
                .verify_window_seconds
                .map_or_else(|| "-".to_owned(), |s| duration(s as i64)),
        );
    }
    page.push_str("</tbody></table>");
}

fn minute(rfc3339: &str) -> String {
    format!("{} UTC", utc_minute(rfc3339))
}

fn backup_cell(b: &Backup) -> String {
    format!(
        "{} <code>{}</code>",
        escape(&minute(&b.time)),
        escape(b.snapshot.get(..8).unwrap_or(&b.snapshot))
    )
}

fn drill_cell(d: &Drill) -> String {
    let snapshot = d.snapshot.as_deref().unwrap_or("");
    let mut cell = format!(
        "{} <code>{}</code>",
        escape(&minute(&d.time)),
        escape(snapshot.get(..8).unwrap_or(snapshot))
    );
    if !d.checks.is_empty() {
        let _ = write!(cell, " +{}", escape(&d.checks.join(",")));
    }
    cell
}

fn cost(page: &mut String, report: &Report) {
    let _ = write!(
        page,
        "<h2>Repository bytes by tag</h2><p class=\"meta\">All snapshots together stored {}.</p>",
        bytes(report.total_bytes_stored)
    );
    for tag in &report.cost {
        let _ = write!(
            page,
            "<h3>{tag}</h3><table class=\"cost\" data-tag=\"{tag}\"><thead><tr><th>{tag}</th>\
             <th>bytes stored</th><th>snapshots</th></tr></thead><tbody>",
            tag = escape(tag.tag)
        );
        for entry in &tag.values {
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"num\" data-bytes=\"{}\">{}</td><td class=\"num\">{}</td></tr>",
                entry
                    .value
                    .as_deref()
                    .map_or_else(|| "<i>(untagged)</i>".to_owned(), escape),
                entry.bytes_stored,
                bytes(entry.bytes_stored),
                entry.snapshots,
            );
        }
        page.push_str("</tbody></table>");
    }
}

fn charts(page: &mut String, rows: &[SourceRow]) {
    page.push_str("<h2>History</h2>");
    for row in rows {
        let axis = TimeAxis::spanning(&row.history, &row.drills);
        let _ = write!(
            page,
            "<section class=\"source-charts\" data-source=\"{name}\"><h3>{name}</h3>\
             <div class=\"charts\"><figure><figcaption>Backup sizes (bytes, bytes added)\
             </figcaption>{sizes}</figure><figure><figcaption>Restore time (RTO) of drills\
             </figcaption>{restores}</figure></div></section>",
            name = escape(&row.name),
            sizes = sizes_chart(&row.name, axis, &row.history),
            restores = restore_chart(&row.name, axis, &row.drills),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain-text_1.2"), "plain-text_1.2");
    }
}
