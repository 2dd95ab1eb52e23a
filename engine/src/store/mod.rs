//! The sled store: DAG versions, runs, each run's append-only event log and step logs. Everything a run needs to resume lives here.
//!
//! Writes are buffered by sled; [`Store::flush`] makes them durable. The driver flushes once
//! per batch of events (group commit) before it acts on any of them.

mod artifacts;
mod cache;
mod inbox;
mod lineage;
mod records;
mod registry;
mod rollouts;
mod runlist;
mod security;
mod tracking;

use std::path::{Path, PathBuf};

pub use artifacts::{ArtifactRecord, Attestation, ProducedBy, Verified, attest};
pub use cache::{CACHE_FORMAT, CacheEntry, CacheProbe, KeyDoc, Verdict};
pub use inbox::Claim;
pub use lineage::{ConsumedArtifact, ConsumedRecord, Direction, Lineage, Node, Origin};
pub use records::{
    DagRecord, EventRecord, FORMAT_VERSION, InboxRecord, InboxStatus, LogChunk, Mark, ProcRecord, RunCache,
    RunRecord, Trigger,
};
pub use registry::{Decision, GatePass, ProxyFile};
pub use runlist::{RunFilter, RunPage};
pub use security::Signer;
pub use tracking::PIPELINE_TAG;

use crate::scheduler::StepIx;
use sluice_worker::LogStream;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data folder {0} is in use by another sluice process; wait for it to finish, or stop the server that holds it (its pid is in server.json; `sluice trigger` starts runs through it), or use another --data-dir"
    )]
    Locked(PathBuf),
    #[error("cannot open the data folder {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored {what} could not be decoded: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("{0}")]
    Encrypted(String),
    #[error("no run {0} in this data folder")]
    NoRun(u64),
    #[error("no DAG version {0} in this data folder")]
    NoDag(String),
    /// What was asked breaks a rule of the records (a name taken, a run that is not there).
    #[error("{1}")]
    Refused(Refusal, String),
    /// The operating system failed a request (its random source).
    #[error("{0}")]
    System(String),
    /// An earlier write failed; sled 0.34 can spin forever on a write after a failed one,
    /// so the store takes no more until it is opened again.
    #[error(
        "the store takes no more writes after an earlier one failed ({0}); restart the engine once the data folder can be written"
    )]
    Failed(String),
}

/// Why the store refused a change, for callers to answer with the right status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Exists,
    Invalid,
    /// The actor may not change this record.
    Forbidden,
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
    /// Artifact records by attempt, and their index by digest (`artifacts.rs`).
    artifacts: sled::Tree,
    artifact_digests: sled::Tree,
    /// The signed provenance (DSSE envelopes) of what attempts produced, by attempt.
    provenance: sled::Tree,
    /// What attempts read, by attempt and by digest, and the digests of files hashed before
    /// (`lineage.rs`).
    consumed: sled::Tree,
    consumed_by: sled::Tree,
    hash_index: sled::Tree,
    /// The step cache: entries by key, the newest key per step, each attempt's lookup
    /// (`cache.rs`).
    cache: sled::Tree,
    cache_latest: sled::Tree,
    cache_probes: sled::Tree,
    /// Experiments, tracking runs and metric series (`tracking.rs`).
    tracking: tracking::Trees,
    /// Registered models, versions, aliases and their moves (`registry.rs`).
    registry: registry::Trees,
    /// Rollouts by id (u64 big-endian): their whole state, written after every change.
    rollouts: sled::Tree,
    /// The runs by pipeline, by state and by both (`runlist.rs`).
    run_index: runlist::Trees,
    /// Tokens, the audit log and its checkpoints (`security.rs`).
    tokens: sled::Tree,
    audit: sled::Tree,
    audit_checkpoints: sled::Tree,
    audit_head: std::sync::Arc<std::sync::Mutex<security::AuditHead>>,
    /// The folder's lock, released when the last clone goes.
    _lock: std::sync::Arc<std::fs::File>,
    /// The folder's encryption key, once the engine gave it: step logs are sealed with it.
    data_key: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::security::crypt::DataKey>>>,
    /// The first write the store refused that its caller could not report (a log chunk).
    health: std::sync::Arc<Health>,
    /// Tests of what callers do when the store fails: writes of received events fail.
    #[cfg(test)]
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The last handle on a sled tree flushes it when dropped, and after a failed write that
/// flush never returns (sled 0.34 waits for a log buffer its failed writer will not finish):
/// a store that failed leaves its handles to the process's exit instead.
impl Drop for Store {
    fn drop(&mut self) {
        if self.health.failed.get().is_some() {
            // A handle kept for ever: this one's drop is then never the last.
            std::mem::forget(self.db.clone());
            for tree in [
                &self.run_index.by_pipeline,
                &self.run_index.by_state,
                &self.run_index.by_both,
                &self.rollouts,
                &self.dags,
                &self.runs,
                &self.events,
                &self.logs,
                &self.inbox,
                &self.marks,
                &self.cursors,
                &self.artifacts,
                &self.artifact_digests,
                &self.provenance,
                &self.consumed,
                &self.consumed_by,
                &self.hash_index,
                &self.cache,
                &self.cache_latest,
                &self.cache_probes,
                &self.tokens,
                &self.audit,
                &self.audit_checkpoints,
            ]
            .into_iter()
            .chain(self.tracking.all())
            .chain(self.registry.all())
            {
                std::mem::forget(tree.clone());
            }
        }
    }
}

