//! The database step of a drill: a restored `pg_dump -Fc` archive is loaded into a
//! temporary PostgreSQL server and queried.
//!
//! The server lives in a new private directory under the system temporary directory: its
//! data directory, log, and unix socket. It listens on 127.0.0.1 on a free port (password
//! authentication with a random password nobody is told) and on the socket (trust; the
//! directory is reachable only by the server's user and root), which is what the drill's
//! own clients use. PostgreSQL refuses to run as root, so under root `initdb` and `pg_ctl`
//! run as the `postgres` user through `runuser` and the directory is given to it. Settings
//! that make a throwaway server fast (`fsync = off`) are appended to its configuration.
//!
//! Steps: `initdb`, `pg_ctl -w start`, `createdb NAME`, `pg_restore --exit-on-error
//! --no-owner --no-privileges -d NAME DUMP` (the dumped roles do not exist in a fresh
//! cluster), then each smoke SQL statement with `psql -v ON_ERROR_STOP=1`. The rule for a
//! statement: it must succeed; when its result is a single value (one row of one column),
//! that value must not be false (`f`), numerically zero, empty or NULL. Results of any other
//! shape (no rows, several rows or columns) only have to succeed, so write checks as one
//! value: `SELECT count(*) = 1000 FROM t`, `SELECT EXISTS (...)`.
//!
//! `Server` stops the server (`pg_ctl -m immediate stop`) and removes the directory when
//! dropped, on every path out of the drill.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process;
use crate::cancel::Cancel;
use crate::supervise;

/// The database step a drill runs (PostgreSQL, the only database kind so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseDrill {
    /// The dump's file name inside the restored target (a `command` source stores its
    /// output as `/<source name>`).
    pub dump: String,
    /// The database the dump is restored into.
    pub name: String,
    /// Statements that must hold on the restored database (see the module docs).
    pub smoke_sql: Vec<String>,
    /// The directory of `initdb`, `pg_ctl`, `pg_restore`...; found when `None`.
    pub pg_bin: Option<PathBuf>,
}

/// The superuser of the temporary cluster.
const SUPERUSER: &str = "postgres";

/// Shown in place of NULL by psql, so a NULL is told apart from an empty string.
const NULL_MARK: &str = "\u{1}";
/// Separates the columns of psql's output.
const FIELD_SEPARATOR: &str = "\u{1f}";
/// Separates the rows of psql's output.
const RECORD_SEPARATOR: &str = "\u{1e}";

/// A temporary PostgreSQL server; stopped and its directory removed when dropped.
#[derive(Debug)]
pub(super) struct Server {
    bin: PathBuf,
    /// Holds `data/`, `log` and the socket.
    dir: Option<PathBuf>,
    port: u16,
    /// Run `initdb` and `pg_ctl` as `postgres` (we are root).
    as_postgres: bool,
    running: bool,
}

