//! `bunker-agent`: the per-host daemon that runs the policy file's sources.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bunker_agent::Cancel;
use bunker_agent::daemon::drills::{DrillOutcome, DrillRun};
use bunker_agent::daemon::{self, Agent, state::AgentState};
use bunker_agent::job::JobContext;
use bunker_agent::platform;
use bunker_agent::policy::{Credentials, DEFAULT_POLICY_PATH, Policy};
use bunker_agent::quiesce::{self, WatchdogCommand};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::args::GlobalOptions;
use crate::{exit, install_signal_handlers, output::print_json, repo};

/// bunker-agent: runs backup policies on their schedules.
#[derive(Debug, Parser)]
#[command(name = "bunker-agent", version, max_term_width = 100)]
struct AgentCli {
    /// The policy file.
    #[arg(long, short, env = "BUNKER_AGENT_CONFIG", default_value = DEFAULT_POLICY_PATH, global = true)]
    config: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run the sources on their schedules until SIGTERM; or, with --once, run now and exit.
    Run {
        /// Run now and exit with the jobs' status: the named sources, or every source that
        /// is due (or never ran) when none is named.
        #[arg(long)]
        once: bool,
        /// Sources to run (with --once).
        #[arg(requires = "once", value_name = "SOURCE")]
        sources: Vec<String>,
    },
    /// Run restore drills now: restore each source's newest snapshot into a temporary
    /// target, verify it, run its smoke command; record it like a scheduled drill.
    /// Exit 0 if all passed, else 20/21/22 as `bunker verify`.
    Drill {
        /// Sources to drill (default: every source with `verify` settings).
        #[arg(value_name = "SOURCE")]
        sources: Vec<String>,
    },
    /// Show each source's last run, from the agent's state.
    Status,
    /// Thaw a filesystem a crashed run left frozen.
    Thaw {
        /// Its mount point.
        mount: PathBuf,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// E.g. `bunker-agent completion bash > /etc/bash_completion.d/bunker-agent`. Reads
    /// no policy.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The first argument of the thaw watchdog a freeze starts (`bunker-agent __thaw-watchdog
/// MOUNT SECONDS`): an internal entry point, kept out of the command line users see, its
/// help and its completions.
const THAW_WATCHDOG: &str = "__thaw-watchdog";

/// Runs `bunker-agent`.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = if args.get(1).is_some_and(|first| first == THAW_WATCHDOG) {
        thaw_watchdog(&args[2..])
    } else {
        let cli = AgentCli::parse_from(args);
        let cancel = Cancel::new();
        repo::stop_waiting_when(&cancel);
        install_signal_handlers(&cancel);
        run(&cli, &cancel)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let outcome = exit::classify(&error);
            if outcome.print {
                eprintln!("bunker-agent: {}", exit::message(&error));
            }
            outcome.code
        }
    }
}

/// The thaw watchdog: `MOUNT SECONDS` (see [`quiesce::watchdog`]).
fn thaw_watchdog(args: &[OsString]) -> Result<u8> {
    let [mount, seconds] = args else {
        anyhow::bail!("{THAW_WATCHDOG} takes a mount point and a number of seconds");
    };
    let seconds: u64 = seconds
        .to_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("{THAW_WATCHDOG}: {seconds:?} is not a number of seconds")
        })?;
    // The watchdog ignores SIGINT/SIGTERM sent to the agent's process group: it must
    // outlive the agent to do its job.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Cancel::new().flag());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Cancel::new().flag());
    let mount = Path::new(mount);
    let end = quiesce::watchdog(mount, Duration::from_secs(seconds), std::io::stdin())?;
    if end != quiesce::freeze::WatchdogEnd::Dismissed {
        eprintln!(
            "bunker-agent watchdog: thawed {} ({end:?})",
            mount.display()
        );
    }
    Ok(exit::OK)
}

fn run(cli: &AgentCli, cancel: &Cancel) -> Result<u8> {
    match &cli.command {
        AgentCommand::Thaw { mount } => {
            quiesce::thaw_mount(mount)?;
            Ok(exit::OK)
        }
        AgentCommand::Status => status(cli),
        AgentCommand::Completion { shell } => {
            let command = <AgentCli as clap::CommandFactory>::command();
            crate::output::print_completion(command, "bunker-agent", *shell)?;
            Ok(exit::OK)
        }
        AgentCommand::Drill { sources } => {
            let policy = Policy::load(&cli.config)?;
            // A repository that cannot be opened for reading (missing, wrong password, a
            // put-only key) is its own exit code, as for `bunker verify`, not a failed drill.
            if policy.sources.iter().any(|s| s.verify.is_some()) {
                repo::open(&repository_options(&policy)?, "drilling")?;
            }
            let agent = agent(policy, cli.json)?;
            let runs = agent.drill_now(sources, cancel)?;
            if cli.json {
                print_json(&Value::Array(runs.iter().map(DrillRun::json).collect()))?;
            } else if runs.is_empty() {
                writeln!(std::io::stdout(), "no source has verify settings")?;
            } else {
                for run in &runs {
                    print_drill(run)?;
                }
            }
            if cancel.is_cancelled() {
                return Ok(exit::INTERRUPTED);
            }
            Ok(drills_code(&runs))
        }
        AgentCommand::Run { once, sources } => {
            let policy = Policy::load(&cli.config)?;
            let options = repository_options(&policy)?;
            let agent = Arc::new(agent(policy, cli.json)?);
            if *once {
                let done = agent.run_once(sources, cancel)?;
                let failed = done.jobs.iter().filter(|r| !r.succeeded()).count();
                if cli.json {
                    let mut lines: Vec<Value> = done.jobs.iter().map(daemon::report_json).collect();
                    lines.extend(done.drills.iter().map(DrillRun::json));
                    print_json(&Value::Array(lines))?;
                } else if done.jobs.is_empty() && done.drills.is_empty() {
                    writeln!(std::io::stdout(), "no source is due")?;
                } else {
                    for run in &done.drills {
                        print_drill(run)?;
                    }
                }
                if cancel.is_cancelled() {
                    return Ok(exit::INTERRUPTED);
                }
                if failed > 0 {
                    return Ok(exit::JOB_FAILED);
                }
                // A drill that could restore nothing because this agent cannot open the
                // repository for reading (a put-only key, a wrong password) exits with that
                // reason's own code, as `bunker-agent drill` and `bunker verify` do.
                let unrestored = done
                    .drills
                    .iter()
                    .any(|run| matches!(run.outcome, DrillOutcome::Failed(_)));
                if unrestored {
                    repo::open(&options, "drilling")?;
                }
                Ok(drills_code(&done.drills))
            } else {
                agent.run(cancel)?;
                Ok(exit::OK)
            }
        }
    }
}