/// Whether the store refused a write: the driver learns of it at once (a log chunk's writer
/// goes on), and no later write is tried (see [`Store::writable`]).
#[derive(Default)]
struct Health {
    failed: std::sync::OnceLock<String>,
    changed: tokio::sync::Notify,
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

/// Removes what sled leaves half-made when a write fails (a full disk): a snapshot is written
/// as `snap.<lsn>.generating` and renamed when complete, so such a file is never a
/// snapshot, yet sled 0.34 reads it back as one ("Read corrupted data") and would not open.
fn remove_half_made(db: &Path) {
    let Ok(entries) = std::fs::read_dir(db) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::warn!(file = %entry.path().display(), "removed a snapshot an earlier engine left half-written (its disk was full?)")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a half-written snapshot")
                }
            }
        }
    }
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
        remove_half_made(&dir.join("db"));
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
        let tree = |name: &str| db.open_tree(name);
        let (audit, audit_checkpoints) = (tree("audit")?, tree("audit_checkpoints")?);
        let audit_head = security::load_head(&audit, &audit_checkpoints)?;
        let store = Store {
            tokens: tree("tokens")?,
            audit,
            audit_checkpoints,
            audit_head,
            dags: tree("dags")?,
            runs: tree("runs")?,
            events: tree("events")?,
            logs: tree("logs")?,
            inbox: tree("inbox")?,
            marks: tree("marks")?,
            cursors: tree("cursors")?,
            artifacts: tree("artifacts")?,
            artifact_digests: tree("artifact_digests")?,
            provenance: tree("provenance")?,
            consumed: tree("consumed")?,
            consumed_by: tree("consumed_by")?,
            hash_index: tree("hash_index")?,
            cache: tree("cache")?,
            cache_latest: tree("cache_latest")?,
            cache_probes: tree("cache_probes")?,
            tracking: tracking::Trees::open(&db)?,
            registry: registry::Trees::open(&db)?,
            rollouts: tree("rollouts")?,
            run_index: runlist::Trees::open(&db)?,
            dir: dir.to_path_buf(),
            db,
            _lock: std::sync::Arc::new(lock),
            data_key: Default::default(),
            health: Default::default(),
            #[cfg(test)]
            failing: Default::default(),
        };
        store.build_run_index()?;
        Ok(store)
    }

    /// Bytes free for this process on the data folder's file system.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
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
    /// Every so many audit entries, the head they reached is then signed (a checkpoint).
    pub fn flush(&self) -> Result<()> {
        self.writable()?;
        let (seq, hash, due) = self.audit_head_now();
        self.db.flush().map_err(|e| self.broke(e))?;
        if due {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.sign_head(seq, &hash, at)?;
        }
        Ok(())
    }

    /// Stores a DAG version (a version is stored once: its hash names its content).
    pub fn put_dag(&self, dag: &DagRecord) -> Result<()> {
        self.writable()?;
        if !self.has_dag(&dag.hash)? {
            self.dags.insert(dag.hash.as_bytes(), encode(dag)).map_err(|e| self.broke(e))?;
        }
        Ok(())
    }

    /// Rewrites a stored DAG version (an older build's record, given the plan it lacked).
    pub fn replace_dag(&self, dag: &DagRecord) -> Result<()> {
        self.writable()?;
        self.dags.insert(dag.hash.as_bytes(), encode(dag)).map_err(|e| self.broke(e))?;
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
        self.writable()?;
        let stored = self
            .runs
            .last()?
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let next = self
            .db
            .update_and_fetch(NEXT_RUN_KEY, |old| {
                let last = old.and_then(|b| b.try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
                Some(last.max(stored).saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.broke(e))?;
        Ok(next.and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(stored + 1))
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
        self.writable()?;
        self.events.insert(event_key(run, record.seq), encode(record)).map_err(|e| self.broke(e))?;
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
        let tag = match stream {
            LogStream::Stdout => b'o',
            LogStream::Stderr => b'e',
            LogStream::System => b's',
        };
        let value = match self.data_key.get() {
            // Sealed, bound to its key: a chunk cannot be moved to another place in the log.
            Some(k) => [&[tag.to_ascii_uppercase()][..], &k.seal(&key, chunk)].concat(),
            None => [&[tag][..], chunk].concat(),
        };
        self.writable()?;
        self.logs.insert(key, value).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// Gives the store the folder's encryption key (see `security::crypt::open_folder`).
    pub fn set_data_key(&self, key: std::sync::Arc<crate::security::crypt::DataKey>) {
        let _ = self.data_key.set(key);
    }

    /// The folder's artifact store, encrypting and decrypting with the folder's key.
    pub fn blobs(&self) -> crate::artifacts::Blobs {
        crate::artifacts::Blobs::in_data_dir(self.dir()).with_key(self.data_key.get().cloned())
    }

    /// Whether what the store keeps of steps is encrypted.
    pub fn encrypted(&self) -> bool {
        self.data_key.get().is_some()
    }

    fn open_log(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let Some(k) = self.data_key.get() else {
            return Err(StoreError::Encrypted(
                "a step log is encrypted, and no key was given (set SLUICE_ENCRYPTION_KEY_FILE)".into(),
            ));
        };
        k.open(key, sealed)
            .map_err(|e| StoreError::Encrypted(format!("a chunk of a step log cannot be read: {e}")))
    }

    /// Re-seals every step log chunk with `to` (those sealed with `from`, and plain ones);
    /// chunks already sealed with `to` are left. Returns how many were re-sealed. Resumable:
    /// each chunk names the key that sealed it.
    pub fn reseal_logs(
        &self,
        from: Option<&crate::security::crypt::DataKey>,
        to: &crate::security::crypt::DataKey,
    ) -> Result<u64> {
        self.writable()?;
        let mut n = 0;
        for kv in self.logs.iter() {
            let (k, v) = kv?;
            if v.is_empty() {
                continue;
            }
            let plain = if v[0].is_ascii_uppercase() {
                if crate::security::crypt::sealed_by(&v[1..]).as_deref() == Some(to.id().as_str()) {
                    continue;
                }
                let Some(from) = from else {
                    return Err(StoreError::Encrypted(
                        "a step log is encrypted, and the current key was not given".into(),
                    ));
                };
                from.open(&k, &v[1..]).map_err(|e| {
                    StoreError::Encrypted(format!("a chunk of a step log cannot be read: {e}"))
                })?
            } else {
                v[1..].to_vec()
            };
            let value = [&[v[0].to_ascii_uppercase()][..], &to.seal(&k, &plain)].concat();
            self.logs.insert(k, value).map_err(|e| self.broke(e))?;
            n += 1;
        }
        self.db.flush().map_err(|e| self.broke(e))?;
        Ok(n)
    }

    /// Refuses a write once one has failed: after a failed write sled 0.34 may spin forever in
    /// the next one (its log buffer stays sealed with the error), which would freeze the engine.
    fn writable(&self) -> Result<()> {
        match self.health.failed.get() {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Records a failed write (the first one wakes [`Store::failure`]) and returns its error.
    pub(crate) fn broke(&self, e: impl Into<StoreError>) -> StoreError {
        let e = e.into();
        if self.health.failed.set(format!("a write failed: {e}")).is_ok() {
            self.health.changed.notify_waiters();
        }
        e
    }

    /// Waits until a write has failed (a log chunk's caller goes on, so the driver learns of
    /// it here); returns what failed.
    pub async fn failure(&self) -> String {
        loop {
            let changed = self.health.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(why) = self.health.failed.get() {
                return why.clone();
            }
            changed.await;
        }
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
            let stream = match v[0].to_ascii_lowercase() {
                b'o' => LogStream::Stdout,
                b'e' => LogStream::Stderr,
                _ => LogStream::System,
            };
            let data = if v[0].is_ascii_uppercase() { self.open_log(&k, &v[1..])? } else { v[1..].to_vec() };
            out.push(LogChunk { item, attempt, stream, data });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Event, RunState};

    #[test]
    fn a_half_written_snapshot_does_not_keep_the_store_shut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let id = s.next_run_id().unwrap();
            s.put_run(&RunRecord::new(id, "p", "abc", serde_json::Map::new(), Trigger::Manual, 3, 10))
                .unwrap();
            s.flush().unwrap();
        }
        // What a full disk left behind in the report: an empty `.generating` snapshot.
        let half = dir.path().join("db").join("snap.0000000000FFFFFF.generating");
        std::fs::write(&half, b"").unwrap();
        let s = Store::open(dir.path()).expect("opens without manual repair");
        assert_eq!(s.runs().unwrap().len(), 1);
        assert!(!half.exists());
    }

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
