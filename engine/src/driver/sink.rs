//! Where a running attempt's logs and process id go: logs into the store, the process id
//! into the attempt's `.process.json` file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_worker::{AttemptSink, LogStream, process_start_time};

use crate::security::secrets::Redactor;
use crate::store::{AttemptKey, FORMAT_VERSION, ProcRecord, Store};

/// The most log an attempt keeps from its start by default (`EngineOptions::max_log_bytes`);
/// past it, the last [`TAIL_BYTES`] of each stream, with a note of what was dropped.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Kills what is left of an attempt an earlier engine started, if anything; returns its pid.
/// `process_file` is where the attempt's sink recorded its process; no file means the
/// attempt had no process (it never started one, or runs in a container or the engine).
pub(crate) fn reap(process_file: &Path) -> Result<Option<u32>, String> {
    // The attempts folder is one a step can write to: read the record the way that cannot
    // block or follow a link.
    let read = sluice_worker::open_step_file(process_file).and_then(|f| {
        use std::io::Read;
        let mut bytes = Vec::new();
        f.take(64 * 1024).read_to_end(&mut bytes).map(|_| bytes)
    });
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", process_file.display())),
    };
    let rec: ProcRecord = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a process record: {e}", process_file.display()))?;
    Ok(sluice_worker::reap_process_group(rec.pid, rec.start_time).then_some(rec.pid))
}

pub(crate) struct StoreSink {
    store: Store,
    key: AttemptKey,
    process_file: PathBuf,
    seq: AtomicU64,
    /// How much of its log an attempt keeps: the first `limit` bytes, then the last
    /// [`TAIL_BYTES`] of each stream.
    limit: u64,
    log: Mutex<Kept>,
    /// Log writes the store refused.
    failed: AtomicU64,
    /// Masks the pipeline's secrets before anything is kept; per stream, the end of the last
    /// chunk that could begin a secret the next chunk completes.
    redact: Redactor,
    carry: Mutex<Vec<(LogStream, Vec<u8>)>>,
}

/// The most of each stream's end an attempt keeps once its log passed the limit: the last
/// lines usually hold the error.
pub const TAIL_BYTES: usize = 1024 * 1024;

/// What was written of an attempt's log, and the ends of streams past the limit.
#[derive(Default)]
struct Kept {
    written: u64,
    /// Per stream past the limit: its last bytes, and how many of its bytes were dropped.
    tails: Vec<(LogStream, VecDeque<u8>, u64)>,
}

impl StoreSink {
    pub(crate) fn with_limit(store: Store, key: AttemptKey, process_file: PathBuf, limit: u64) -> Self {
        Self {
            store,
            key,
            process_file,
            seq: AtomicU64::new(0),
            limit,
            log: Mutex::new(Kept::default()),
            failed: AtomicU64::new(0),
            redact: Redactor::default(),
            carry: Mutex::new(Vec::new()),
        }
    }

    /// Masks these secrets' values in everything the attempt logs.
    pub(crate) fn redacting(mut self, redact: Redactor) -> Self {
        self.redact = redact;
        self
    }

    /// `chunk` masked, keeping back the end that may be a secret's beginning.
    fn masked(&self, stream: LogStream, chunk: &[u8]) -> Vec<u8> {
        let mut carries = self.carry.lock().unwrap_or_else(|p| p.into_inner());
        let at = match carries.iter().position(|(s, _)| *s == stream) {
            Some(at) => at,
            None => {
                carries.push((stream, Vec::new()));
                carries.len() - 1
            }
        };
        self.redact.chunk(&mut carries[at].1, chunk)
    }

    /// Keeps `chunk`: the head up to the limit, then each stream's tail.
    fn keep(&self, stream: LogStream, chunk: &[u8]) {
        let mut kept = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(kept.written) as usize;
        let (head, rest) = chunk.split_at(room.min(chunk.len()));
        kept.written += head.len() as u64;
        if !rest.is_empty() {
            let at = match kept.tails.iter().position(|(s, _, _)| *s == stream) {
                Some(at) => at,
                None => {
                    kept.tails.push((stream, VecDeque::new(), 0));
                    kept.tails.len() - 1
                }
            };
            let (_, tail, dropped) = &mut kept.tails[at];
            tail.extend(rest);
            if tail.len() > TAIL_BYTES {
                let over = tail.len() - TAIL_BYTES;
                tail.drain(..over);
                *dropped += over as u64;
            }
        }
        drop(kept);
        if !head.is_empty() {
            self.write(stream, head);
        }
    }

    fn write(&self, stream: LogStream, chunk: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store.append_log(self.key, seq, stream, chunk)
            && self.failed.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(run = self.key.run, step = self.key.step, error = %e, "cannot store a step's log");
        }
    }

    /// The attempt ended: each stream that passed the limit gets a note of what was dropped,
    /// then its last bytes. Returns how many log writes failed.
    pub(crate) fn finish(&self) -> u64 {
        let carries = std::mem::take(&mut *self.carry.lock().unwrap_or_else(|p| p.into_inner()));
        for (stream, mut carry) in carries {
            let rest = self.redact.flush(&mut carry);
            if !rest.is_empty() {
                self.keep(stream, &rest);
            }
        }
        let tails = std::mem::take(&mut self.log.lock().unwrap_or_else(|p| p.into_inner()).tails);
        for (stream, tail, dropped) in tails {
            if dropped > 0 {
                let note = format!(
                    "\n[sluice: {dropped} bytes of {} were dropped here (the log passed {} bytes); its last {} bytes follow]\n",
                    stream.as_str(),
                    self.limit,
                    tail.len()
                );
                self.write(stream, note.as_bytes());
            }
            let (a, b) = tail.as_slices();
            for part in [a, b] {
                if !part.is_empty() {
                    self.write(stream, part);
                }
            }
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            tracing::warn!(
                run = self.key.run,
                step = self.key.step,
                attempt = self.key.attempt,
                failed,
                "log writes of the attempt failed; its stored log is incomplete"
            );
        }
        failed
    }
}

