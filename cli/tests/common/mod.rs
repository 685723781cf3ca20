//! End-to-end test harness for the `bunker` binary.
//!
//! - [`TestDir`]: a temporary directory per test.
//! - [`Bunker`]: runs the binary with `BUNKER_REPOSITORY` / `BUNKER_PASSWORD` set, with a
//!   timeout, and returns an [`Output`] (exit code, stdout, stderr). Every run asserts that
//!   stderr does not contain "panicked".
//! - [`compare_trees`] / [`compare_tree_contents`]: exhaustive comparison of a source tree
//!   and its restored copy (names, types, modes, owners, mtimes, contents, symlink targets,
//!   device numbers, xattrs, hard-link groups, sparseness).
//! - [`build_edge_tree`]: builds the edge-case tree used by the round-trip tests.
//! - Small filesystem helpers (random data, mtimes, device nodes, repository objects).

#![allow(dead_code)] // every test crate uses a different subset

pub mod postgres;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Password of the repositories the tests create.
pub const PASSWORD: &str = "correct horse battery staple";

/// Default time limit of one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Allowed extra allocated 512-byte blocks of a restored sparse file over its source.
pub const SPARSE_SLACK_BLOCKS: u64 = 256;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bunker"))
}

/// True when the tests run as root (device nodes, chown, setuid bits).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Prints a note that shows up in `cargo test -- --nocapture` and in failure output.
pub fn note(msg: impl fmt::Display) {
    eprintln!("NOTE: {msg}");
}

// ---------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------

/// A temporary directory, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A new directory under the system temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bunker-e2e-")
            .tempdir()
            .expect("create temp dir");
        Self { dir }
    }

    /// The directory (absolute, canonical).
    pub fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonicalize temp dir")
    }

    /// `path()/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// A [`Bunker`] for the repository `path()/repo` with [`PASSWORD`].
    pub fn bunker(&self) -> Bunker {
        Bunker::new(&self.join("repo"), &self.join("cache"))
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// What one run of the binary produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `-N` when killed by signal N (no exit code).
    pub code: i32,
    /// Stdout as (lossy) UTF-8.
    pub stdout: String,
    /// Stderr as (lossy) UTF-8.
    pub stderr: String,
    /// Stdout bytes.
    pub raw_stdout: Vec<u8>,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = |s: &str| -> String {
            const MAX: usize = 6000;
            if s.len() > MAX {
                let mut end = MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}... [{} more bytes]", &s[..end], s.len() - end)
            } else {
                s.to_owned()
            }
        };
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command,
            self.code,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

impl Output {
    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "expected exit code {expected}, got {}\n{self}",
            self.code
        );
        self
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not one JSON value: {e}\n{self}"),
        }
    }

    /// Stdout followed by stderr.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the `bunker` binary against one repository.
#[derive(Debug, Clone)]
pub struct Bunker {
    /// The binary (a copy when run as another user).
    pub bin: PathBuf,
    /// Sets `BUNKER_REPOSITORY` when `Some`.
    pub repo: Option<PathBuf>,
    /// Sets `BUNKER_PASSWORD` when `Some`.
    pub password: Option<String>,
    /// Extra environment.
    pub envs: Vec<(OsString, OsString)>,
    /// Program and arguments to run the binary under (e.g. `setpriv ...`).
    pub wrapper: Vec<OsString>,
    /// `XDG_CACHE_HOME` (and `HOME`) for the binary.
    pub cache: PathBuf,
    /// Time limit of one command.
    pub timeout: Duration,
    /// Working directory of the binary (inherited when `None`).
    pub cwd: Option<PathBuf>,
}

impl Bunker {
    /// For `repo` with [`PASSWORD`].
    pub fn new(repo: &Path, cache: &Path) -> Self {
        Self {
            bin: bin(),
            repo: Some(repo.to_owned()),
            password: Some(PASSWORD.to_owned()),
            envs: Vec::new(),
            wrapper: Vec::new(),
            cache: cache.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            cwd: None,
        }
    }

    /// The repository path (panics when unset).
    pub fn repo(&self) -> &Path {
        self.repo.as_deref().expect("Bunker without repo")
    }

    /// A copy with another password (`None`: `BUNKER_PASSWORD` unset).
    pub fn with_password(&self, password: Option<&str>) -> Self {
        let mut b = self.clone();
        b.password = password.map(str::to_owned);
        b
    }

