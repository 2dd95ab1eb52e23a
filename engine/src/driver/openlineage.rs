//! OpenLineage RunEvents (spec 2-0-2): START and COMPLETE, FAIL or ABORT for every DAG run and
//! every task attempt, the task's events carrying a ParentRunFacet that points at the DAG run,
//! with the datasets it read and the artifacts it made. Emission never blocks or fails a run:
//! events go into a bounded queue that a thread of its own sends (HTTP, with retries and
//! backoff) or appends (a JSON-lines file); what cannot be queued or sent is counted and
//! reported.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The spec version of the events.
pub(super) const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PARENT_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const VERSION_SCHEMA: &str = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet";
const ERROR_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const ENGINE_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
/// How many events may wait to be sent; past it, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// How long closing waits for queued events to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineageTarget {
    /// POSTed as JSON to this URL (an OpenLineage HTTP endpoint, Marquez's
    /// `http://host:5000/api/v1/lineage`); a URL without a path gets `/api/v1/lineage`.
    Http(String),
    /// Appended as JSON lines.
    File(PathBuf),
}

/// Where events go and the namespace of Sluice's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageOptions {
    pub target: LineageTarget,
    pub namespace: String,
}

/// The producer URI every event and facet names.
fn producer() -> String {
    format!("https://sluice.dev/sluice/{}", env!("CARGO_PKG_VERSION"))
}

/// A UUID that is the same for the same words: the START and the end of one run share it
/// without either remembering it (version 8, RFC 9562's custom layout, from sha256).
pub(super) fn run_uuid(words: &str) -> String {
    let h = Sha256::digest(words.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A dataset in the OpenLineage naming of the local file system (`file`, the absolute path),
/// with its content digest as its version.
pub(super) fn file_dataset(path: &str, digest: &str) -> Value {
    json!({
        "namespace": "file",
        "name": path,
        "facets": { "version": { "_producer": producer(), "_schemaURL": VERSION_SCHEMA, "datasetVersion": digest } },
    })
}

/// How an OpenLineage run ended (or that it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineageState {
    Start,
    Complete,
    Fail,
    Abort,
}

impl LineageState {
    fn as_str(self) -> &'static str {
        match self {
            LineageState::Start => "START",
            LineageState::Complete => "COMPLETE",
            LineageState::Fail => "FAIL",
            LineageState::Abort => "ABORT",
        }
    }
}

/// One event to build.
pub(super) struct EventParts<'a> {
    pub(super) state: LineageState,
    pub(super) at_ms: i64,
    pub(super) run_id: String,
    pub(super) job: String,
    /// The DAG run's id and job, for a task's events.
    pub(super) parent: Option<(String, String)>,
    pub(super) inputs: Vec<Value>,
    pub(super) outputs: Vec<Value>,
    pub(super) error: Option<&'a str>,
}

/// Sends events from a queue on a thread of its own; dropping it waits a little for the queue
/// to empty, then reports what was dropped.
pub(super) struct Emitter {
    namespace: String,
    tx: Option<mpsc::SyncSender<Value>>,
    /// Told when the sending thread has emptied the queue (a Mutex: the engine is shared).
    done: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
    stats: std::sync::Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    dropped: AtomicU64,
    /// Set when the engine stops: what is left is tried once each, without backoff.
    closing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").field("namespace", &self.namespace).finish()
    }
}

impl Emitter {
    pub(super) fn start(opts: &LineageOptions) -> Result<Emitter, String> {
        let mut sink = match &opts.target {
            LineageTarget::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--openlineage-file {}: {e}", path.display()))?;
                Sink::File(std::io::BufWriter::new(file))
            }
            LineageTarget::Http(url) => Sink::Http(endpoint(url)?),
        };
        let (tx, rx) = mpsc::sync_channel::<Value>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let stats = std::sync::Arc::new(Stats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("openlineage".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let Ok(rt) = rt else { return };
                while let Ok(event) = rx.recv() {
                    let once = thread_stats.closing.load(Ordering::Relaxed);
                    match rt.block_on(sink.deliver(&event, once)) {
                        Ok(()) => thread_stats.sent.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let n = thread_stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::warn!(error = %e, dropped = n, "an OpenLineage event could not be delivered; it is dropped");
                            n
                        }
                    };
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the OpenLineage thread: {e}"))?;
        Ok(Emitter {
            namespace: opts.namespace.clone(),
            tx: Some(tx),
            done: std::sync::Mutex::new(Some(done)),
            stats,
        })
    }

    /// Queues an event; never waits. A full queue drops it (counted).
    pub(super) fn emit(&self, parts: EventParts<'_>) {
        let event = self.event(parts);
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err() {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(100) {
                tracing::warn!(dropped = n, "the OpenLineage queue is full; events are dropped");
            }
        }
    }

    /// An event of a DAG run (no parent, no datasets: its tasks carry them).
    pub(super) fn run_event(
        &self,
        state: LineageState,
        at_ms: i64,
        run_id: &str,
        job: &str,
        error: Option<&str>,
    ) {
        self.emit(EventParts {
            state,
            at_ms,
            run_id: run_id.to_string(),
            job: job.to_string(),
            parent: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            error,
        });
    }

    /// Events sent and dropped so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.stats.sent.load(Ordering::Relaxed), self.stats.dropped.load(Ordering::Relaxed))
    }