impl Server {
    /// Makes a cluster in a new private directory and starts it. The error names the step
    /// that failed, with the server's log lines when it would not start.
    pub(super) fn start(pg_bin: Option<&Path>) -> Result<Server, String> {
        let bin = match pg_bin {
            Some(dir) => dir.to_owned(),
            None => find_bin().ok_or_else(|| {
                "no PostgreSQL server programs found (install PostgreSQL, or set verify.pg_bin)"
                    .to_owned()
            })?,
        };
        let as_postgres = crate::platform::is_root();
        let dir = super::private_temp_dir("pg")
            .map_err(|e| format!("cannot make a directory for the temporary server: {e}"))?;
        let mut server = Server {
            bin,
            dir: Some(dir.clone()),
            port: 0,
            as_postgres,
            running: false,
        };
        let password = dir.join("password");
        fs::write(&password, format!("{}\n", random_hex()?))
            .map_err(|e| format!("cannot write {}: {e}", password.display()))?;
        if as_postgres {
            let user = nix::unistd::User::from_name(SUPERUSER)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    "PostgreSQL does not run as root, and there is no postgres user to run it"
                        .to_owned()
                })?;
            for path in [&dir, &password] {
                std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .map_err(|e| format!("cannot give {} to postgres: {e}", path.display()))?;
            }
        }
        let data = dir.join("data");
        let mut initdb = server.server_program("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", password.display()))
            .args(["-E", "UTF8", "--no-locale", "--no-sync"]);
        process::run(&mut initdb, "initdb of the temporary PostgreSQL server")?;
        server.port = free_port()?;
        let settings = format!(
            "\n# bunker drill\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\n",
            server.port,
            dir.display().to_string().replace('\'', "''")
        );
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| format!("cannot configure the temporary server: {e}"))?;
        let log = dir.join("log");
        let mut start = server.server_program("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"]);
        // Set first: a server that started but did not answer in time is still stopped.
        server.running = true;
        if let Err(e) = process::run(&mut start, "starting the temporary PostgreSQL server") {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{e}; its log ends: {}", tail.join(" | ")));
        }
        Ok(server)
    }

    /// Creates database `name` and restores the archive `dump` into it.
    pub(super) fn restore(&self, dump: &Path, name: &str, cancel: &Cancel) -> Result<(), String> {
        let mut createdb = self.client("createdb");
        createdb.arg("--").arg(name);
        process::run(&mut createdb, &format!("createdb {name:?}"))?;
        let mut restore = self.client("pg_restore");
        restore
            .args([
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                "-d",
                name,
            ])
            .arg(dump);
        let what = format!("pg_restore of {} into {name:?}", dump.display());
        let (out, stopped) = supervise::output(&mut restore, None, cancel)
            .map_err(|e| format!("{what} could not run: {e}"))?;
        if stopped.is_some() {
            return Err(format!("{what} was stopped: the drill was cancelled"));
        }
        if !out.status.success() {
            return Err(format!(
                "{what} failed ({}): {}",
                out.status,
                process::first_lines(&out, 3)
            ));
        }
        Ok(())
    }

    /// Runs one smoke statement on database `name`; the error quotes the statement and
    /// says what it returned or why it failed.
    pub(super) fn check(&self, name: &str, sql: &str, cancel: &Cancel) -> Result<(), String> {
        let mut psql = self.client("psql");
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-P")
            .arg(format!("null={NULL_MARK}"))
            .args(["-F", FIELD_SEPARATOR, "-R", RECORD_SEPARATOR])
            .args(["-d", name, "-c", sql]);
        let (out, stopped) = supervise::output(&mut psql, None, cancel)
            .map_err(|e| format!("smoke SQL {sql:?}: psql could not run: {e}"))?;
        if stopped.is_some() {
            return Err(format!(
                "smoke SQL {sql:?} was stopped: the drill was cancelled"
            ));
        }
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr);
            let message = message.lines().next().unwrap_or_default().trim();
            return Err(format!("smoke SQL {sql:?} failed: {message}"));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        match single_value(&text) {
            Some(value) if !truthy(value) => Err(format!(
                "smoke SQL {sql:?} returned {} (a single value must not be false, 0, empty \
                 or NULL)",
                if value == NULL_MARK {
                    "NULL".to_owned()
                } else {
                    format!("{value:?}")
                }
            )),
            _ => Ok(()),
        }
    }

    /// What a smoke command needs to reach the restored database `name`: `PGHOST`,
    /// `PGPORT`, `PGUSER` and `PGDATABASE`.
    pub(super) fn environment(&self, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.socket_dir().display().to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", SUPERUSER.to_owned()),
            ("PGDATABASE", name.to_owned()),
        ]
    }

    /// Stops the server and removes its directory now; returns what could not be undone.
    pub(super) fn stop(mut self) -> Vec<String> {
        self.undo()
    }

    fn undo(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(dir) = self.dir.clone() else {
            return warnings;
        };
        if self.running {
            self.running = false;
            let mut stop = self.server_program("pg_ctl");
            stop.arg("-D").arg(dir.join("data")).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ]);
            if let Err(e) = process::run(&mut stop, "stopping the temporary PostgreSQL server") {
                warnings.push(e);
            }
        }
        self.dir = None;
        if let Err(e) = fs::remove_dir_all(&dir) {
            warnings.push(format!(
                "could not remove the temporary server's directory {}: {e}",
                dir.display()
            ));
        }
        warnings
    }

    fn socket_dir(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    /// `initdb` or `pg_ctl`, as `postgres` when we are root, run inside the server's
    /// directory (root's working directory may be closed to `postgres`).
    fn server_program(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut c = process::command("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(program);
            c
        } else {
            process::command(program)
        };
        command.current_dir(self.socket_dir());
        command
    }

    /// A client program connecting over the server's socket as its superuser.
    fn client(&self, name: &str) -> Command {
        let mut command = process::command(self.bin.join(name));
        command
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER])
            .env("PGCONNECT_TIMEOUT", "30")
            .env("LC_ALL", "C")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        command
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

/// The value of a one-row, one-column psql result, else `None`.
fn single_value(text: &str) -> Option<&str> {
    // No output at all is no rows; one empty value still prints its newline.
    if text.is_empty() {
        return None;
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.contains(RECORD_SEPARATOR) || text.contains(FIELD_SEPARATOR) {
        return None;
    }
    Some(text)
}

/// False for `f`/`false`, numeric zero, empty and NULL.
fn truthy(value: &str) -> bool {
    let trimmed = value.trim();
    !(trimmed.is_empty()
        || value == NULL_MARK
        || trimmed.eq_ignore_ascii_case("f")
        || trimmed.eq_ignore_ascii_case("false")
        || trimmed.parse::<f64>().is_ok_and(|n| n == 0.0))
}

/// The newest `/usr/lib/postgresql/*/bin` (Debian's layout), else the directory of
/// `initdb` on `PATH`.
fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            // `16`, `9.6`: compared as numbers, so 16 is newer than 9.6.
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    if let Some((_, newest)) = dirs.pop() {
        return Some(newest);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1 for the temporary server: {e}"))
}

/// 32 random hex digits (the server's password, which nobody needs to know).
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_value_must_be_true_nonzero_and_present() {
        for (output, passes) in [
            ("t\n", true),
            ("1000\n", true),
            ("yes\n", true),
            ("f\n", false),
            ("false\n", false),
            ("0\n", false),
            ("0.00\n", false),
            ("\n", false),
            ("\u{1}\n", false),
        ] {
            let value = single_value(output).expect("one value");
            assert_eq!(truthy(value), passes, "{output:?}");
        }
        // No rows, several rows or several columns: only success counts.
        assert_eq!(single_value(""), None);
        assert_eq!(single_value("0\u{1e}0\n"), None);
        assert_eq!(single_value("0\u{1f}0\n"), None);
    }
}
