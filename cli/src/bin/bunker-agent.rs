//! `bunker-agent`: runs the policy's backups on their schedules.

fn main() -> std::process::ExitCode {
    bunker_cli::agent_main()
}