    /// A copy with another repository setting (`None`: `BUNKER_REPOSITORY` unset).
    pub fn with_repo(&self, repo: Option<&Path>) -> Self {
        let mut b = self.clone();
        b.repo = repo.map(Path::to_owned);
        b
    }

    /// A copy with one more environment variable.
    pub fn with_env(&self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let mut b = self.clone();
        b.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        b
    }

    /// A copy running in `dir`.
    pub fn with_cwd(&self, dir: &Path) -> Self {
        let mut b = self.clone();
        b.cwd = Some(dir.to_owned());
        b
    }

    /// A copy with another time limit.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        let mut b = self.clone();
        b.timeout = timeout;
        b
    }

    /// The command, not started.
    pub fn command<I, S>(&self, args: I) -> (Command, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = if let Some((program, rest)) = self.wrapper.split_first() {
            let mut c = Command::new(program);
            c.args(rest).arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        cmd.args(&args);
        for key in [
            "BUNKER_REPOSITORY",
            "BUNKER_PASSWORD",
            "BUNKER_PASSWORD_FILE",
            "BUNKER_PASSWORD_COMMAND",
            "BUNKER_NEW_PASSWORD",
            "BUNKER_NEW_PASSWORD_FILE",
            "BUNKER_KEY_FILE",
            "BUNKER_TO_PASSWORD",
            "BUNKER_TO_PASSWORD_FILE",
            "BUNKER_POLICY",
            "BUNKER_TEST_NOW",
            "XDG_STATE_HOME",
            "BUNKER_CACHE_DIR",
            "BUNKER_AUDIT_LOG",
            "RUST_BACKTRACE",
        ] {
            cmd.env_remove(key);
        }
        let mut shown = String::new();
        if let Some(repo) = &self.repo {
            cmd.env("BUNKER_REPOSITORY", repo);
            shown.push_str(&format!("BUNKER_REPOSITORY={} ", repo.display()));
        }
        if let Some(pw) = &self.password {
            cmd.env("BUNKER_PASSWORD", pw);
            shown.push_str(&format!("BUNKER_PASSWORD={pw:?} "));
        }
        cmd.env("XDG_CACHE_HOME", &self.cache)
            .env("HOME", &self.cache)
            .env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
            shown.push_str(&format!("{}={:?} ", k.to_string_lossy(), v));
        }
        for w in &self.wrapper {
            shown.push_str(&format!("{} ", w.to_string_lossy()));
        }
        shown.push_str("bunker");
        for a in &args {
            shown.push(' ');
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains([' ', '*', '\n', '\'', '"']) {
                shown.push_str(&format!("{s:?}"));
            } else {
                shown.push_str(&s);
            }
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
            shown = format!("(cd {}) {shown}", dir.display());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (cmd, shown)
    }

    /// Runs the binary with `args` and waits (at most the time limit).
    #[track_caller]
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, shown) = self.command(args);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        wait_output(child, shown, self.timeout)
    }

    /// Starts the binary with `args` (stdout and stderr piped); finish with [`wait_output`].
    pub fn spawn<I, S>(&self, args: I) -> (Child, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, shown) = self.command(args);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        (child, shown)
    }

    /// `init` with fast KDF parameters; asserts success.
    #[track_caller]
    pub fn init(&self) -> Output {
        let out = self.init_with(&[]);
        out.ok();
        out
    }

    /// `init EXTRA...` with fast KDF parameters (the exit code is the caller's to check).
    pub fn init_with(&self, extra: &[&str]) -> Output {
        let mut args = vec!["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        self.run(args)
    }

    /// `backup PATHS... EXTRA...`.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec!["backup".into()];
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        args.extend(extra.iter().map(OsString::from));
        self.run(args)
    }

    /// `snapshots --json`, asserted to succeed and be an array.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.run(["snapshots", "--json"]);
        out.ok();
        match out.json() {
            serde_json::Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}\n{out}"),
        }
    }

    /// `restore SPEC --target TARGET`.
    #[track_caller]
    pub fn restore(&self, spec: &str, target: &Path) -> Output {
        self.run([
            OsStr::new("restore"),
            OsStr::new(spec),
            OsStr::new("--target"),
            target.as_os_str(),
        ])
    }
}

