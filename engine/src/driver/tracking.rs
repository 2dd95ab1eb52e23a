//! An attempt's tracking: the tracking run the engine makes for it (the step's
//! `MLFLOW_RUN_ID`), ended with the attempt, and the `$SLUICE_METRICS` file, read as it grows:
//! one JSON object a line, `{"key": "loss", "value": 0.31, "step": 3, "timestamp":
//! 1733300000000}` (`step` and `timestamp` optional). Complete lines only; a bad line is said
//! in the step's log and skipped, never fails the step.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sluice_worker::{AttemptSink, LogStream};

use super::{Engine, EngineError, Result};
use crate::security::tokens::AttemptKey;
use crate::store::Store;
use crate::tracking::{Metric, MetricPoint, RunStatus, TaskRef};

impl Engine {
    /// The metric points of a run, or of one of its steps (by id), in recorded order.
    pub fn metrics(&self, run: u64, step: Option<&str>) -> Result<Vec<MetricPoint>> {
        let record = self.store.run(run)?;
        let ix = match step {
            Some(step) => {
                let plan = self.plan_of(&record)?;
                let ix = plan.index.get(step).copied();
                Some(ix.ok_or_else(|| {
                    EngineError::NotFound(format!("step `{step}` in run {run} ({})", plan.name()))
                })?)
            }
            None => None,
        };
        Ok(self.store.run_metrics(run, ix)?)
    }
}

/// The tokens steps reach their tracking runs with: minted under a key this process made,
/// and standing only while their attempt runs here.
#[derive(Debug)]
pub(crate) struct AttemptTokens {
    key: AttemptKey,
    live: Mutex<HashSet<String>>,
}

impl AttemptTokens {
    pub(super) fn new() -> std::result::Result<Self, String> {
        Ok(AttemptTokens { key: AttemptKey::generate()?, live: Mutex::default() })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn mint(&self, run: &str) -> String {
        self.key.mint(run)
    }

    /// The tracking run a presented token names, if it was minted here and its attempt runs.
    pub(super) fn check(&self, presented: &str) -> Option<String> {
        let run = self.key.check(presented)?;
        self.live().contains(run).then(|| run.to_string())
    }
}

/// The tracking of one attempt: its tracking run and its metrics file.
pub(super) struct AttemptTracking {
    store: Store,
    tokens: Arc<AttemptTokens>,
    /// The tracking run's id (none when it could not be made: said in the step's log).
    pub(super) run_id: Option<String>,
    file: MetricsFile,
}

impl AttemptTracking {
    /// Makes the attempt's tracking run; its token stands until the attempt ends.
    pub(super) fn start(
        store: Store,
        tokens: Arc<AttemptTokens>,
        task: TaskRef,
        file: PathBuf,
        now: i64,
        log: &dyn AttemptSink,
    ) -> Self {
        let user = crate::security::local_actor();
        let run_id = match store.start_task_run(task, user.trim_start_matches("local:"), now) {
            Ok(id) => Some(id),
            Err(e) => {
                log.log(
                    LogStream::System,
                    format!("sluice: cannot make the step's tracking run: {e}\n").as_bytes(),
                );
                None
            }
        };
        if let Some(id) = &run_id {
            tokens.live().insert(id.clone());
        }
        AttemptTracking { store, tokens, run_id, file: MetricsFile::new(file) }
    }

    /// The token of the attempt's tracking run.
    pub(super) fn token(&self) -> Option<String> {
        self.run_id.as_ref().map(|id| self.tokens.mint(id))
    }

    /// Stores what the step appended to its metrics file since the last look (with `last`,
    /// a final line without its line break too); says bad lines in its log.
    pub(super) fn poll(&mut self, log: &dyn AttemptSink, now: i64, last: bool) {
        let (points, said) = self.file.poll(now, last);
        for s in said {
            log.log(LogStream::System, format!("sluice: {s}\n").as_bytes());
        }
        self.record(&points, log);
    }