    fn event(&self, p: EventParts<'_>) -> Value {
        let time = chrono::DateTime::from_timestamp_millis(p.at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut facets = serde_json::Map::new();
        facets.insert(
            "processing_engine".into(),
            json!({ "_producer": producer(), "_schemaURL": ENGINE_SCHEMA, "name": "sluice", "version": env!("CARGO_PKG_VERSION") }),
        );
        if let Some((run, job)) = &p.parent {
            facets.insert(
                "parent".into(),
                json!({
                    "_producer": producer(), "_schemaURL": PARENT_SCHEMA,
                    "run": { "runId": run }, "job": { "namespace": self.namespace, "name": job },
                }),
            );
        }
        if let Some(message) = p.error {
            facets.insert(
                "errorMessage".into(),
                json!({ "_producer": producer(), "_schemaURL": ERROR_SCHEMA, "message": message, "programmingLanguage": "shell" }),
            );
        }
        json!({
            "eventType": p.state.as_str(),
            "eventTime": time,
            "producer": producer(),
            "schemaURL": SCHEMA_URL,
            "run": { "runId": p.run_id, "facets": facets },
            "job": { "namespace": self.namespace, "name": p.job, "facets": {} },
            "inputs": p.inputs,
            "outputs": p.outputs,
        })
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.stats.closing.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(done) = self.done.lock().ok().and_then(|mut d| d.take())
            && done.recv_timeout(CLOSE_WAIT).is_err()
        {
            tracing::warn!(
                "OpenLineage events were still being sent when the engine stopped; the rest are dropped"
            );
        }
        let (sent, dropped) = self.counts();
        if dropped > 0 {
            tracing::warn!(sent, dropped, "OpenLineage: {dropped} event(s) could not be delivered");
        } else {
            tracing::debug!(sent, "OpenLineage events delivered");
        }
    }
}

/// The URL events are POSTed to.
fn endpoint(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("--openlineage-url `{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--openlineage-url `{url}`: only http:// is supported in this build"));
    }
    if uri.path() == "/" && !url.ends_with('/') {
        return format!("{}/api/v1/lineage", url.trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("--openlineage-url `{url}`: {e}"));
    }
    Ok(uri)
}

enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Http(hyper::Uri),
}

impl Sink {
    async fn deliver(&mut self, event: &Value, once: bool) -> Result<(), String> {
        match self {
            Sink::File(w) => {
                let mut line = serde_json::to_vec(event).map_err(|e| e.to_string())?;
                line.push(b'\n');
                w.write_all(&line).and_then(|_| w.flush()).map_err(|e| format!("cannot append: {e}"))
            }
            Sink::Http(uri) => {
                let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
                let mut last = String::new();
                // Three tries, 200 ms and 800 ms apart.
                let waits: &[u64] = if once { &[0] } else { &[0, 200, 800] };
                for &wait in waits {
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    match super::outbound::post_json(uri, body.clone()).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

impl super::Engine {
    /// The emitter, when OpenLineage events go somewhere.
    pub(super) fn lineage(&self) -> Option<&std::sync::Arc<Emitter>> {
        self.lineage.as_ref()
    }
}

/// The OpenLineage run id of a DAG run of the data folder `data_dir`.
pub(super) fn dag_run_id(data_dir: &std::path::Path, run: u64) -> String {
    run_uuid(&format!("sluice:{}:{run}", data_dir.display()))
}

/// The OpenLineage run id of one attempt of one task.
pub(super) fn task_run_id(
    data_dir: &std::path::Path,
    run: u64,
    step: &str,
    item: u32,
    attempt: u32,
) -> String {
    run_uuid(&format!("sluice:{}:{run}:{step}:{item}:{attempt}", data_dir.display()))
}

/// An attempt's part in OpenLineage: its ids, and the inputs its START named (repeated at
/// its end).
pub(super) struct TaskLineage {
    pub(super) emitter: std::sync::Arc<Emitter>,
    pub(super) run_id: String,
    pub(super) parent: (String, String),
    pub(super) job: String,
    pub(super) data_dir: PathBuf,
    pub(super) inputs: std::sync::Mutex<Vec<Value>>,
}

impl TaskLineage {
    /// An artifact or upstream artifact as a dataset: its stored file, versioned by digest.
    pub(super) fn artifact(&self, digest: &str) -> Value {
        let path = crate::artifacts::Blobs::in_data_dir(&self.data_dir)
            .path(digest)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| digest.to_string());
        file_dataset(&path, digest)
    }

    pub(super) fn send(&self, state: LineageState, at_ms: i64, outputs: Vec<Value>, error: Option<&str>) {
        let inputs = self.inputs.lock().map(|i| i.clone()).unwrap_or_default();
        self.emitter.emit(EventParts {
            state,
            at_ms,
            run_id: self.run_id.clone(),
            job: self.job.clone(),
            parent: Some(self.parent.clone()),
            inputs,
            outputs,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuids_and_stable() {
        let a = run_uuid("x/1/train/0/1");
        assert_eq!(a, run_uuid("x/1/train/0/1"));
        assert_ne!(a, run_uuid("x/1/train/0/2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn urls_without_a_path_get_the_lineage_endpoint() {
        assert_eq!(
            endpoint("http://127.0.0.1:5000").unwrap().to_string(),
            "http://127.0.0.1:5000/api/v1/lineage"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9/x/events").unwrap().to_string(),
            "http://127.0.0.1:9/x/events"
        );
        assert!(endpoint("https://example.com").is_err());
        assert!(endpoint("not a url").is_err());
    }
}
