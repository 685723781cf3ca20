//! `bunker audit`: the repository's audit records, oldest first.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::args::GlobalOptions;
use crate::audit::record_json;
use crate::output::{local_time, print_json};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions) -> Result<u8> {
    let repository = repo::open(global, "reading audit records")?;
    let (records, unreadable) = repository.load_audit()?;
    let mut err = std::io::stderr().lock();
    for name in &unreadable {
        writeln!(err, "bunker: warning: {name}: not a readable audit record")?;
    }
    if global.json {
        let list: Vec<Value> = records
            .iter()
            .map(|(id, r)| record_json(r, Some(&id.to_hex()), None))
            .collect();
        print_json(&Value::Array(list))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<19}  {:<16}  {:<10}  {:<8}  {:<13}  {:>9}  target",
            "time", "host", "user", "what", "outcome", "seconds"
        )?;
        for (_, r) in &records {
            writeln!(
                out,
                "{:<19}  {:<16}  {:<10}  {:<8}  {:<13}  {:>9.1}  {}",
                local_time(r.time),
                r.host,
                r.user,
                r.operation,
                r.outcome,
                r.duration_ms as f64 / 1000.0,
                r.target
            )?;
        }
        writeln!(out, "{} records", records.len())?;
    }
    Ok(if unreadable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}