    /// Stores points the step reported otherwise (a plugin's `metrics`).
    pub(super) fn record(&self, points: &[Metric], log: &dyn AttemptSink) {
        if let (Some(id), false) = (&self.run_id, points.is_empty())
            && let Err(e) = self.store.log_metrics(id, points)
        {
            log.log(LogStream::System, format!("sluice: cannot store metrics: {e}\n").as_bytes());
        }
    }

    /// Ends the tracking run as the attempt ended.
    pub(super) fn finish(&self, status: RunStatus, now: i64) {
        if let Some(id) = &self.run_id
            && let Err(e) = self.store.finish_task_run(id, status, now)
        {
            tracing::warn!(error = %e, "cannot end the step's tracking run");
        }
    }
}

/// The attempt's token stops standing when its tracking goes (the attempt ended).
impl Drop for AttemptTracking {
    fn drop(&mut self) {
        if let Some(id) = &self.run_id {
            self.tokens.live().remove(id);
        }
    }
}

/// A plugin's `metrics` output (an object of numbers) as points at step 0.
pub(super) fn reported(outputs: &serde_json::Map<String, Value>, now: i64) -> Vec<Metric> {
    let Some(Value::Object(reported)) = outputs.get("metrics") else { return Vec::new() };
    reported
        .iter()
        .filter(|(k, _)| crate::tracking::check_key("metric", k).is_ok())
        .filter_map(|(k, v)| Some((k, v.as_f64().filter(|f| f.is_finite())?)))
        .map(|(key, value)| Metric { key: key.clone(), value, step: 0, timestamp: now })
        .collect()
}

/// Past this, the rest of the file is not read (said once).
const MAX_FILE: u64 = 64 << 20;
/// Read at most this much a poll.
const MAX_POLL: u64 = 1 << 20;
/// A longer line is no metric: it is skipped, not kept whole until its end comes.
const MAX_LINE: usize = 64 << 10;

struct MetricsFile {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    line: u64,
    /// Whether the line being read is past `MAX_LINE` (its start was dropped).
    overlong: bool,
    /// How many points were read.
    count: u32,
    full: bool,
}

impl MetricsFile {
    fn new(path: PathBuf) -> Self {
        MetricsFile { path, offset: 0, partial: Vec::new(), line: 0, overlong: false, count: 0, full: false }
    }

    /// What was appended since the last poll: the new points, and a sentence for each line
    /// that is not one. With `last`, a final line without its line break counts too.
    fn poll(&mut self, now_ms: i64, last: bool) -> (Vec<Metric>, Vec<String>) {
        let (mut points, mut said) = (Vec::new(), Vec::new());
        if self.full {
            return (points, said);
        }
        let Ok(mut f) = open_regular(&self.path) else { return (points, said) };
        loop {
            if self.offset >= MAX_FILE {
                self.full = true;
                said.push(format!("the metrics file is past {} MiB; the rest is not read", MAX_FILE >> 20));
                break;
            }
            let mut chunk = Vec::new();
            let read = f
                .seek(SeekFrom::Start(self.offset))
                .and_then(|_| (&mut f).take(MAX_POLL.min(MAX_FILE - self.offset)).read_to_end(&mut chunk));
            let Ok(n) = read else { break };
            self.offset += n as u64;
            self.partial.extend_from_slice(&chunk);
            // Every complete line, then what is left of the last one kept for the next read.
            let partial = std::mem::take(&mut self.partial);
            let mut start = 0;
            while let Some(end) = partial[start..].iter().position(|b| *b == b'\n') {
                self.take(&partial[start..start + end], now_ms, &mut points, &mut said);
                start += end + 1;
            }
            self.partial = partial[start..].to_vec();
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                self.overlong = true;
            }
            if n < MAX_POLL as usize || !last {
                break;
            }
        }
        if last && (self.overlong || !self.partial.is_empty()) {
            let line = std::mem::take(&mut self.partial);
            self.take(&line, now_ms, &mut points, &mut said);
        }
        (points, said)
    }

