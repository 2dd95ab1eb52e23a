//! Where a running attempt's logs and process id go: logs into the store, the process id
//! into the attempt's `.process.json` file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice_worker::{AttemptSink, LogStream, process_start_time};

use crate::store::{AttemptKey, FORMAT_VERSION, ProcRecord, Store};

/// The most log an attempt keeps; the rest is dropped with a note.
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
    bytes: AtomicU64,
    warned: AtomicBool,
}

impl StoreSink {
    pub(crate) fn new(store: Store, key: AttemptKey, process_file: PathBuf) -> Self {
        Self {
            store,
            key,
            process_file,
            seq: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    fn write(&self, stream: LogStream, chunk: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store.append_log(self.key, seq, stream, chunk)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(run = self.key.run, step = self.key.step, error = %e, "cannot store a step's log");
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

    #[test]
    fn a_process_that_cannot_be_recorded_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let key = AttemptKey { run: 1, step: 0, item: 0, attempt: 1 };
        let me = std::process::id();
        let ok = StoreSink::new(store.clone(), key, dir.path().join("a.process.json"));
        ok.started(me).unwrap();
        let rec: ProcRecord =
            serde_json::from_slice(&std::fs::read(dir.path().join("a.process.json")).unwrap()).unwrap();
        assert_eq!(rec.pid, me);
        let bad = StoreSink::new(store, key, dir.path().join("missing-folder").join("a.process.json"));
        let e = bad.started(me).unwrap_err();
        assert!(e.contains("cannot record the step's process") && e.contains("missing-folder"), "{e}");
    }
}
