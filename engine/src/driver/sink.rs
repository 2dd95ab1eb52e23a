//! Where a running attempt's logs and process id go: straight into the store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_worker::{AttemptSink, LogStream, process_start_time};

use crate::scheduler::StepIx;
use crate::store::{ProcRecord, Store};

/// The file in an attempt's folder that names its OS process.
pub(crate) const PROCESS_FILE: &str = "process.json";

/// Kills what is left of an attempt an earlier engine started, if anything.
pub(crate) fn reap(attempt_dir: &std::path::Path) -> Option<u32> {
    let bytes = std::fs::read(attempt_dir.join(PROCESS_FILE)).ok()?;
    let rec: ProcRecord = serde_json::from_slice(&bytes).ok()?;
    sluice_worker::reap_process_group(rec.pid, rec.start_time).then_some(rec.pid)
}

/// The most log an attempt keeps; the rest is dropped with a note.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

pub(crate) struct StoreSink {
    pub store: Store,
    pub run: u64,
    pub step: StepIx,
    pub item: u32,
    pub attempt: u32,
    /// The attempt's folder; its `process.json` names the attempt's OS process.
    pub attempt_dir: std::path::PathBuf,
    pub seq: AtomicU64,
    pub bytes: AtomicU64,
    pub error: Mutex<Option<String>>,
}

impl StoreSink {
    pub(super) fn new(
        store: Store,
        run: u64,
        step: StepIx,
        item: u32,
        attempt: u32,
        attempt_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            store,
            run,
            step,
            item,
            attempt,
            attempt_dir,
            seq: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    fn write(&self, stream: LogStream, chunk: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Err(e) =
            self.store.append_log(self.run, self.step, self.item, self.attempt, seq, stream, chunk)
        {
            let mut err = self.error.lock().unwrap_or_else(|p| p.into_inner());
            err.get_or_insert_with(|| e.to_string());
        }
    }
}

impl AttemptSink for StoreSink {
    fn log(&self, stream: LogStream, chunk: &[u8]) {
        let before = self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if before >= MAX_LOG_BYTES {
            return;
        }
        if before + chunk.len() as u64 > MAX_LOG_BYTES {
            let keep = (MAX_LOG_BYTES - before) as usize;
            self.write(stream, &chunk[..keep]);
            self.write(
                LogStream::System,
                format!("\nsluice: log truncated at {MAX_LOG_BYTES} bytes\n").as_bytes(),
            );
            return;
        }
        self.write(stream, chunk);
    }

    /// Records the attempt's process in a plain file: a write that survives the engine being
    /// SIGKILLed a moment later, without paying for an fsync on every attempt.
    fn started(&self, pid: u32) {
        let Some(start_time) = process_start_time(pid) else { return };
        let rec =
            ProcRecord { v: 1, step: self.step, item: self.item, attempt: self.attempt, pid, start_time };
        if let Ok(bytes) = serde_json::to_vec(&rec) {
            let _ = std::fs::write(self.attempt_dir.join(PROCESS_FILE), bytes);
        }
    }
}