/// `bunker-agent --config CONFIG run --once SOURCE --json` with its cache under `cache`,
/// waited for at most [`DEFAULT_TIMEOUT`].
#[track_caller]
pub fn agent_run_once(config: &Path, source: &str, cache: &Path) -> Output {
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_bunker-agent"))
        .arg("--config")
        .arg(config)
        .args(["run", "--once", source, "--json"])
        .env("XDG_CACHE_HOME", cache)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start bunker-agent");
    wait_output(
        agent,
        format!("bunker-agent run --once {source}"),
        DEFAULT_TIMEOUT,
    )
}

/// Waits for `child` (whose stdout and stderr are piped), at most `timeout`; kills it
/// and panics on timeout. Asserts stderr does not contain "panicked".
#[track_caller]
pub fn wait_output(mut child: Child, shown: String, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for bunker") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let raw_stdout = out_reader.join().expect("stdout reader");
    let raw_stderr = err_reader.join().expect("stderr reader");
    let code = match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| -s.signal().unwrap_or(0))
        }
        None => -9,
    };
    let out = Output {
        command: shown,
        code,
        stdout: String::from_utf8_lossy(&raw_stdout).into_owned(),
        stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
        raw_stdout,
    };
    if status.is_none() {
        panic!("command timed out after {timeout:?} and was killed\n{out}");
    }
    assert!(
        !out.stderr.contains("panicked"),
        "the binary panicked\n{out}"
    );
    out
}

/// Sends signal `sig` (e.g. "INT", "TERM") to `pid` with the `kill` command.
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    if !status.success() {
        note(format!("kill -{sig} {pid} failed (process already gone?)"));
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

/// True when `s` is `len` lowercase hex digits.
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `v[key]` as a string, or a panic naming the object.
#[track_caller]
pub fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
}

/// `target` joined with the absolute `path` (`/srv/app` -> `target/srv/app`): where a
/// restore into `target` puts `path`.
pub fn under(target: &Path, path: &Path) -> PathBuf {
    target.join(path.strip_prefix("/").expect("absolute path"))
}

/// `v[key]` as a u64, or a panic naming the object.
#[track_caller]
pub fn u64_field(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

// ---------------------------------------------------------------------------------------
// Data and filesystem helpers
// ---------------------------------------------------------------------------------------

/// A seeded xorshift64 generator: fast, deterministic, incompressible output.
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Creates `path` (and its parents) with `len` random bytes from `seed`.
pub fn write_random_file(path: &Path, seed: u64, len: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    let mut rng = XorShift::new(seed);
    let mut f = File::create(path).expect("create random file");
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write random file");
        left -= n as u64;
    }
}

/// Creates `path` (and its parents) with `data`.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Moves the modification time of every regular file under `root` an hour back, so a
/// backup trusts their recorded identities at once: a file written in the seconds before a
/// backup started is read again by the next one (`agent/src/backup/racy.rs`), which a test
/// that backs up a tree it just wrote would otherwise see.
pub fn age_files(root: &Path) {
    for entry in fs::read_dir(root).unwrap_or_else(|e| panic!("list {}: {e}", root.display())) {
        let path = entry.expect("list a test tree").path();
        let meta = fs::symlink_metadata(&path).expect("stat a test file");
        if meta.is_dir() {
            age_files(&path);
        } else if meta.is_file() {
            let modified = meta.modified().expect("mtime") - Duration::from_secs(3600);
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(modified))
                .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
        }
    }
}

/// Sets the mode (all 12 bits).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Sets access and modification time of `path` (not following symlinks).
pub fn set_mtime(path: &Path, secs: i64, nsec: u32) {
    let meta = fs::symlink_metadata(path).expect("stat for set_mtime");
    let ft = meta.file_type();
    if (ft.is_file() || ft.is_dir()) && secs >= 0 {
        let t = UNIX_EPOCH + Duration::new(secs as u64, nsec);
        let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        f.set_times(FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
    } else {
        let status = Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("@{secs}.{nsec:09}"))
            .arg(path)
            .status()
            .expect("run touch");
        assert!(status.success(), "touch -h failed on {}", path.display());
    }
}

/// Sets distinct odd-nanosecond mtimes on every entry below and including `root`,
/// children before their directory. Returns the number of entries touched.
pub fn set_all_mtimes(root: &Path, base: i64) -> u64 {
    fn rec(path: &Path, base: i64, counter: &mut u64) {
        let meta = fs::symlink_metadata(path).expect("stat");
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .expect("read_dir")
                .map(|e| e.expect("dir entry").path())
                .collect();
            children.sort();
            for c in children {
                rec(&c, base, counter);
            }
        }
        let i = *counter;
        *counter += 1;
        let secs = base + (i as i64) * 1009;
        let nsec = ((i * 2_654_435_761 + 123_456_789) % 1_000_000_000) as u32 | 1;
        set_mtime(path, secs, nsec);
    }
    let mut counter = 0;
    rec(root, base, &mut counter);
    counter
}

