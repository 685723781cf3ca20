//! `bunker report`: the recovery report. Per source: the newest backup and its age against
//! the RPO, consistency, the last passing restore drill and its RTO, the bytes stored per
//! service/env tag, and what is out of policy. As a text table, one JSON document, or one
//! self-contained HTML page with charts.

mod html;
mod model;
mod svg;
mod text;

use anyhow::{Context, Result, bail};
use bunker_repo_format::tree::Timestamp;

use crate::args::{GlobalOptions, ReportArgs};
use crate::policy_file::PolicyFile;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &ReportArgs) -> Result<u8> {
    if global.json && args.html.is_some() {
        bail!("--json and --html exclude each other: choose one output");
    }
    let policy = PolicyFile::in_effect(&args.policy)?
        .map(|file| (file.policy, file.path.display().to_string()));
    let repository = repo::open(global, "making the recovery report")?;
    let (snapshots, damaged) = repository.load_readable_snapshots()?;
    let (records, unreadable) = repository.load_audit()?;
    for name in &unreadable {
        eprintln!("bunker: warning: {name}: not a readable audit record; left out of the report");
    }
    let audit: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
    let mut report = model::build(&model::Inputs {
        snapshots: &snapshots,
        audit: &audit,
        policy: policy.as_ref().map(|(p, file)| (p, file.clone())),
        repository: repository.location(),
        now: Timestamp::now(),
    });
    // A snapshot that cannot be read belongs to no known source: a finding of its own.
    report
        .out_of_policy
        .extend(damaged.iter().map(|(id, error)| model::Finding {
            source: format!("snapshot {}", id.short()),
            reason: "snapshot-unreadable",
            detail: format!("{error}; `bunker check` names the damage"),
        }));

    if let Some(file) = &args.html {
        std::fs::write(file, html::render(&report))
            .with_context(|| format!("cannot write the HTML report to {}", file.display()))?;
        println!(
            "wrote {} ({} sources, {} out of policy)",
            file.display(),
            report.sources.len(),
            report.out_of_policy.len()
        );
    } else if global.json {
        crate::output::print_json(&serde_json::to_value(&report)?)?;
    } else {
        text::write(&mut std::io::stdout().lock(), &report)?;
    }
    Ok(if args.strict && !report.out_of_policy.is_empty() {
        exit::REPORT_OUT_OF_POLICY
    } else {
        exit::OK
    })
}