/// 0 when every drill passed, else the worst failure's code, as `bunker verify` exits.
fn drills_code(runs: &[DrillRun]) -> u8 {
    runs.iter()
        .filter_map(DrillRun::failure)
        .map(exit::drill_failure)
        .max()
        .unwrap_or(exit::OK)
}

/// One line per drill (as `bunker verify` prints it); its problems go to stderr.
fn print_drill(run: &DrillRun) -> Result<()> {
    match &run.outcome {
        DrillOutcome::Ran(report) => crate::cmd::verify::print_line(report, "bunker-agent"),
        DrillOutcome::Failed(error) => {
            writeln!(
                std::io::stdout(),
                "FAIL source {}: {error}, failure restore",
                run.source
            )?;
            Ok(())
        }
        DrillOutcome::Cancelled => {
            writeln!(std::io::stdout(), "CANCELLED source {}", run.source)?;
            Ok(())
        }
    }
}

fn agent(policy: Policy, json: bool) -> Result<Agent> {
    let host = policy.agent.host.clone().unwrap_or_else(platform::hostname);
    let state_dir = policy.agent.state_dir.clone();
    let global = repository_options(&policy)?;
    let watchdog = std::env::current_exe().ok().map(|program| WatchdogCommand {
        program,
        args: vec![THAW_WATCHDOG.into()],
    });
    let open = move || repo::open_writer(&global).map_err(|e| exit::message(&e));
    let log = move |line: &str| {
        if !json {
            eprintln!("bunker-agent: {line}");
        }
    };
    Ok(Agent {
        policy,
        context: JobContext {
            host,
            username: platform::username(),
            watchdog,
            cache_root: repo::cache_root(agent_cache_dir().as_deref()),
            state_dir: Some(state_dir),
        },
        open_repository: Arc::new(open),
        log: Arc::new(log),
        metrics_text: daemon::new_metrics_text(),
    })
}

/// The cache directory `BUNKER_CACHE_DIR` names, as for `bunker` (the unit in
/// `dist/systemd` sets `/var/cache/bunker`); `None`: the default below `$HOME`.
fn agent_cache_dir() -> Option<PathBuf> {
    std::env::var_os("BUNKER_CACHE_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The global options `repo::open` takes, from the policy's `[repository]`.
fn repository_options(policy: &Policy) -> Result<GlobalOptions> {
    let mut global = GlobalOptions {
        repo: Some(policy.repository.url.clone()),
        password_file: None,
        password_command: None,
        key_file: None,
        json: false,
        cache_dir: agent_cache_dir(),
        no_cache: false,
        limit_upload: policy.repository.limits.upload,
        limit_download: policy.repository.limits.download,
    };
    match &policy.repository.credentials {
        Credentials::PasswordFile(path) => global.password_file = Some(path.clone()),
        Credentials::PasswordCommand(command) => global.password_command = Some(command.clone()),
        Credentials::KeyFile(path) => global.key_file = Some(path.clone()),
    }
    Ok(global)
}

fn status(cli: &AgentCli) -> Result<u8> {
    let policy = Policy::load(&cli.config)?;
    let state = AgentState::load(&policy.agent.state_dir);
    if cli.json {
        let list: Vec<Value> = policy
            .sources
            .iter()
            .map(|s| {
                let st = state.sources.get(&s.name).cloned().unwrap_or_default();
                json!({
                    "source": s.name,
                    "kind": s.kind.name(),
                    "schedule": s.schedule.expression(),
                    "state": serde_json::to_value(&st).unwrap_or(Value::Null),
                })
            })
            .collect();
        print_json(&Value::Array(list))?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20}  {:<8}  {:<16}  {:<10}  {:<10}  last success",
        "source", "kind", "schedule", "last run", "last drill"
    )?;
    for s in &policy.sources {
        let st = state.sources.get(&s.name).cloned().unwrap_or_default();
        let drill = match (&st.drill.last_outcome, &s.verify) {
            (Some(outcome), _) => outcome.as_str(),
            (None, Some(_)) => "never",
            (None, None) => "-",
        };
        writeln!(
            out,
            "{:<20}  {:<8}  {:<16}  {:<10}  {:<10}  {}",
            s.name,
            s.kind.name(),
            s.schedule.expression(),
            st.last_outcome.as_deref().unwrap_or("never"),
            drill,
            st.last_success
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into())
        )?;
    }
    Ok(exit::OK)
}
