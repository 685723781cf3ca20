//! Showing a long operation's [`Progress`] while it runs: an indicatif bar on stderr when
//! stderr is a terminal, JSON lines on stderr with `--json` (stdout stays one JSON value),
//! nothing otherwise. Generic over the operation (backup now; restore and prune can pass
//! their own label and counters).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bunker_agent::backup::{FileChange, FileRead, FileSink, LineSink};
use bunker_agent::progress::{Progress, ProgressSnapshot};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// How often a bar redraws.
const BAR_TICK: Duration = Duration::from_millis(100);
/// How often a JSON progress line is written (at most).
const JSON_TICK: Duration = Duration::from_millis(500);

/// A running display; [`Display::finish`] stops it and clears the bar.
pub struct Display {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The bar, when one is drawn (lines printed above it).
    bar: Option<ProgressBar>,
}

impl Display {
    /// True when [`Self::start`] will show anything: with `json`, or on a terminal. An
    /// operation need not count what no one sees.
    pub fn shows(json: bool) -> bool {
        json || std::io::stderr().is_terminal()
    }

    /// Starts showing `progress` for an operation called `label` (`"backup"`, ...).
    pub fn start(label: &'static str, progress: Arc<Progress>, json: bool) -> Self {
        if !Self::shows(json) {
            return Self {
                stop: None,
                thread: None,
                bar: None,
            };
        }
        let mode = if json { Mode::Json } else { Mode::Bar };
        let (stop, stopped) = channel::<()>();
        let bar = matches!(mode, Mode::Bar).then(|| new_bar(label));
        let shown = bar.as_ref().map(|bar| bar.bar.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let tick = if bar.is_some() { BAR_TICK } else { JSON_TICK };
            // Stops when told (or when the display is dropped).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                let now = progress.snapshot();
                match &bar {
                    Some(bar) => update_bar(bar, &now),
                    None => json_line(label, &now, started.elapsed()),
                }
            }
            match bar {
                Some(bar) => bar.bar.finish_and_clear(),
                // The last line holds the final counters, however short the operation.
                None => json_line(label, &progress.snapshot(), started.elapsed()),
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
            bar: shown,
        }
    }

    /// Where a command's standard error should go while a bar is drawn (`None` otherwise):
    /// each line is printed above the bar, which would otherwise erase it when it redraws.
    pub fn line_sink(&self) -> Option<LineSink> {
        let bar = self.bar.clone()?;
        Some(LineSink::new(move |line| {
            bar.println(String::from_utf8_lossy(line))
        }))
    }

    /// Where a backup names each file it reads (`--verbose`): `new PATH` or `changed
    /// PATH` on stdout (above the bar when one is drawn), followed by `(disk image)` for a
    /// file cut at the volume chunk size; or with `json` a JSON line on stderr
    /// (`message_type` `file`, with `change`, `path` and `disk_image`), beside the
    /// progress lines.
    pub fn file_sink(&self, json: bool) -> FileSink {
        let bar = self.bar.clone();
        FileSink::new(move |file: &FileRead<'_>| {
            let word = match file.change {
                FileChange::New => "new",
                FileChange::Changed => "changed",
            };
            if json {
                let line = json!({
                    "message_type": "file",
                    "change": word,
                    "path": file.path.to_string_lossy(),
                    "disk_image": file.disk_image,
                });
                let _ = writeln!(std::io::stderr().lock(), "{line}");
                return;
            }
            let image = if file.disk_image { " (disk image)" } else { "" };
            let line = format!("{word:<8} {}{image}", file.path.display());
            if let Some(bar) = &bar {
                bar.println(line);
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        })
    }

    /// Stops the display (the bar is cleared; JSON lines end with one of the final counters).
    pub fn finish(mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Bar,
    Json,
}

/// A bar for `label`, counting up until it learns a total (see [`update_bar`]).
fn new_bar(label: &'static str) -> Bar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let with_total = format!(
        "{label} {{elapsed_precise}} [{{wide_bar}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ETA {{eta}} {{msg}}"
    );
    let without_total = format!("{label} {{elapsed_precise}} {{bytes}} {{bytes_per_sec}} {{msg}}");
    let style = |template: &str| {
        ProgressStyle::with_template(template)
            .ok()
            .map(|style| style.progress_chars("=> "))
    };
    let without_total = style(&without_total);
    if let Some(style) = &without_total {
        bar.set_style(style.clone());
    }
    Bar {
        bar,
        with_total: style(&with_total),
        without_total,
    }
}

/// An indicatif bar and the two ways it shows: against an expected total (a bar and an
/// ETA), or counting up when nothing says how much there is (a first backup, a stream).
/// The bar has a length exactly when it shows against a total.
struct Bar {
    bar: ProgressBar,
    with_total: Option<ProgressStyle>,
    without_total: Option<ProgressStyle>,
}

fn update_bar(bar: &Bar, now: &ProgressSnapshot) {
    let known = now.expected_bytes > 0;
    if known != bar.bar.length().is_some() {
        let style = if known {
            &bar.with_total
        } else {
            &bar.without_total
        };
        if let Some(style) = style {
            bar.bar.set_style(style.clone());
        }
    }
    if known {
        // The expected total is an estimate (the parent's size): never let it fall behind.
        bar.bar.set_length(now.expected_bytes.max(now.bytes));
    } else {
        bar.bar.unset_length();
    }
    bar.bar.set_position(now.bytes);
    let files = if now.expected_files > 0 {
        format!("{}/{} files", now.files, now.expected_files.max(now.files))
    } else {
        format!("{} files", now.files)
    };
    bar.bar.set_message(files);
}

fn json_line(label: &str, now: &ProgressSnapshot, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let line = json!({
        "message_type": "progress",
        "operation": label,
        "seconds": (seconds * 10.0).round() / 10.0,
        "files": now.files,
        "bytes": now.bytes,
        "bytes_read": now.bytes_read,
        "expected_files": (now.expected_files > 0).then_some(now.expected_files),
        "expected_bytes": (now.expected_bytes > 0).then_some(now.expected_bytes),
        "bytes_per_second": if seconds > 0.0 { (now.bytes as f64 / seconds) as u64 } else { 0 },
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