/// `mknod PATH TYPE MAJOR MINOR`; false (with a note) when not allowed.
pub fn mknod(path: &Path, kind: &str, major: u32, minor: u32) -> bool {
    let out = Command::new("mknod")
        .arg(path)
        .arg(kind)
        .arg(major.to_string())
        .arg(minor.to_string())
        .output()
        .expect("run mknod");
    if !out.status.success() {
        note(format!(
            "mknod {} {kind} {major} {minor} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    out.status.success()
}

/// `mkfifo PATH`.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// True when the filesystem at `dir` accepts `user.` extended attributes.
pub fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"x").expect("write probe");
    let ok = xattr::set(&probe, "user.bunker.probe", b"1").is_ok();
    fs::remove_file(&probe).expect("remove probe");
    ok
}

/// Every regular file below `dir`, by path relative to it, with its bytes.
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let relative = path.strip_prefix(dir).expect("below").to_owned();
                out.insert(relative, fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// Every temp file (`.tmp-*`, a partial object) anywhere under `dir`, sorted.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp-"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every regular file below `dir`, relative names as in the layout (`data/ab/abcd...`).
pub fn repo_objects(repo: &Path, kind: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let base = repo.join(kind);
    if !base.exists() {
        return out;
    }
    let mut stack = vec![base];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read repo dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(repo).expect("under repo").to_owned();
                let rel = rel.to_string_lossy().into_owned();
                // Temporary files are not objects.
                if !rel.rsplit('/').next().unwrap_or("").starts_with('.') {
                    out.insert(rel);
                }
            }
        }
    }
    out
}

/// Unmounts its path when dropped (also when the test panics), with [`unmount`].
pub struct UnmountOnDrop(pub PathBuf);

/// Mounts a 1 MiB tmpfs on the existing directory `dir` (another filesystem for a test);
/// `None` when this machine will not (not root, no tmpfs).
pub fn mount_tmpfs(dir: &Path) -> Option<UnmountOnDrop> {
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    mounted.then(|| UnmountOnDrop(dir.to_owned()))
}

/// A tmpfs mounted on `dir` (made if missing) for `test`, or `None` after a note that the
/// test is skipped: mounting needs root, and a machine that allows it.
pub fn tmpfs_or_skip(dir: &Path, test: &str) -> Option<UnmountOnDrop> {
    if !is_root() {
        note(format!("not root: skipping {test} (it mounts a tmpfs)"));
        return None;
    }
    fs::create_dir_all(dir).expect("mkdir");
    let mounted = mount_tmpfs(dir);
    if mounted.is_none() {
        note(format!("cannot mount a tmpfs here: skipping {test}"));
    }
    mounted
}

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// Unmounts the filesystem at `mount`, lazily when it is busy (a process or an open
/// directory still in it): a test never leaves a mount (and its loop device) behind.
pub fn unmount(mount: &Path) {
    let unmounted = Command::new("umount")
        .arg(mount)
        .status()
        .is_ok_and(|s| s.success());
    if !unmounted {
        let _ = Command::new("umount").arg("-l").arg(mount).status();
    }
}

/// Total bytes of all regular files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let meta = fs::symlink_metadata(e.path()).expect("stat");
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Recursively copies `src` to `dst` (regular files and directories only, modes kept).
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("create copy dir");
    for e in fs::read_dir(src).expect("read dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        let ft = e.file_type().expect("type");
        if ft.is_dir() {
            copy_dir(&e.path(), &to);
        } else if ft.is_file() {
            fs::copy(e.path(), &to).expect("copy file");
        }
    }
}

/// Flips one byte (xor 0x55) at `offset` of `path` (made writable first).
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom};
    let mode = fs::metadata(path).expect("stat").mode();
    chmod(path, (mode & 0o7777) | 0o200);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 0x55;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write byte");
}

/// Snapshot path as a string for `ls`/`restore` arguments (must be UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------------------

fn kind(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        "<root>".to_owned()
    } else {
        format!("{:?}", OsStr::from_bytes(rel))
    }
}