impl AttemptSink for StoreSink {
    fn log(&self, stream: LogStream, chunk: &[u8]) {
        if self.redact.is_empty() {
            self.keep(stream, chunk);
        } else if stream == LogStream::System {
            // The engine's own lines come whole, also after `finish`: nothing is held back.
            self.keep(stream, &self.redact.bytes(chunk));
        } else {
            let masked = self.masked(stream, chunk);
            if !masked.is_empty() {
                self.keep(stream, &masked);
            }
        }
    }

    /// Records the attempt's process in a plain file: a write that survives the engine being
    /// SIGKILLed a moment later, without paying for an fsync on every attempt. Without it a
    /// restarted engine could not stop the process, so a failed write stops the attempt.
    fn started(&self, pid: u32) -> Result<(), String> {
        // A process that is gone already needs no record: there is nothing left to stop.
        let Some(start_time) = process_start_time(pid) else { return Ok(()) };
        let k = self.key;
        let rec =
            ProcRecord { v: FORMAT_VERSION, step: k.step, item: k.item, attempt: k.attempt, pid, start_time };
        let bytes = serde_json::to_vec(&rec).map_err(|e| format!("cannot encode the process record: {e}"))?;
        write_new(&self.process_file, &bytes).map_err(|e| {
            format!(
                "cannot record the step's process in {} ({e}), so a restarted engine could not stop it; \
                 check the data folder's disk",
                self.process_file.display()
            )
        })
    }
}

/// Writes `path` by way of a new file renamed over it: nothing a step left at either name (a
/// FIFO, a link) is opened.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What run 1's step 0 logged on one stream.
    fn stream_text(store: &Store, s: LogStream) -> String {
        store
            .logs(1, 0)
            .unwrap()
            .into_iter()
            .filter(|c| c.stream == s)
            .flat_map(|c| c.data)
            .map(char::from)
            .collect()
    }

    #[test]
    fn a_long_log_keeps_its_head_and_each_stream_tail_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let key = AttemptKey { run: 1, step: 0, item: 0, attempt: 1 };
        let sink = StoreSink::with_limit(store.clone(), key, dir.path().join("p.json"), 100);
        sink.log(LogStream::Stdout, &[b'h'; 80]);
        sink.log(LogStream::Stderr, &[b'e'; 10]);
        for i in 0..3000u32 {
            sink.log(LogStream::Stdout, format!("line {i}\n").as_bytes());
        }
        sink.log(LogStream::Stderr, &vec![b'x'; TAIL_BYTES + 5]);
        sink.log(LogStream::Stderr, b"the error\n");
        assert_eq!(sink.finish(), 0);
        let text = |s: LogStream| stream_text(&store, s);
        let out = text(LogStream::Stdout);
        assert!(out.starts_with(&"h".repeat(80)), "the head is kept");
        assert!(out.ends_with("line 2998\nline 2999\n"), "the tail is kept");
        assert!(!out.contains("dropped"), "stdout fit the tail whole: {}", &out[..200]);
        let err = text(LogStream::Stderr);
        assert!(err.starts_with(&"e".repeat(10)));
        assert!(err.contains("bytes of stderr were dropped here"), "stderr is marked too");
        assert!(err.ends_with("the error\n"), "its last line survives");
    }

    #[test]
    fn secrets_are_masked_even_when_split_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let key = AttemptKey { run: 1, step: 0, item: 0, attempt: 1 };
        let sink = StoreSink::with_limit(store.clone(), key, dir.path().join("p.json"), MAX_LOG_BYTES)
            .redacting(Redactor::new(["hunter2-s3cr3t".to_string()]));
        sink.log(LogStream::Stdout, b"token=hunt");
        sink.log(LogStream::Stderr, b"hunter2-s3cr3t alone\n");
        sink.log(LogStream::Stdout, b"er2-s3cr3t done\nends with hunter2");
        sink.finish();
        let text = |s: LogStream| stream_text(&store, s);
        assert_eq!(text(LogStream::Stdout), "token=*** done\nends with hunter2");
        assert_eq!(text(LogStream::Stderr), "*** alone\n");
    }

    #[test]
    fn a_process_that_cannot_be_recorded_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let key = AttemptKey { run: 1, step: 0, item: 0, attempt: 1 };
        let me = std::process::id();
        let ok = StoreSink::with_limit(store.clone(), key, dir.path().join("a.process.json"), MAX_LOG_BYTES);
        ok.started(me).unwrap();
        let rec: ProcRecord =
            serde_json::from_slice(&std::fs::read(dir.path().join("a.process.json")).unwrap()).unwrap();
        assert_eq!(rec.pid, me);
        let bad = StoreSink::with_limit(
            store,
            key,
            dir.path().join("missing-folder").join("a.process.json"),
            MAX_LOG_BYTES,
        );
        let e = bad.started(me).unwrap_err();
        assert!(e.contains("cannot record the step's process") && e.contains("missing-folder"), "{e}");
    }
}
