//! Prometheus metrics: rendered from the agent's state, served over HTTP and/or written to
//! node_exporter's textfile directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::state::{AgentState, DrillState, write_atomically};

/// Renders the metrics text (exposition format 0.0.4). `rpo` is each source's recovery
/// point objective; `now` (Unix seconds) dates the snapshot ages.
pub fn render(
    state: &AgentState,
    running: &[String],
    rpo: &BTreeMap<String, Duration>,
    now: i64,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        write_family(&mut out, name, kind, help, samples);
    };
    let per_source =
        |f: &dyn Fn(&super::state::SourceState) -> Option<String>| -> Vec<(String, String)> {
            state
                .sources
                .iter()
                .filter_map(|(name, s)| f(s).map(|v| (label(name), v)))
                .collect()
        };
    family(
        "bunker_backup_last_success_timestamp_seconds",
        "gauge",
        "When the source's last successful backup finished.",
        per_source(&|s| s.last_success.map(|t| t.to_string())),
    );
    family(
        "bunker_backup_last_run_timestamp_seconds",
        "gauge",
        "When the source's last backup run finished, whatever its outcome.",
        per_source(&|s| s.last_finished.map(|t| t.to_string())),
    );
    family(
        "bunker_backup_last_run_success",
        "gauge",
        "1 if the source's last run wrote a snapshot, else 0.",
        per_source(&|s| {
            s.last_outcome
                .as_ref()
                .map(|o| if o == "succeeded" { "1" } else { "0" }.to_owned())
        }),
    );
    family(
        "bunker_backup_last_duration_seconds",
        "gauge",
        "Duration of the source's last run, hooks included.",
        per_source(&|s| s.last_finished.map(|_| format!("{:.3}", s.last_duration))),
    );
    family(
        "bunker_backup_last_bytes",
        "gauge",
        "Bytes in the source's last successful snapshot.",
        per_source(&|s| s.last_success.map(|_| s.last_bytes.to_string())),
    );
    family(
        "bunker_backup_last_bytes_added",
        "gauge",
        "New bytes the source's last successful run added to the repository.",
        per_source(&|s| s.last_success.map(|_| s.last_bytes_added.to_string())),
    );
    family(
        "bunker_backup_last_files",
        "gauge",
        "Files in the source's last successful snapshot.",
        per_source(&|s| s.last_success.map(|_| s.last_files.to_string())),
    );
    family(
        "bunker_backup_last_bytes_read",
        "gauge",
        "Bytes the source's last successful run read (unchanged files are not read).",
        per_source(&|s| s.last_success.map(|_| s.last_bytes_read.to_string())),
    );
    family(
        "bunker_backup_last_dedup_ratio",
        "gauge",
        "Bytes in the last snapshot per new byte it added (higher: more deduplicated).",
        per_source(&|s| {
            s.last_success.map(|_| {
                format!(
                    "{:.3}",
                    s.last_bytes as f64 / s.last_bytes_added.max(1) as f64
                )
            })
        }),
    );
    family(
        "bunker_backup_last_consistency",
        "gauge",
        "1 for the consistency level of the source's last snapshot (none, crash, application).",
        state
            .sources
            .iter()
            .filter_map(|(name, s)| {
                s.last_consistency.as_ref().map(|c| {
                    (
                        format!("{},level=\"{}\"", label(name), escape(c)),
                        "1".to_owned(),
                    )
                })
            })
            .collect(),
    );
    family(
        "bunker_backup_newest_snapshot_age_seconds",
        "gauge",
        "Age of the source's newest successful snapshot.",
        per_source(&|s| s.last_success.map(|t| (now - t).max(0).to_string())),
    );
    family(
        "bunker_source_rpo_seconds",
        "gauge",
        "The source's recovery point objective: its newest snapshot should never be older.",
        rpo.iter()
            .map(|(name, d)| (label(name), d.as_secs().to_string()))
            .collect(),
    );
    family(
        "bunker_backup_consecutive_failures",
        "gauge",
        "Runs of the source that failed since its last success.",
        per_source(&|s| Some(s.consecutive_failures.to_string())),
    );
    let mut runs = Vec::new();
    for (name, s) in &state.sources {
        for (outcome, count) in &s.runs {
            runs.push((
                format!("{},outcome=\"{}\"", label(name), escape(outcome)),
                count.to_string(),
            ));
        }
    }
    family(
        "bunker_backup_runs_total",
        "counter",
        "Backup runs by outcome.",
        runs,
    );
    family(
        "bunker_backup_running",
        "gauge",
        "1 while a run of the source is in progress.",
        state
            .sources
            .keys()
            .map(|name| {
                let on = running.iter().any(|r| r == name);
                (label(name), if on { "1" } else { "0" }.to_owned())
            })
            .collect(),
    );
    out
}

