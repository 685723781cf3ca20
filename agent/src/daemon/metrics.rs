//! Prometheus metrics: rendered from the agent's state, served over HTTP and/or written to
//! node_exporter's textfile directory.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::state::{AgentState, write_atomically};

/// Renders the metrics text (exposition format 0.0.4).
pub fn render(state: &AgentState, running: &[String]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let label = |source: &str| format!("source=\"{}\"", escape(source));
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

/// Serves `GET /metrics` on `address` from a background thread.
pub fn serve(address: SocketAddr, text: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let text = Arc::clone(&text);
            thread::spawn(move || {
                let _ = answer(stream, &text);
            });
        }
    });
    Ok(bound)
}

fn answer(mut stream: TcpStream, text: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
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
