//! PostgreSQL for the tests: the server programs, commands run as the `postgres` user,
//! and throwaway clusters on a loopback port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The PostgreSQL server programs, if installed.
pub fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Runs `program args` as the postgres user; panics with its output on failure.
pub fn as_postgres(program: &Path, args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runuser");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway cluster on a loopback port.
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start(bin: &Path, dir: &Path, name: &str) -> Cluster {
        let data = dir.join(name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        fs::create_dir(&data).expect("create data dir");
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&data)
            .status()
            .expect("chown");
        let data_s = data.to_str().expect("utf-8 path");
        as_postgres(
            &bin.join("initdb"),
            &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {data_s} -c fsync=off");
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data_s,
                "-o",
                &options,
                "-w",
                "-l",
                &format!("{data_s}/log"),
                "start",
            ],
        );
        Cluster {
            bin: bin.to_owned(),
            data,
            port,
        }
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        as_postgres(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