/// The restore-drill metrics: per source that was drilled, the last drill's outcome, times
/// and restore duration, and its failures; per source with `verify` settings (`covered`,
/// from [`coverage`](super::drills::coverage)), whether a drill passed within its window;
/// and the fleet's coverage ratio (absent when no source has `verify` settings).
pub fn render_drills(state: &AgentState, covered: &[(String, bool)]) -> String {
    let mut out = String::new();
    let drilled = |f: &dyn Fn(&DrillState) -> Option<String>| -> Vec<(String, String)> {
        state
            .sources
            .iter()
            .filter_map(|(name, s)| f(&s.drill).map(|v| (label(name), v)))
            .collect()
    };
    write_family(
        &mut out,
        "bunker_drill_last_success",
        "gauge",
        "1 if the source's last restore drill passed, else 0.",
        drilled(&|d| {
            d.last_outcome
                .as_ref()
                .map(|o| if o == "passed" { "1" } else { "0" }.to_owned())
        }),
    );
    write_family(
        &mut out,
        "bunker_drill_last_run_timestamp_seconds",
        "gauge",
        "When the source's last restore drill finished, whatever its outcome.",
        drilled(&|d| d.last_finished.map(|t| t.to_string())),
    );
    write_family(
        &mut out,
        "bunker_drill_last_pass_timestamp_seconds",
        "gauge",
        "When a restore drill of the source last passed.",
        drilled(&|d| d.last_pass.map(|t| t.to_string())),
    );
    write_family(
        &mut out,
        "bunker_drill_restore_seconds",
        "gauge",
        "Time to restore (RTO) in the source's last restore drill.",
        drilled(&|d| {
            d.last_finished
                .map(|_| format!("{:.3}", d.last_restore_seconds))
        }),
    );
    write_family(
        &mut out,
        "bunker_drill_failures_total",
        "counter",
        "Restore drills of the source that failed.",
        state
            .sources
            .iter()
            .filter(|(name, s)| {
                s.drill.last_finished.is_some() || covered.iter().any(|(n, _)| n == *name)
            })
            .map(|(name, s)| (label(name), s.drill.failures.to_string()))
            .collect(),
    );
    write_family(
        &mut out,
        "bunker_drill_covered",
        "gauge",
        "1 if a restore drill of the source passed within its verify window, else 0.",
        covered
            .iter()
            .map(|(name, on)| (label(name), if *on { "1" } else { "0" }.to_owned()))
            .collect(),
    );
    if !covered.is_empty() {
        let count = covered.iter().filter(|(_, on)| *on).count();
        let ratio = count as f64 / covered.len() as f64;
        let _ = write!(
            out,
            "# HELP bunker_drill_coverage_ratio Sources with a passing drill within their window, \
             per source with verify settings.\n\
             # TYPE bunker_drill_coverage_ratio gauge\n\
             bunker_drill_coverage_ratio {ratio:.3}\n"
        );
    }
    out
}

/// Writes one metric family: HELP, TYPE, then one line per (labels, value).
fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: Vec<(String, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// `source="NAME"`, escaped.
fn label(source: &str) -> String {
    format!("source=\"{}\"", escape(source))
}

/// The self-service restore gauges: leases still active, and leases expired whose target
/// is not removed yet (refused, failed, or waiting for the next check).
pub fn render_leases(active: u64, expired: u64) -> String {
    format!(
        "# HELP bunker_restores_active Self-service restores whose lease has not expired.\n\
         # TYPE bunker_restores_active gauge\n\
         bunker_restores_active {active}\n\
         # HELP bunker_restores_expired Expired self-service restores whose target is not removed yet.\n\
         # TYPE bunker_restores_expired gauge\n\
         bunker_restores_expired {expired}\n"
    )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the metrics to `path` atomically (node_exporter must never see half a file).
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    write_atomically(path, text.as_bytes())
}

/// The text the HTTP endpoint serves; the scheduler replaces it after every change.
pub type Shared = Arc<Mutex<String>>;

/// The longest request head (request line and headers) the endpoint reads: a scrape
/// sends a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 << 10;
/// How long a client has to send its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Requests answered at once; a connection beyond them is closed unanswered, so whoever
/// can reach the address cannot make the agent start threads without limit.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `address` from a background thread.
pub fn serve(address: SocketAddr, text: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::AcqRel);
                continue; // dropped: closed
            }
            let (text, open) = (Arc::clone(&text), Arc::clone(&open));
            thread::spawn(move || {
                let _ = answer(stream, &text);
                open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    });
    Ok(bound)
}

