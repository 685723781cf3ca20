//! `bunker policy check | show`: validate an agent policy file, or print it as it will run.

use std::io::Write;

use anyhow::Result;
use bunker_agent::policy::{LoadError, Policy};
use serde_json::{Value, json};

use crate::args::{GlobalOptions, PolicyCommand};
use crate::exit;
use crate::output::print_json;

pub fn run(global: &GlobalOptions, command: PolicyCommand) -> Result<u8> {
    match command {
        PolicyCommand::Check { file } => match Policy::load(&file) {
            Ok(policy) => {
                // What will not work on this host is a warning: a policy is also checked
                // where it is written, not only where it runs.
                let warnings = policy.host_problems();
                if global.json {
                    print_json(&json!({
                        "file": file.display().to_string(),
                        "valid": true,
                        "sources": policy.sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                        "errors": [],
                        "warnings": warnings,
                    }))?;
                } else {
                    for warning in &warnings {
                        eprintln!("{}: warning on this host: {warning}", file.display());
                    }
                    writeln!(
                        std::io::stdout(),
                        "{}: valid, {} source(s): {}",
                        file.display(),
                        policy.sources.len(),
                        policy
                            .sources
                            .iter()
                            .map(|s| format!("{} ({}, {})", s.name, s.kind.name(), s.schedule))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )?;
                }
                Ok(exit::OK)
            }
            Err(LoadError::Invalid(errors)) => {
                if global.json {
                    let list: Vec<Value> = errors
                        .errors
                        .iter()
                        .map(|e| {
                            json!({"line": e.line, "column": e.column, "key": e.key, "message": e.message})
                        })
                        .collect();
                    print_json(&json!({
                        "file": errors.file,
                        "valid": false,
                        "errors": list,
                    }))?;
                } else {
                    let mut err = std::io::stderr().lock();
                    for line in errors.to_string().lines() {
                        writeln!(err, "{line}")?;
                    }
                    writeln!(err, "{} problem(s) found", errors.errors.len())?;
                }
                Ok(exit::POLICY_INVALID)
            }
            Err(e) => Err(e.into()),
        },
        PolicyCommand::Show { file } => {
            let policy = Policy::load(&file)?;
            std::io::stdout().write_all(policy.effective_toml().as_bytes())?;
            Ok(exit::OK)
        }
    }
}