fn collect(root: &Path) -> BTreeMap<Vec<u8>, (PathBuf, fs::Metadata)> {
    fn rec(path: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, (PathBuf, fs::Metadata)>) {
        let meta =
            fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let is_dir = meta.is_dir();
        out.insert(rel.clone(), (path.to_owned(), meta));
        if is_dir {
            let entries =
                fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()));
            for e in entries {
                let e = e.expect("dir entry");
                let name = e.file_name().into_vec();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&name);
                rec(&e.path(), child, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(root, Vec::new(), &mut out);
    out
}

type XattrMap = BTreeMap<Vec<u8>, Vec<u8>>;

fn xattrs_of(path: &Path) -> Result<XattrMap, String> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(95) => return Ok(XattrMap::new()), // EOPNOTSUPP
        Err(e) => return Err(e.to_string()),
    };
    let mut map = XattrMap::new();
    for name in names {
        let value = xattr::get(path, &name)
            .map_err(|e| format!("get {name:?}: {e}"))?
            .unwrap_or_default();
        map.insert(name.into_vec(), value);
    }
    Ok(map)
}

fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let mut fa = File::open(a)?;
    let mut fb = File::open(b)?;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Asserts `restored` is an exact copy of `source`, including the metadata of the root
/// directory itself. See [`compare`].
#[track_caller]
pub fn compare_trees(source: &Path, restored: &Path) {
    compare(source, restored, true);
}

/// Like [`compare_trees`] but ignores the metadata of the two roots (for restores of a
/// snapshot directory's contents into a target).
#[track_caller]
pub fn compare_tree_contents(source: &Path, restored: &Path) {
    compare(source, restored, false);
}

