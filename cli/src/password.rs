//! Where passwords come from: a file, a command, the environment, or a prompt on a TTY.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::args::GlobalOptions;

fn strip_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn from_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the password file {}", path.display()))?;
    Ok(strip_newline(
        text.lines().next().unwrap_or_default().to_owned(),
    ))
}

fn from_command(command: &str) -> Result<String> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .with_context(|| format!("could not run the password command {command:?}"))?;
    if !output.status.success() {
        bail!(
            "the password command {command:?} failed with {}",
            output.status
        );
    }
    let text = String::from_utf8(output.stdout)
        .with_context(|| format!("the password command {command:?} printed non-UTF-8"))?;
    Ok(strip_newline(text))
}

fn prompt(label: &str) -> Result<String> {
    rpassword::prompt_password(label).context("could not read the password from the terminal")
}

/// The repository password: `--password-file` / `BUNKER_PASSWORD_FILE`, then
/// `--password-command` / `BUNKER_PASSWORD_COMMAND`, then `BUNKER_PASSWORD`, then a prompt
/// when stdin is a terminal.
pub fn repository_password(global: &GlobalOptions, confirm: bool) -> Result<String> {
    if let Some(path) = &global.password_file {
        return from_file(path);
    }
    if let Some(command) = &global.password_command {
        return from_command(command);
    }
    if let Ok(password) = std::env::var("BUNKER_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password given: set BUNKER_PASSWORD, BUNKER_PASSWORD_FILE or BUNKER_PASSWORD_COMMAND"
        );
    }
    let password = prompt("repository password: ")?;
    if confirm && prompt("repeat the password: ")? != password {
        bail!("the passwords do not match");
    }
    Ok(password)
}

/// A new password for `key add` / `key passwd`: `--new-password-file`, then
/// `BUNKER_NEW_PASSWORD`, then a prompt (asked twice).
pub fn new_password(file: Option<&Path>) -> Result<String> {
    let password = if let Some(path) = file {
        from_file(path)?
    } else if let Ok(password) = std::env::var("BUNKER_NEW_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        let first = prompt("new password: ")?;
        if prompt("repeat the new password: ")? != first {
            bail!("the passwords do not match");
        }
        first
    } else {
        bail!("no new password given: set BUNKER_NEW_PASSWORD or use --new-password-file");
    };
    if password.is_empty() {
        bail!("refusing an empty password");
    }
    Ok(password)
}

/// The password of `copy`'s target: `BUNKER_TO_PASSWORD_FILE`, then `BUNKER_TO_PASSWORD`.
pub fn target_password() -> Result<String> {
    let password = if let Some(path) = std::env::var_os("BUNKER_TO_PASSWORD_FILE") {
        from_file(Path::new(&path))?
    } else if let Ok(password) = std::env::var("BUNKER_TO_PASSWORD") {
        password
    } else {
        bail!("no password for the target: set BUNKER_TO_PASSWORD or BUNKER_TO_PASSWORD_FILE");
    };
    if password.is_empty() {
        bail!("refusing an empty target password");
    }
    Ok(password)
}
