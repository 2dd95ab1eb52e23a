//! The sled store: DAG versions, runs, each run's append-only event log and step logs. Everything a run needs to resume lives here.
//!
//! Writes are buffered by sled; [`Store::flush`] makes them durable. The driver flushes once
//! per batch of events (group commit) before it acts on any of them.

mod inbox;
mod records;

use std::path::{Path, PathBuf};

pub use inbox::Claim;
pub use records::{
    DagRecord, EventRecord, FORMAT_VERSION, InboxRecord, InboxStatus, LogChunk, Mark, ProcRecord, RunRecord,
    Trigger,
};

use crate::scheduler::StepIx;
use sluice_worker::LogStream;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data folder {0} is in use by another sluice process; wait for it to finish or use another --data-dir"
    )]
    Locked(PathBuf),
    #[error("cannot open the data folder {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored {what} could not be decoded: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("no run {0} in this data folder")]
    NoRun(u64),
    #[error("no DAG version {0} in this data folder")]
    NoDag(String),
}

/// Names one attempt of one task of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptKey {
    pub run: u64,
    pub step: StepIx,
    pub item: u32,
    pub attempt: u32,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the data folder's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    dags: sled::Tree,
    runs: sled::Tree,
    events: sled::Tree,
    logs: sled::Tree,
    inbox: sled::Tree,
    marks: sled::Tree,
    cursors: sled::Tree,
    /// The folder's lock, released when the last clone goes.
    _lock: std::sync::Arc<std::fs::File>,
    /// Tests of what callers do when the store fails: writes of received events fail.
    #[cfg(test)]
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The last run id handed out, in the default tree.
const NEXT_RUN_KEY: &[u8] = b"next_run_id";

pub(crate) fn run_key(run: u64) -> [u8; 8] {
    run.to_be_bytes()
}