/// Walks both trees with `symlink_metadata` and checks, per entry: same set of names (raw
/// bytes), same file type, same mode including setuid/setgid/sticky bits, same uid/gid,
/// same mtime (seconds and nanoseconds), same content for files, same symlink target,
/// same rdev for devices, same extended attributes, the same hard-link groups (paths that
/// share an inode in the source share one in the restore, and not with anything else),
/// and for sparse source files at most [`SPARSE_SLACK_BLOCKS`] more allocated blocks.
/// Sockets in the source are ignored (they are not recreated by design).
/// Collects every mismatch and panics with the full list.
#[track_caller]
pub fn compare(source: &Path, restored: &Path, include_root: bool) {
    let mut errors: Vec<String> = Vec::new();
    if !restored.is_dir() {
        panic!(
            "compare_trees: restored root {} is not a directory (source {})",
            restored.display(),
            source.display()
        );
    }
    let src = collect(source);
    let dst = collect(restored);

    for (rel, (_, meta)) in &src {
        if !dst.contains_key(rel) && !meta.file_type().is_socket() {
            errors.push(format!(
                "{}: missing in restore (source type {})",
                show(rel),
                kind(&meta.file_type())
            ));
        }
    }
    for (rel, (_, meta)) in &dst {
        if !src.contains_key(rel) {
            errors.push(format!(
                "{}: extra entry in restore (type {})",
                show(rel),
                kind(&meta.file_type())
            ));
        }
    }

    // Hard-link groups, keyed by (dev, ino), over non-directories.
    let groups = |tree: &BTreeMap<Vec<u8>, (PathBuf, fs::Metadata)>| {
        let mut by_inode: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
        for (rel, (_, meta)) in tree {
            if !meta.is_dir() {
                by_inode
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(rel.clone());
            }
        }
        let mut of_path: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for group in by_inode.into_values() {
            for rel in &group {
                let mut g = group.clone();
                g.sort();
                of_path.insert(rel.clone(), g);
            }
        }
        of_path
    };
    let src_groups = groups(&src);
    let dst_groups = groups(&dst);
    let mut reported_groups: BTreeSet<Vec<Vec<u8>>> = BTreeSet::new();

    for (rel, (spath, smeta)) in &src {
        let Some((dpath, dmeta)) = dst.get(rel) else {
            continue;
        };
        let sk = kind(&smeta.file_type());
        let dk = kind(&dmeta.file_type());
        let name = show(rel);
        if sk != dk {
            errors.push(format!("{name}: type {sk} in source, {dk} in restore"));
            continue;
        }
        if rel.is_empty() && !include_root {
            continue;
        }
        if smeta.mode() & 0o7777 != dmeta.mode() & 0o7777 {
            errors.push(format!(
                "{name} ({sk}): mode {:o} in source, {:o} in restore",
                smeta.mode() & 0o7777,
                dmeta.mode() & 0o7777
            ));
        }
        if (smeta.uid(), smeta.gid()) != (dmeta.uid(), dmeta.gid()) {
            errors.push(format!(
                "{name} ({sk}): owner {}:{} in source, {}:{} in restore",
                smeta.uid(),
                smeta.gid(),
                dmeta.uid(),
                dmeta.gid()
            ));
        }
        if (smeta.mtime(), smeta.mtime_nsec()) != (dmeta.mtime(), dmeta.mtime_nsec()) {
            errors.push(format!(
                "{name} ({sk}): mtime {}.{:09} in source, {}.{:09} in restore",
                smeta.mtime(),
                smeta.mtime_nsec(),
                dmeta.mtime(),
                dmeta.mtime_nsec()
            ));
        }
        match sk {
            "file" => {
                if smeta.len() != dmeta.len() {
                    errors.push(format!(
                        "{name}: size {} in source, {} in restore",
                        smeta.len(),
                        dmeta.len()
                    ));
                }
                match first_difference(spath, dpath) {
                    Ok(None) => {}
                    Ok(Some(off)) => errors.push(format!(
                        "{name}: content differs (first difference at byte {off})"
                    )),
                    Err(e) => errors.push(format!("{name}: cannot compare content: {e}")),
                }
                let sparse = smeta.blocks() * 512 < smeta.len();
                if sparse && dmeta.blocks() > smeta.blocks() + SPARSE_SLACK_BLOCKS {
                    errors.push(format!(
                        "{name}: sparse file not restored sparse: {} blocks allocated in \
                         source, {} in restore (size {})",
                        smeta.blocks(),
                        dmeta.blocks(),
                        smeta.len()
                    ));
                }
            }
            "symlink" => {
                let st = fs::read_link(spath).map(|p| p.into_os_string().into_vec());
                let dt = fs::read_link(dpath).map(|p| p.into_os_string().into_vec());
                match (st, dt) {
                    (Ok(a), Ok(b)) if a == b => {}
                    (a, b) => errors.push(format!(
                        "{name}: symlink target {:?} in source, {:?} in restore",
                        a.map(OsString::from_vec),
                        b.map(OsString::from_vec)
                    )),
                }
            }
            "chardev" | "blockdev" if smeta.rdev() != dmeta.rdev() => {
                errors.push(format!(
                    "{name} ({sk}): rdev {:#x} in source, {:#x} in restore",
                    smeta.rdev(),
                    dmeta.rdev()
                ));
            }
            _ => {}
        }
        let sx = xattrs_of(spath);
        let dx = xattrs_of(dpath);
        if sx != dx {
            errors.push(format!(
                "{name} ({sk}): xattrs {} in source, {} in restore",
                show_xattrs(&sx),
                show_xattrs(&dx)
            ));
        }
        if sk != "dir" {
            let sg = src_groups.get(rel).cloned().unwrap_or_default();
            let dg = dst_groups.get(rel).cloned().unwrap_or_default();
            if sg != dg && reported_groups.insert(sg.clone()) {
                let fmt =
                    |g: &Vec<Vec<u8>>| g.iter().map(|r| show(r)).collect::<Vec<_>>().join(", ");
                errors.push(format!(
                    "{name}: hard-link group [{}] in source, [{}] in restore",
                    fmt(&sg),
                    fmt(&dg)
                ));
            }
        }
    }

    if !errors.is_empty() {
        let total = errors.len();
        errors.truncate(150);
        panic!(
            "compare_trees({}, {}): {total} mismatch(es):\n  {}",
            source.display(),
            restored.display(),
            errors.join("\n  ")
        );
    }
}

