//! The process's log: `tracing` events as text or JSON lines on stderr. The level comes from
//! `--log-level`, else `RUST_LOG` (or the older `SLUICE_LOG`), else `warn` (for `sluice serve`,
//! `info` for Sluice's own crates, which log a line per request, and `warn` for the others). While `sluice run` draws its progress bar, each line
//! is written with the bar lifted, so the two never mix.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    /// One JSON object per line, with the fields of the event and of its spans.
    Json,
}

/// The progress bar on screen, if any: log lines are written around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Registers (or, with `None`, clears) the bar log lines must not break.
pub(crate) fn set_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

/// Starts the log. `level` is `--log-level`: a level (`debug`) or a filter
/// (`sluice_engine=debug,info`).
pub(crate) fn init(level: Option<&str>, format: LogFormat, default: &str) -> anyhow::Result<()> {
    let from_env =
        |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| (var.to_string(), v));
    let (what, text) = match level {
        Some(l) => ("--log-level".to_string(), l.to_string()),
        None => from_env("RUST_LOG")
            .or_else(|| from_env("SLUICE_LOG"))
            .unwrap_or(("the default".into(), default.into())),
    };
    let filter = EnvFilter::try_new(&text)
        .map_err(|e| anyhow::anyhow!("{what} `{text}` is not a log level or filter: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Stderr);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
    Ok(())
}

/// Hands tracing a fresh line buffer per event.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One event's text, written to stderr in one piece when tracing is done with it.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let write = |bytes: &[u8]| {
            let _ = std::io::stderr().lock().write_all(bytes);
        };
        let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| write(&self.0)),
            _ => write(&self.0),
        }
    }
}