    fn take(&mut self, line: &[u8], now_ms: i64, points: &mut Vec<Metric>, said: &mut Vec<String>) {
        self.line += 1;
        if std::mem::take(&mut self.overlong) {
            said.push(format!(
                "metrics line {} is skipped: it is longer than {} KiB",
                self.line,
                MAX_LINE >> 10
            ));
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match parse(line, now_ms) {
            Ok((key, value, step, timestamp)) => {
                points.push(Metric { key, value, step, timestamp });
                self.count += 1;
            }
            Err(why) => said.push(format!("metrics line {} is skipped: {why}", self.line)),
        }
    }
}

/// Never through a link, never blocking on a FIFO, only a regular file.
fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// One line: its key, value, step and timestamp.
pub(super) fn parse(line: &[u8], now_ms: i64) -> Result<(String, f64, i64, i64), String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(o) = v else { return Err("not a JSON object".into()) };
    let key = match o.get("key") {
        Some(Value::String(k)) => {
            crate::tracking::check_key("metric", k)?;
            k
        }
        _ => return Err("`key` (a string) is missing".into()),
    };
    let value = match o.get("value") {
        Some(Value::Number(n)) => {
            n.as_f64().filter(|f| f.is_finite()).ok_or("`value` is not a finite number")?
        }
        Some(Value::String(s))
            if ["nan", "inf", "-inf", "infinity"].contains(&s.to_ascii_lowercase().as_str()) =>
        {
            return Err(format!("`value` is {s}; only finite numbers are recorded"));
        }
        _ => return Err("`value` (a number) is missing".into()),
    };
    let int = |name: &str, default: i64| match o.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n.as_i64().ok_or(format!("`{name}` must be an integer")),
        Some(_) => Err(format!("`{name}` must be an integer")),
    };
    Ok((key.clone(), value, int("step", 0)?, int("timestamp", now_ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_the_file_grows_and_bad_ones_are_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut m = MetricsFile::new(path.clone());
        assert_eq!(m.poll(5, false).0.len(), 0, "no file yet");
        std::fs::write(&path, "{\"key\": \"loss\", \"value\": 0.5, \"step\": 1}\n{\"key\": \"lo").unwrap();
        let (p, said) = m.poll(5, false);
        assert_eq!((p.len(), said.len()), (1, 0));
        assert_eq!((p[0].key.as_str(), p[0].value, p[0].step, p[0].timestamp), ("loss", 0.5, 1, 5));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"ss\", \"value\": 0.25, \"step\": 2, \"timestamp\": 9}\nnot json\n{\"key\": \"x\"}\n")
            .unwrap();
        f.write_all(b"{\"key\": \"auc\", \"value\": \"NaN\"}\n\n{\"key\": \"auc\", \"value\": 0.9}").unwrap();
        let (p, said) = m.poll(6, false);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].value, p[0].step, p[0].timestamp), (0.25, 2, 9));
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("line 3") && said[0].contains("not JSON"), "{said:?}");
        assert!(said[1].contains("`value`") && said[2].contains("NaN"), "{said:?}");
        let (p, _) = m.poll(7, true);
        assert_eq!(p.len(), 1, "the last line without a break counts at the end");
        assert_eq!(m.count, 3);
    }

    #[test]
    fn a_fifo_or_a_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, "{\"key\": \"a\", \"value\": 1}\n").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(MetricsFile::new(link).poll(0, true).0.is_empty());
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut m = MetricsFile::new(path.clone());
        let long = format!("{{\"key\": \"{}", "k".repeat(MAX_LINE + 10));
        std::fs::write(&path, &long).unwrap();
        assert_eq!(m.poll(1, false), (Vec::new(), Vec::new()));
        assert!(m.partial.is_empty() && m.overlong, "its start is dropped");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\", \"value\": 1}\n{\"key\": \"a\", \"value\": 2}\n").unwrap();
        let (p, said) = m.poll(2, false);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].key.as_str(), p[0].value), ("a", 2.0));
        assert_eq!(said, vec!["metrics line 1 is skipped: it is longer than 64 KiB".to_string()]);
    }
}