fn show_xattrs(x: &Result<XattrMap, String>) -> String {
    match x {
        Err(e) => format!("<error: {e}>"),
        Ok(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}={:02x?}", String::from_utf8_lossy(k), v))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The edge-case tree
// ---------------------------------------------------------------------------------------

/// What [`build_edge_tree`] could create.
#[derive(Debug, Default)]
pub struct EdgeTree {
    /// Device nodes were created.
    pub devices: bool,
    /// `user.` xattrs were set.
    pub xattrs: bool,
    /// Ownership 1234:5678 was set.
    pub owners: bool,
    /// Relative paths of the regular files, with their sizes.
    pub files: BTreeMap<String, u64>,
}

/// Builds the edge-case tree under `root` (which must not exist). With `big`, adds the
/// multi-chunk random file, the 10 MiB compressible file and the 64 MiB sparse file.
pub fn build_edge_tree(root: &Path, big: bool) -> EdgeTree {
    let mut info = EdgeTree::default();
    fs::create_dir_all(root).expect("create tree root");
    let p = |rel: &str| root.join(rel);

    // Regular files of several sizes.
    write_file(&p("files/empty"), b"");
    write_file(&p("files/one"), b"x");
    write_file(&p("files/small.bin"), &random_bytes(1, 4097));
    write_file(&p("files/text.txt"), b"hello, bunker\n");
    write_file(&p("files/.hidden"), b"hidden\n");
    write_file(&p("files/pre-epoch"), b"from 1969\n");
    write_file(&p("files/year-2100"), b"from the future\n");
    fs::create_dir_all(p("empty-dir")).expect("mkdir empty-dir");
    if big {
        write_random_file(&p("files/random-3m.bin"), 2, 3 * 1024 * 1024 + 12_345);
        let line = b"The quick brown fox jumps over the lazy dog. 0123456789 bunker!\n";
        let mut text = Vec::with_capacity(10 << 20);
        while text.len() < 10 << 20 {
            text.extend_from_slice(line);
        }
        text.truncate(10 << 20);
        write_file(&p("files/compressible-10m.txt"), &text);

        // Sparse: data at 0, 5 MiB and 40 MiB; length 64 MiB.
        use std::io::{Seek, SeekFrom};
        fs::create_dir_all(p("sparse")).expect("mkdir sparse");
        let mut f = File::create(p("sparse/sparse-64m")).expect("create sparse");
        for (i, off) in [0u64, 5 << 20, 40 << 20].into_iter().enumerate() {
            f.seek(SeekFrom::Start(off)).expect("seek");
            f.write_all(&random_bytes(100 + i as u64, 64 * 1024))
                .expect("write sparse data");
        }
        f.set_len(64 << 20).expect("set_len sparse");
        drop(f);
        // A file that is entirely a hole.
        File::create(p("sparse/all-hole-8m"))
            .and_then(|f| f.set_len(8 << 20))
            .expect("create hole file");
    }

    // Symlinks.
    fs::create_dir_all(p("links")).expect("mkdir links");
    std::os::unix::fs::symlink("../files/one", p("links/relative")).expect("symlink");
    std::os::unix::fs::symlink(p("files/small.bin"), p("links/absolute")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", p("links/dangling")).expect("symlink");
    std::os::unix::fs::symlink("../files", p("links/to-dir")).expect("symlink");

    // Hard links: a pair and a triple (one link in another directory).
    write_file(&p("hardlinks/pair-a"), b"pair content\n");
    fs::hard_link(p("hardlinks/pair-a"), p("hardlinks/pair-b")).expect("hard link");
    write_file(&p("hardlinks/triple-1"), &random_bytes(3, 20_000));
    fs::hard_link(p("hardlinks/triple-1"), p("hardlinks/triple-2")).expect("hard link");
    fs::create_dir_all(p("hardlinks/sub")).expect("mkdir");
    fs::hard_link(p("hardlinks/triple-1"), p("hardlinks/sub/triple-3")).expect("hard link");

    // Special files.
    fs::create_dir_all(p("special")).expect("mkdir special");
    mkfifo(&p("special/fifo"));
    if is_root() {
        let c = mknod(&p("special/null-like"), "c", 1, 3);
        let b = mknod(&p("special/loop200"), "b", 7, 200);
        info.devices = c && b;
    } else {
        note("not root: no device nodes in the edge tree");
    }

    // Names.
    let names = p("names");
    fs::create_dir_all(&names).expect("mkdir names");
    let odd_names: Vec<Vec<u8>> = vec![
        b"caf\xe9".to_vec(),
        {
            let mut n = b"long-".to_vec();
            n.resize(255, b'n');
            n
        },
        b"with spaces  in it ".to_vec(),
        b"new\nline".to_vec(),
        b"--leading-dashes".to_vec(),
        b"-n".to_vec(),
        b"tab\there".to_vec(),
        "\u{1F600} emoji \u{e9}".as_bytes().to_vec(),
    ];
    for (i, n) in odd_names.iter().enumerate() {
        let path = names.join(OsStr::from_bytes(n));
        write_file(&path, format!("content of name #{i}\n").as_bytes());
    }
    let odd_dir = names.join(OsStr::from_bytes(b"dir\xff\xfe"));
    fs::create_dir_all(&odd_dir).expect("mkdir non-utf8 dir");
    write_file(&odd_dir.join(OsStr::from_bytes(b"inner\x80")), b"inner\n");

    // 60 levels deep.
    let mut deep = p("deep");
    for level in 0..60 {
        deep.push(format!("d{level:02}"));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    write_file(&deep.join("leaf.txt"), b"at the bottom\n");

    // Ownership (before modes: chown clears setuid/setgid).
    write_file(&p("owners/file"), b"owned by 1234:5678\n");
    fs::create_dir_all(p("owners/dir")).expect("mkdir");
    write_file(&p("owners/dir/inner"), b"inner\n");
    std::os::unix::fs::symlink("file", p("owners/link")).expect("symlink");
    write_file(&p("modes/setuid"), b"#!/bin/sh\necho setuid\n");
    write_file(&p("modes/setgid"), b"#!/bin/sh\necho setgid\n");
    fs::create_dir_all(p("modes/sticky-dir")).expect("mkdir");
    write_file(&p("modes/sticky-dir/inside"), b"inside sticky\n");
    fs::create_dir_all(p("modes/setgid-dir")).expect("mkdir");
    write_file(&p("modes/setgid-dir/inside"), b"inside setgid dir\n");
    write_file(&p("modes/no-perms"), b"nobody may read me\n");
    write_file(&p("modes/private-0600"), b"private\n");
    if is_root() {
        use std::os::unix::fs::{chown, lchown};
        chown(p("owners/file"), Some(1234), Some(5678)).expect("chown");
        chown(p("owners/dir"), Some(1234), Some(5678)).expect("chown");
        chown(p("owners/dir/inner"), Some(1234), Some(5678)).expect("chown");
        lchown(p("owners/link"), Some(1234), Some(5678)).expect("lchown");
        write_file(&p("owners/big-ids"), b"uid and gid above 2^31\n");
        chown(
            p("owners/big-ids"),
            Some(3_000_000_000),
            Some(4_000_000_000),
        )
        .expect("chown");
        chown(p("modes/setuid"), Some(1234), Some(5678)).expect("chown");
        chown(p("modes/setgid"), Some(1234), Some(5678)).expect("chown");
        info.owners = true;
    } else {
        note("not root: no chown in the edge tree");
    }
    chmod(&p("modes/setuid"), 0o4755);
    chmod(&p("modes/setgid"), 0o2755);
    chmod(&p("modes/sticky-dir"), 0o1777);
    chmod(&p("modes/setgid-dir"), 0o2775);
    chmod(&p("modes/private-0600"), 0o600);
    chmod(&p("modes/no-perms"), 0o000);

    // Extended attributes with binary values.
    if user_xattrs_supported(root) {
        write_file(&p("xattrs/file"), b"file with xattrs\n");
        fs::create_dir_all(p("xattrs/dir")).expect("mkdir");
        xattr::set(
            p("xattrs/file"),
            "user.binary",
            &[0, 1, 2, 0xff, 0xfe, b'\n', 0],
        )
        .expect("set xattr");
        xattr::set(p("xattrs/file"), "user.empty", b"").expect("set xattr");
        xattr::set(p("xattrs/file"), "user.text", b"hello").expect("set xattr");
        xattr::set(p("xattrs/dir"), "user.dir-attr", &random_bytes(9, 300)).expect("set xattr");
        info.xattrs = true;
    } else {
        note("the filesystem refuses user.* xattrs: no xattrs in the edge tree");
    }

    // Record the regular files before mtimes (sizes do not change).
    for (rel, (_, meta)) in collect(root) {
        if meta.is_file() {
            info.files
                .insert(String::from_utf8_lossy(&rel).into_owned(), meta.len());
        }
    }

    // Mtimes last, children before parents.
    set_all_mtimes(root, 1_234_567_890);
    // Timestamps before 1970 and after 2038 (the parent's mtime does not change).
    set_mtime(&p("files/pre-epoch"), -31_536_000, 999_999_999);
    set_mtime(&p("files/year-2100"), 4_102_444_800, 1);
    info
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) into Unix
/// seconds and nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        b'+' | b'-' if i + 6 == b.len() && b[i + 3] == b':' => {
            let sign = if b[i] == b'+' { 1 } else { -1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + min * 60 + sec - offset, nanos))
}