fn event_key(run: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn task_prefix(run: u64, step: StepIx, item: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(28);
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(&step.to_be_bytes());
    k.extend_from_slice(&item.to_be_bytes());
    k
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open { path: dir.to_path_buf(), source: sled::Error::Io(e) })?;
        // Steps run in other folders; every path handed to them must be absolute.
        let dir = &std::path::absolute(dir)
            .map_err(|e| StoreError::Open { path: dir.to_path_buf(), source: sled::Error::Io(e) })?;
        // One process per data folder: an exclusive lock on `<dir>/lock`, held as long as
        // this store (and its clones) live. `WouldBlock` is another process's.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| StoreError::Open { path: dir.to_path_buf(), source: sled::Error::Io(e) })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Open { path: dir.to_path_buf(), source: sled::Error::Io(e) });
            }
        }
        // With the folder's lock held, sled's own lock can only be held by a database this
        // process just dropped (sled lets go a moment later, once its threads end): retry
        // briefly.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(dir.join("db")).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(_)) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(StoreError::Open { path: dir.to_path_buf(), source: e }),
            }
        };
        Ok(Store {
            dags: db.open_tree("dags")?,
            runs: db.open_tree("runs")?,
            events: db.open_tree("events")?,
            logs: db.open_tree("logs")?,
            inbox: db.open_tree("inbox")?,
            marks: db.open_tree("marks")?,
            cursors: db.open_tree("cursors")?,
            dir: dir.to_path_buf(),
            db,
            _lock: std::sync::Arc::new(lock),
            #[cfg(test)]
            failing: Default::default(),
        })
    }

    /// Makes the writes of received events fail (or work again), to test their callers.
    #[cfg(test)]
    pub(crate) fn set_failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The injected failure, when a test asked for one.
    fn injected(&self) -> Result<()> {
        #[cfg(test)]
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Sled(sled::Error::Io(std::io::Error::other("injected by a test"))));
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every write so far durable (one fsync for the whole batch).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores a DAG version (a version is stored once: its hash names its content).
    pub fn put_dag(&self, dag: &DagRecord) -> Result<()> {
        if !self.has_dag(&dag.hash)? {
            self.dags.insert(dag.hash.as_bytes(), encode(dag))?;
        }
        Ok(())
    }

    /// Rewrites a stored DAG version (an older build's record, given the plan it lacked).
    pub fn replace_dag(&self, dag: &DagRecord) -> Result<()> {
        self.dags.insert(dag.hash.as_bytes(), encode(dag))?;
        Ok(())
    }

    pub fn has_dag(&self, hash: &str) -> Result<bool> {
        Ok(self.dags.contains_key(hash.as_bytes())?)
    }

    /// Every stored version of the pipeline `name`, oldest first.
    pub fn dag_versions(&self, name: &str) -> Result<Vec<DagRecord>> {
        let mut out = Vec::new();
        for kv in self.dags.iter() {
            let d: DagRecord = decode("DAG version", &kv?.1)?;
            if d.name == name {
                out.push(d);
            }
        }
        out.sort_by_key(|d| d.stored_at);
        Ok(out)
    }

    pub fn dag(&self, hash: &str) -> Result<DagRecord> {
        let bytes = self.dags.get(hash.as_bytes())?.ok_or_else(|| StoreError::NoDag(hash.to_string()))?;
        decode("DAG version", &bytes)
    }

    /// A new run id, one more than the last one handed out (and larger than every stored
    /// run), so that runs read r1, r2, r3. The counter lives in the database: sled's own
    /// `generate_id` leaps by a million after every restart.
    pub fn next_run_id(&self) -> Result<u64> {
        let stored = self
            .runs
            .last()?
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let next = self.db.update_and_fetch(NEXT_RUN_KEY, |old| {
            let last = old.and_then(|b| b.try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
            Some(last.max(stored).saturating_add(1).to_be_bytes().to_vec())
        })?;
        Ok(next.and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(stored + 1))
    }

    pub fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.runs.insert(run_key(run.id), encode(run))?;
        Ok(())
    }

    pub fn run(&self, id: u64) -> Result<RunRecord> {
        let bytes = self.runs.get(run_key(id))?.ok_or(StoreError::NoRun(id))?;
        decode("run", &bytes)
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        self.runs.iter().rev().map(|kv| decode("run", &kv?.1)).collect()
    }

    pub fn append_event(&self, run: u64, record: &EventRecord) -> Result<()> {
        self.events.insert(event_key(run, record.seq), encode(record))?;
        Ok(())
    }

    /// A run's event log in order.
    pub fn events(&self, run: u64) -> Result<Vec<EventRecord>> {
        self.events.scan_prefix(run_key(run)).map(|kv| decode("event", &kv?.1)).collect()
    }

    /// Appends a chunk of an attempt's log. `seq` orders the chunks of one attempt.
    pub fn append_log(&self, at: AttemptKey, seq: u64, stream: LogStream, chunk: &[u8]) -> Result<()> {
        let mut key = task_prefix(at.run, at.step, at.item);
        key.extend_from_slice(&at.attempt.to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        let mut value = Vec::with_capacity(chunk.len() + 1);
        value.push(match stream {
            LogStream::Stdout => b'o',
            LogStream::Stderr => b'e',
            LogStream::System => b's',
        });
        value.extend_from_slice(chunk);
        self.logs.insert(key, value)?;
        Ok(())
    }

    /// Writes a log chunk no build writes (tests of a damaged store).
    #[cfg(test)]
    pub(crate) fn damage_log(&self, run: u64, step: StepIx) -> Result<()> {
        let mut key = run_key(run).to_vec();
        key.extend_from_slice(&step.to_be_bytes());
        key.push(0);
        self.logs.insert(key, b"o".to_vec())?;
        Ok(())
    }

    /// The log chunks of one step of a run (every item and attempt), in order.
    pub fn logs(&self, run: u64, step: StepIx) -> Result<Vec<LogChunk>> {
        self.logs_from(run, step, 0)
    }

    /// [`Store::logs`] without the first `skip` chunks (a follower's next read).
    pub fn logs_from(&self, run: u64, step: StepIx, skip: usize) -> Result<Vec<LogChunk>> {
        let mut prefix = run_key(run).to_vec();
        prefix.extend_from_slice(&step.to_be_bytes());
        let mut out = Vec::new();
        for kv in self.logs.scan_prefix(prefix).skip(skip) {
            let (k, v) = kv?;
            if k.len() != 28 || v.is_empty() {
                return Err(StoreError::Corrupt {
                    what: "log chunk",
                    detail: "bad key or value length".into(),
                });
            }
            let item = u32::from_be_bytes(k[12..16].try_into().expect("4 bytes"));
            let attempt = u32::from_be_bytes(k[16..20].try_into().expect("4 bytes"));
            let stream = match v[0] {
                b'o' => LogStream::Stdout,
                b'e' => LogStream::Stderr,
                _ => LogStream::System,
            };
            out.push(LogChunk { item, attempt, stream, data: v[1..].to_vec() });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Event, RunState};

    #[test]
    fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let id = s.next_run_id().unwrap();
            s.put_run(&RunRecord::new(id, "p", "abc", serde_json::Map::new(), Trigger::Manual, 3, 10))
                .unwrap();
            for seq in 0..3 {
                s.append_event(
                    id,
                    &EventRecord { v: FORMAT_VERSION, seq, at: seq as i64, event: Event::Start },
                )
                .unwrap();
            }
            let at = AttemptKey { run: id, step: 1, item: 0, attempt: 1 };
            s.append_log(at, 0, LogStream::Stdout, b"hello ").unwrap();
            s.append_log(at, 1, LogStream::Stderr, b"world").unwrap();
            s.flush().unwrap();
            assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked(_))));
        }
        let s = Store::open(dir.path()).unwrap();
        let runs = s.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].state, RunState::Pending);
        assert_eq!(s.events(runs[0].id).unwrap().len(), 3);
        let logs = s.logs(runs[0].id, 1).unwrap();
        assert_eq!(logs.iter().map(|c| c.data.clone()).collect::<Vec<_>>().concat(), b"hello world");
        // Ids count up by one, across reopening the folder too.
        assert_eq!(runs[0].id, 1);
        assert_eq!(s.next_run_id().unwrap(), 2);
        let a = s.next_run_id().unwrap();
        assert_eq!(s.next_run_id().unwrap(), a + 1);
        assert!(matches!(s.run(999), Err(StoreError::NoRun(999))));
    }
}
