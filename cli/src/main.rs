//! `bunker`: the command users touch.

fn main() -> std::process::ExitCode {
    bunker_cli::bunker_main()
}