/// Reads the request head (up to the blank line) within [`REQUEST_DEADLINE`] and
/// [`MAX_REQUEST_HEAD`] bytes; `None` when the client sent more, or too slowly.
fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if head.len() >= MAX_REQUEST_HEAD || left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(Some(head)), // the client is done sending
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

fn answer(mut stream: TcpStream, text: &Shared) -> std::io::Result<()> {
    let Some(head) = read_request_head(&mut stream)? else {
        let refused = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\
                       Connection: close\r\n\r\n";
        stream.write_all(refused.as_bytes())?;
        return stream.flush();
    };
    let request_line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]));
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let body = text.lock().map(|t| t.clone()).unwrap_or_default();
        ("200 OK", body)
    } else {
        ("404 Not Found", "not found\n".to_owned())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::SourceState;

    /// Parses exposition text into (name, labels, value), checking every line's shape.
    fn parse(text: &str) -> Vec<(String, String, f64)> {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap();
            assert!(labels.ends_with('}'), "{line}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{line}"
            );
            samples.push((
                name.to_owned(),
                labels.trim_end_matches('}').to_owned(),
                value.parse().unwrap(),
            ));
        }
        samples
    }

    /// A request head that does not end by the limit is refused at once (the old endpoint
    /// read a line of any length); a scrape after it is answered.
    #[test]
    fn a_request_head_past_the_limit_is_refused_and_scrapes_go_on() {
        let text: Shared = Arc::new(Mutex::new("bunker_up 1\n".into()));
        let address = serve("127.0.0.1:0".parse().expect("address"), text).expect("serve");
        let exchange = |request: &[u8]| {
            let mut stream = TcpStream::connect(address).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            stream.write_all(request).expect("send");
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).expect("reply");
            String::from_utf8_lossy(&reply).into_owned()
        };
        let reply = exchange(&vec![b'a'; MAX_REQUEST_HEAD]);
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply:?}");
        let reply = exchange(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply:?}");
        assert!(reply.ends_with("\r\n\r\nbunker_up 1\n"), "{reply:?}");
    }

    #[test]
    fn every_line_is_valid_exposition_and_values_are_right() {
        let mut state = AgentState::default();
        state.sources.insert(
            "db \"main\"".into(),
            SourceState {
                last_success: Some(1_000),
                last_finished: Some(1_000),
                last_outcome: Some("succeeded".into()),
                last_bytes: 1_000_000,
                last_bytes_added: 250_000,
                last_files: 1,
                last_consistency: Some("application".into()),
                ..SourceState::default()
            },
        );
        state.sources.insert(
            "files".into(),
            SourceState {
                last_finished: Some(1_500),
                last_outcome: Some("failed".into()),
                consecutive_failures: 2,
                ..SourceState::default()
            },
        );
        let rpo = BTreeMap::from([("files".to_owned(), Duration::from_secs(7200))]);
        let samples = parse(&render(&state, &["files".to_owned()], &rpo, 4_600));
        let get = |name: &str, source: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l.starts_with(&format!("source=\"{source}\"")))
                .map(|(_, _, v)| *v)
        };
        let db = "db \\\"main\\\"";
        assert_eq!(get("bunker_backup_last_dedup_ratio", db), Some(4.0));
        assert_eq!(
            get("bunker_backup_newest_snapshot_age_seconds", db),
            Some(3_600.0)
        );
        assert_eq!(get("bunker_backup_last_run_success", db), Some(1.0));
        assert_eq!(get("bunker_backup_last_run_success", "files"), Some(0.0));
        assert_eq!(
            get("bunker_backup_consecutive_failures", "files"),
            Some(2.0)
        );
        assert_eq!(get("bunker_backup_running", "files"), Some(1.0));
        assert_eq!(get("bunker_source_rpo_seconds", "files"), Some(7_200.0));
        assert_eq!(
            get("bunker_backup_newest_snapshot_age_seconds", "files"),
            None
        );
        assert!(
            samples
                .iter()
                .any(|(n, l, v)| n == "bunker_backup_last_consistency"
                    && l.contains("level=\"application\"")
                    && *v == 1.0)
        );
    }
}
