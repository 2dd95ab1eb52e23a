//! The step cache in the driver: a step's key document, built from its rendered request and
//! what it reads; the lookup (and the restore of a hit) before its executor would run; and
//! [`Engine::explain_cache`], which says in words why a step did or did not reuse a result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_worker::{AttemptRequest, AttemptSink, ExecSpec, ExecutorSet, LogStream};

use super::render::{ArtifactPlan, RunView};
use super::{Engine, EngineError, Result};
use crate::artifacts::{Blobs, DatasetVersion};
use crate::kinds::Templates;
use crate::scheduler::{CachedFrom, Outcome, StepIx};
use crate::store::{CACHE_FORMAT, CacheEntry, CacheProbe, FORMAT_VERSION, KeyDoc, Store, Verdict};
use crate::template;

/// Writes the folders a key must not depend on as names: the same work has the same key in
/// every run, whatever its run id, attempt number or data folder.
#[derive(Debug, Clone)]
pub(super) struct Canon(Vec<(String, String)>);

impl Canon {
    fn new(data_dir: &Path, request: &AttemptRequest, base_dir: &Path) -> Self {
        let folders = [
            (request.files.attempt_dir.as_path(), "$ATTEMPT"),
            (request.files.run_dir.as_path(), "$RUN_DIR"),
            (data_dir, "$DATA"),
            (base_dir, "$SPEC_DIR"),
        ];
        let mut pairs = Vec::new();
        for (path, name) in folders {
            // Absolute, as most paths are written; as given too when that names a folder
            // unmistakably (a relative `--data-dir data/x`), never `.` or a bare word.
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            let absolute = absolute.display().to_string();
            let given = path.display().to_string();
            if given.contains('/') && !given.starts_with("./") && given != absolute {
                pairs.push((given, name.to_string()));
            }
            pairs.push((absolute, name.to_string()));
        }
        pairs.retain(|(from, _)| from.len() > 1);
        // The longest first: one folder may hold another.
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        Canon(pairs)
    }

    /// `s` with each folder replaced by its name where it is a whole path (what precedes it is
    /// not part of a path, and what follows is not a letter, digit, `_`, `-` or `.`: run 7's
    /// folder is not the start of run 70's, nor `/x/data` of `/x/data.csv`).
    fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (from, to) in &self.0 {
            if !out.contains(from.as_str()) {
                continue;
            }
            let mut next = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(at) = rest.find(from.as_str()) {
                let after = &rest[at + from.len()..];
                // The attempt's files are named `<stem>.outputs.json` and so on.
                let dot_ends = to == "$ATTEMPT";
                let path_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
                let starts = !rest[..at].ends_with(path_char);
                let ends = !after.starts_with(|c: char| {
                    c.is_alphanumeric() || c == '_' || c == '-' || (c == '.' && !dot_ends)
                });
                let whole = starts && ends;
                next.push_str(&rest[..at]);
                next.push_str(if whole { to } else { from });
                rest = after;
            }
            next.push_str(rest);
            out = next;
        }
        out
    }

    fn json(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|i| self.json(i)).collect()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, self.json(v))).collect()),
            other => other,
        }
    }
}

/// The run folder's spellings (absolute, and as given when that differs): a cached result's
/// outputs that name the run it came from name the run that reuses it instead.
fn run_dirs(request: &AttemptRequest) -> Vec<String> {
    let given = request.files.run_dir.display().to_string();
    let absolute = std::path::absolute(&request.files.run_dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| given.clone());
    if given == absolute { vec![absolute] } else { vec![absolute, given] }
}

/// `outputs` with the paths under the run folder `from` moved under `to` (spelling by spelling).
fn rebase(
    outputs: &serde_json::Map<String, Value>,
    from: &[String],
    to: &[String],
) -> serde_json::Map<String, Value> {
    let pairs: Vec<(String, String)> =
        from.iter().cloned().zip(to.iter().cloned()).filter(|(a, b)| a != b).collect();
    if pairs.is_empty() {
        return outputs.clone();
    }
    let canon = Canon(pairs);
    outputs.iter().map(|(k, v)| (k.clone(), canon.json(v.clone()))).collect()
}

/// Whether an environment variable's name says it holds a secret: its value enters the key
/// as a digest only, and `explain` never shows it.
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH", "PRIVATE"]
        .iter()
        .any(|w| upper.contains(w))
}

fn hidden(key: &[u8; 32], value: &str) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update([0u8]);
    h.update(value.as_bytes());
    format!("secret:sha256:{:x}", h.finalize())
}

/// The data folder's key for [`hidden`] (`<data>/cache.key`: 32 random bytes, mode 0600,
/// made on first use), so that a stored key document does not let a short secret be guessed
/// by hashing candidates. Without one (a read-only folder), a fixed key, said once.
fn folder_key(data_dir: &Path) -> [u8; 32] {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    static KEYS: std::sync::Mutex<BTreeMap<PathBuf, [u8; 32]>> = std::sync::Mutex::new(BTreeMap::new());
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = keys.get(data_dir) {
        return *k;
    }
    let path = data_dir.join("cache.key");
    let mut key = [0u8; 32];
    let read = std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        let made = crate::security::random::<32>().map_err(std::io::Error::other).and_then(|fresh| {
            key = fresh;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            f.write_all(&key)?;
            f.sync_all()
        });
        if let Err(e) = made {
            // Another process made it first: take theirs.
            if std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut key)).is_err() {
                tracing::warn!(error = %e, path = %path.display(), "cannot keep a key for hiding secret values in cache keys; using a fixed one");
                key = [7u8; 32];
            }
        }
    }
    keys.insert(data_dir.to_path_buf(), key);
    key
}

/// How an attempt uses the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Reuse a result with the same key, else run and store one.
    Use,
    /// Run, and store the result in place of the cached one (`--refresh STEP`).
    Refresh,
    /// Neither reuse nor store (`--no-cache`).
    Off,
}

/// What an attempt's lookup needs, gathered when it starts (the rest, its files' digests and
/// a container's image id, is added in its task).
pub(super) struct Probe {
    doc: KeyDoc,
    mode: Mode,
    ttl_ms: Option<i64>,
    canon: Canon,
    /// A container step's image reference, to resolve on the Docker engine.
    image: Option<String>,
    /// A container step with `pull: always`: its image is known only once pulled.
    always_pull: bool,
    /// Where restored artifact files go.
    folder: PathBuf,
    /// The run folder, as [`run_dirs`] spells it.
    run_dirs: Vec<String>,
    pipeline: String,
    step: String,
    step_ix: StepIx,
    run: u64,
    item: u32,
    attempt: u32,
}

impl Probe {
    /// The probe of one attempt, or `None` when its step does not use the cache.
    pub(super) fn plan(
        view: &RunView,
        step: StepIx,
        item: Option<(u32, &Value)>,
        request: &AttemptRequest,
        collect: &ArtifactPlan,
    ) -> Option<Probe> {
        let ps = &view.plan.steps[step as usize];
        let policy = ps.spec.cache.filter(|c| c.enabled)?;
        let id = view.plan.id(step);
        let mode = if view.cache.off {
            Mode::Off
        } else if view.cache.refresh.iter().any(|s| s == id) {
            Mode::Refresh
        } else {
            Mode::Use
        };
        let canon = Canon::new(view.data_dir, request, &view.plan.base_dir);
        let secret = folder_key(view.data_dir);
        let env = request
            .env
            .iter()
            .map(|(k, v)| {
                // A value that holds a pipeline secret enters the key hidden, like one whose
                // name says it is secret: the key changes with it, and never shows it.
                let holds_secret = (!collect.redact.is_empty() && collect.redact.text(v) != *v)
                    || ps.spec.env.get(k).is_some_and(|t| super::render::reads_secrets(t));
                (k.clone(), if holds_secret || secret_name(k) { hidden(&secret, v) } else { canon.text(v) })
            })
            .collect();
        let code: BTreeMap<String, String> = ps
            .kind
            .hooks()
            .code()
            .into_iter()
            .filter_map(|path| {
                let file = view.plan.code.iter().find(|c| c.path == path)?;
                Some((path.to_string(), file.sha256.clone()))
            })
            .collect();
        let (image, always_pull) = match &request.spec {
            ExecSpec::Container(c) => (Some(c.image.clone()), c.pull == sluice_worker::PullPolicy::Always),
            _ => (None, false),
        };
        let mut request_json = serde_json::to_value(&request.spec).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut request_json {
            map.remove("kind");
        }
        let mut consumed: BTreeMap<String, String> = BTreeMap::new();
        for a in &collect.consumed {
            let name = format!("{}.{}", a.step, a.name);
            let mut key = name.clone();
            let mut n = 1;
            while consumed.contains_key(&key) {
                key = format!("{name}[{n}]");
                n += 1;
            }
            consumed.insert(key, a.digest.clone());
        }
        let doc = KeyDoc {
            format: CACHE_FORMAT,
            kind: ps.kind.key().to_string(),
            request: canon.json(request_json),
            env,
            workdir: canon.text(
                &std::path::absolute(&request.workdir)
                    .unwrap_or_else(|_| request.workdir.clone())
                    .display()
                    .to_string(),
            ),
            code,
            datasets: BTreeMap::new(),
            artifacts: consumed,
            values: values(view, step, item.map(|(_, v)| v), &canon, &secret),
            pipeline: view.plan.name().to_string(),
            step: id.to_string(),
            item: ps.spec.map.as_ref().map(|_| item.map_or(0, |(i, _)| i)),
            image: None,
            outputs: ps.spec.outputs.clone(),
            declares: collect.declared.clone(),
        };
        Some(Probe {
            doc,
            mode,
            ttl_ms: policy.ttl.map(|t| t.0.as_millis() as i64),
            canon,
            image,
            always_pull,
            folder: collect.folder.clone(),
            run_dirs: run_dirs(request),
            pipeline: view.plan.name().to_string(),
            step: id.to_string(),
            step_ix: step,
            run: view.id,
            item: item.map_or(0, |(i, _)| i),
            attempt: request.id.attempt,
        })
    }

    /// Files the attempt's kind reads besides its `inputs:`: hashed for the key. Upstream
    /// artifacts given to a sandbox are left out: they enter the key by their digests.
    pub(super) fn kind_files(request: &AttemptRequest, data_dir: &Path) -> Vec<String> {
        let store = data_dir.join("artifacts");
        request
            .inputs
            .iter()
            .filter(|i| !i.source.starts_with(&store))
            .map(|i| i.source.display().to_string())
            .collect()
    }

    fn record(&self, store: &Store, at: i64, key: Option<&str>, doc: Option<&KeyDoc>, verdict: Verdict) {
        crate::metrics::cache(match &verdict {
            Verdict::Hit { .. } => "hit",
            Verdict::Miss { .. } => "miss",
            Verdict::Expired { .. } => "expired",
            Verdict::Damaged { .. } => "damaged",
            Verdict::Bypassed { .. } => "bypassed",
            Verdict::Unkeyed { .. } => "unkeyed",
        });
        let probe = CacheProbe {
            v: FORMAT_VERSION,
            run: self.run,
            pipeline: self.pipeline.clone(),
            step: self.step.clone(),
            step_ix: self.step_ix,
            item: self.item,
            attempt: self.attempt,
            at,
            key: key.map(str::to_string),
            doc: doc.cloned(),
            verdict,
        };
        if let Err(e) = store.put_cache_probe(&probe) {
            tracing::warn!(error = %e, "cannot record the step cache's lookup");
        }
    }
}

/// The values a step's templates read, as dotted paths into what they see.
fn values(
    view: &RunView,
    step: StepIx,
    item: Option<&Value>,
    canon: &Canon,
    secret: &[u8; 32],
) -> BTreeMap<String, Value> {
    let ps = &view.plan.steps[step as usize];
    let mut texts: Vec<&str> = Vec::new();
    let mut t = Templates::new(view.plan.id(step), ps.kind.key());
    ps.kind.hooks().templates(&mut t);
    texts.extend(t.into_found().into_iter().map(|(_, s)| s));
    texts.extend(ps.spec.env.values().map(String::as_str));
    texts.extend(ps.spec.workdir.as_deref());
    texts.extend(ps.spec.artifacts.values().map(String::as_str));
    texts.extend(ps.spec.inputs.iter().map(String::as_str));
    let env = template::environment();
    let mut names = BTreeSet::new();
    for text in texts.into_iter().filter(|s| template::is_template(s)) {
        if let Ok(refs) = template::references(env, text, false) {
            names.extend(refs);
        }
    }
    if names.is_empty() {
        return BTreeMap::new();
    }
    // What a secret-looking variable is made of is kept as a digest only.
    let mut hide = BTreeSet::new();
    for (k, v) in &ps.spec.env {
        if secret_name(k)
            && template::is_template(v)
            && let Ok(refs) = template::references(env, v, false)
        {
            hide.extend(refs);
        }
    }
    let ctx = view.context_json(step, item);
    names
        .into_iter()
        // Artifacts enter the key by their digests; secrets only hidden, in the env.
        .filter(|n| !(n.starts_with("steps.") && n.split('.').nth(2) == Some("artifacts")))
        .filter(|n| !n.starts_with("secrets."))
        .map(|name| {
            let found = name.split('.').try_fold(&ctx, |v, part| v.get(part)).cloned().unwrap_or(Value::Null);
            if hide.contains(&name) {
                let text = found.to_string();
                (name, Value::String(hidden(secret, &text)))
            } else {
                (name, canon.json(found))
            }
        })
        .collect()
}

/// A result to store once the attempt succeeds: the key's document and the key.
#[derive(Debug, Clone)]
pub(super) struct ToStore {
    pub doc: KeyDoc,
    pub key: String,
    pub run_dirs: Vec<String>,
    /// A container image that had no id before the attempt (it pulls it): resolved again.
    pub image: Option<String>,
}

/// What the lookup decided.
pub(super) enum Looked {
    /// The step does not run: this is its outcome.
    Hit(Outcome),
    /// The step runs; its result is stored under the key, if one is given.
    Run(Option<Box<ToStore>>),
}

/// Looks the attempt up: completes its key with the digests of the files it reads and a
/// container's image id, records what it found, and on a hit restores the entry's files
/// (each checked against its digest; one that fails drops the entry and the step runs).
pub(super) async fn lookup(
    probe: Probe,
    datasets: &[DatasetVersion],
    store: &Store,
    executors: &ExecutorSet,
    log: &dyn AttemptSink,
    now: i64,
) -> Looked {
    let note = |line: String| log.log(LogStream::System, format!("sluice: {line}\n").as_bytes());
    if probe.mode == Mode::Off {
        let why = "the run was started with --no-cache".to_string();
        probe.record(store, now, None, None, Verdict::Bypassed { why });
        return Looked::Run(None);
    }
    if probe.always_pull {
        let why = "the step's image is pulled before every attempt (`pull: always`), so what it is cannot be known before it runs; set `pull: if_not_present` to cache it".to_string();
        note(format!("step cache not used: {why}"));
        probe.record(store, now, None, None, Verdict::Unkeyed { why });
        return Looked::Run(None);
    }
    let mut doc = probe.doc.clone();
    doc.datasets = datasets.iter().map(|d| (probe.canon.text(&d.path), d.digest.clone())).collect();
    let mut unresolved = None;
    if let Some(image) = &probe.image {
        match executors.container().image_id(image).await {
            Ok(Some(id)) => doc.image = Some(id),
            Ok(None) => unresolved = Some(image.clone()),
            Err(e) => {
                let why = format!("cannot ask the Docker engine what image `{image}` is: {e}");
                note(format!("step cache not used: {why}"));
                probe.record(store, now, None, Some(&doc), Verdict::Unkeyed { why });
                return Looked::Run(None);
            }
        }
    }
    if let Some(image) = unresolved {
        let why = format!(
            "image `{image}` is not on the Docker engine yet, so what it is cannot be known before it is pulled"
        );
        note(format!("step cache: {why}; the result is stored once the step has run"));
        probe.record(store, now, None, Some(&doc), Verdict::Unkeyed { why });
        let run_dirs = probe.run_dirs.clone();
        return Looked::Run(Some(Box::new(ToStore { key: doc.key(), doc, image: Some(image), run_dirs })));
    }
    let key = doc.key();
    let run_it = |doc: KeyDoc, key: String| {
        Looked::Run(Some(Box::new(ToStore { doc, key, image: None, run_dirs: probe.run_dirs.clone() })))
    };
    if probe.mode == Mode::Refresh {
        let why = format!("the run was started with --refresh {}", probe.step);
        note(format!("step cache: {why}: running the step and storing its result under {}", short(&key)));
        probe.record(store, now, Some(&key), Some(&doc), Verdict::Bypassed { why });
        return run_it(doc, key);
    }
    let entry = match store.cache_entry(&key) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("cannot read the step cache: {e}");
            note(why.clone());
            probe.record(store, now, Some(&key), Some(&doc), Verdict::Unkeyed { why });
            return Looked::Run(None);
        }
    };
    let Some(entry) = entry else {
        let previous = store.latest_cache_key(&probe.pipeline, &probe.step, probe.item).ok().flatten();
        note(format!(
            "step cache: no result with key {}; `sluice cache explain {} {}` says what changed",
            short(&key),
            probe.run,
            probe.step
        ));
        probe.record(store, now, Some(&key), Some(&doc), Verdict::Miss { previous });
        return run_it(doc, key);
    };
    let age_ms = now.saturating_sub(entry.at);
    if let Some(ttl_ms) = probe.ttl_ms.filter(|ttl| age_ms > *ttl) {
        note(format!(
            "step cache: the result of run {} is {} old, past the step's ttl of {}: running the step",
            entry.run,
            human(age_ms),
            human(ttl_ms)
        ));
        let verdict = Verdict::Expired { from: entry.source(), age_ms, ttl_ms };
        probe.record(store, now, Some(&key), Some(&doc), verdict);
        return run_it(doc, key);
    }
    // Files are hashed off the async thread; a result without files needs no thread.
    let restored = if entry.artifacts.is_empty() {
        Ok(Ok(()))
    } else {
        let (blobs, folder, entry) = (store.blobs(), probe.folder.clone(), entry.clone());
        tokio::task::spawn_blocking(move || restore(&blobs, &folder, &entry)).await
    };
    let damage = match restored {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(e) => Some(format!("restoring its files crashed: {e}")),
    };
    if let Some(why) = damage {
        note(format!(
            "step cache: the result of run {} cannot be reused ({why}); it is dropped and the step runs",
            entry.run
        ));
        if let Err(e) = store.drop_cache_entry(&key) {
            tracing::warn!(error = %e, "cannot drop a damaged cache entry");
        }
        probe.record(store, now, Some(&key), Some(&doc), Verdict::Damaged { from: entry.source(), why });
        return run_it(doc, key);
    }
    let restored = if entry.artifacts.is_empty() {
        String::new()
    } else {
        format!(", {} artifact file(s) restored and checked", entry.artifacts.len())
    };
    note(format!(
        "step cache: reusing the result of run {} (attempt {}) with the same key {}{restored}; the step does not run",
        entry.run,
        entry.attempt,
        short(&key)
    ));
    probe.record(store, now, Some(&key), Some(&doc), Verdict::Hit { from: entry.source(), age_ms });
    Looked::Hit(Outcome::Succeeded {
        outputs: rebase(&entry.outputs, &entry.run_dirs, &probe.run_dirs),
        artifacts: entry.artifacts.clone(),
        cached: Some(entry.source()),
    })
}

/// Puts an entry's artifact files back in the work folder, each checked against its digest.
fn restore(blobs: &Blobs, folder: &Path, entry: &CacheEntry) -> std::result::Result<(), String> {
    for a in &entry.artifacts {
        let rel = Path::new(&a.file);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "artifact `{}` has a path that leads out of the work folder: {}",
                a.name, a.file
            ));
        }
        // A folder on the way that is a link out of the work folder (made by an earlier step)
        // is refused, not followed.
        let out = folder.join(rel);
        if let Some(parent) = out.parent() {
            let _ = std::fs::create_dir_all(parent);
            let (Ok(real), Ok(root)) = (parent.canonicalize(), folder.canonicalize()) else {
                return Err(format!("artifact `{}`: cannot read the folder of {}", a.name, out.display()));
            };
            if !real.starts_with(&root) {
                return Err(format!("artifact `{}`: {} leads out of the work folder", a.name, out.display()));
            }
        }
        if let Err(e) = blobs.restore(&a.digest, &out) {
            // A stored file that no longer matches its digest is moved aside, so that the
            // step's new result stores it again, whole.
            if e.is_damaged() {
                blobs.quarantine(&a.digest);
            }
            return Err(format!("artifact `{}` ({}): {e}", a.name, a.file));
        }
    }
    Ok(())
}

/// The entry a successful attempt leaves: its key, document and result.
pub(super) fn entry(
    store: ToStore,
    outcome: &Outcome,
    at: i64,
    from: (&str, &str, u64, u32, u32),
) -> Option<CacheEntry> {
    let Outcome::Succeeded { outputs, artifacts, cached: None } = outcome else { return None };
    let (pipeline, step, run, item, attempt) = from;
    Some(CacheEntry {
        v: FORMAT_VERSION,
        key: store.key,
        doc: store.doc,
        pipeline: pipeline.to_string(),
        step: step.to_string(),
        run,
        item,
        attempt,
        at,
        outputs: outputs.clone(),
        artifacts: artifacts.clone(),
        run_dirs: store.run_dirs,
    })
}

/// Completes a result whose image had no id before the attempt: its id now, and the key.
pub(super) async fn resolve_late(mut store: ToStore, executors: &ExecutorSet) -> Option<ToStore> {
    let image = store.image.take()?;
    let id = executors.container().image_id(&image).await.ok()??;
    store.doc.image = Some(id);
    store.key = store.doc.key();
    Some(store)
}

/// `sha256:ab12cd34ef56…`
fn short(digest: &str) -> String {
    match digest.get(..19) {
        Some(s) if digest.len() > 19 => format!("{s}…"),
        _ => digest.to_string(),
    }
}

fn human(ms: i64) -> String {
    let d = std::time::Duration::from_secs((ms.max(0) as u64).div_ceil(1000));
    humantime::format_duration(d).to_string()
}

/// Why one task of a step did or did not reuse a result: its latest lookup, the key's
/// components, and on a miss what differs from the entry it was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CacheExplanation {
    pub run: u64,
    pub step: String,
    pub item: u32,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub verdict: Verdict,
    /// One sentence.
    pub summary: String,
    /// What differs from the compared entry, each in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// The entry compared with (a miss's newest earlier entry of the step; a hit's source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<CachedFrom>,
    /// What the key is made of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<KeyDoc>,
}

impl Engine {
    /// Why each task of `step` in `run` did or did not reuse a cached result.
    pub fn explain_cache(&self, run: u64, step: &str) -> Result<Vec<CacheExplanation>> {
        let record = self.store.run(run)?;
        let plan = self.plan_of(&record)?;
        let ix = *plan
            .index
            .get(step)
            .ok_or_else(|| EngineError::NotFound(format!("step `{step}` in run {run} ({})", plan.name())))?;
        let policy = plan.steps[ix as usize].spec.cache;
        // The latest attempt of each item.
        let mut latest: BTreeMap<u32, CacheProbe> = BTreeMap::new();
        for p in self.store.cache_probes(run, ix)? {
            latest.insert(p.item, p);
        }
        if latest.is_empty() {
            let why = if !policy.is_some_and(|c| c.enabled) {
                format!("step `{step}` does not set `cache:`, so its results are neither reused nor stored")
            } else {
                format!("step `{step}` of run {run} has not started an attempt that looked in the cache")
            };
            return Err(EngineError::NotFound(why));
        }
        latest.into_values().map(|p| self.explain_probe(p)).collect()
    }

    fn explain_probe(&self, p: CacheProbe) -> Result<CacheExplanation> {
        let mut changes = Vec::new();
        let mut compared_with = None;
        let summary = match &p.verdict {
            Verdict::Hit { from, age_ms } => {
                compared_with = Some(from.clone());
                format!(
                    "reused: run {} (attempt {}) had the same key {} ({} earlier); the step did not run",
                    from.run,
                    from.attempt,
                    short(&from.key),
                    human(*age_ms)
                )
            }
            Verdict::Expired { from, age_ms, ttl_ms } => {
                compared_with = Some(from.clone());
                format!(
                    "ran: run {} had the same key, but its result was {} old, past the step's ttl of {}",
                    from.run,
                    human(*age_ms),
                    human(*ttl_ms)
                )
            }
            Verdict::Damaged { from, why } => {
                compared_with = Some(from.clone());
                format!("ran: run {} had the same key, but its result failed its check ({why}) and was dropped", from.run)
            }
            Verdict::Bypassed { why } => format!("ran: {why}"),
            Verdict::Unkeyed { why } => format!("ran without a key: {why}"),
            Verdict::Miss { previous: None } => {
                "ran: the cache held no earlier result of this step to compare with (its first run with `cache:`)"
                    .to_string()
            }
            Verdict::Miss { previous: Some(prev) } if p.key.as_deref() == Some(prev.as_str()) => format!(
                "ran: the step's newest result had this same key {}, but it was no longer in the cache (removed by `sluice gc`, or dropped when its files failed a check)",
                short(prev)
            ),
            Verdict::Miss { previous: Some(prev) } => match self.store.cache_entry(prev)? {
                Some(old) if old.run == p.run && old.attempt == p.attempt && old.item == p.item => format!(
                    "ran: no result had its key; the entry it was compared with ({}) has since been replaced",
                    short(prev)
                ),
                None => format!(
                    "ran: no result had its key; the newest earlier one ({}) is no longer in the cache",
                    short(prev)
                ),
                Some(old) => {
                    compared_with = Some(old.source());
                    if let Some(doc) = &p.doc {
                        changes = differences(&old.doc, doc);
                    }
                    if changes.is_empty() {
                        changes.push("the keys differ in a part this build cannot name".into());
                    }
                    format!(
                        "ran: no result had its key {}; compared with run {} (attempt {}), {} changed",
                        short(p.key.as_deref().unwrap_or_default()),
                        old.run,
                        old.attempt,
                        if changes.len() == 1 { "one thing".to_string() } else { format!("{} things", changes.len()) }
                    )
                }
            },
        };
        Ok(CacheExplanation {
            run: p.run,
            step: p.step,
            item: p.item,
            attempt: p.attempt,
            key: p.key,
            verdict: p.verdict,
            summary,
            changes,
            compared_with,
            components: p.doc,
        })
    }
}

/// What differs between two key documents, each in words.
pub fn differences(old: &KeyDoc, new: &KeyDoc) -> Vec<String> {
    let mut out = Vec::new();
    if old.format != new.format {
        out.push(format!("the cache format changed (version {} -> {})", old.format, new.format));
    }
    if old.kind != new.kind {
        out.push(format!("the step's kind changed: {} -> {}", old.kind, new.kind));
    }
    let mut request = Vec::new();
    json_changes("", &old.request, &new.request, &mut request);
    for (path, was, now) in request {
        out.push(format!("the {} request's `{path}` changed: {was} -> {now}", new.kind));
    }
    maps(&old.env, &new.env, &mut out, |name, change| match change {
        Change::Added(v) => format!("env {name} was added{}", shown(name, v)),
        Change::Removed => format!("env {name} was removed"),
        Change::Changed(a, b) if secret_name(name) => {
            let _ = (a, b);
            format!("env {name} changed (a secret: its value is not shown)")
        }
        Change::Changed(a, b) => format!("env {name} changed: {a} -> {b}"),
    });
    if old.workdir != new.workdir {
        out.push(format!("the working folder changed: {} -> {}", old.workdir, new.workdir));
    }
    maps(&old.code, &new.code, &mut out, |path, change| match change {
        Change::Added(d) => format!("code file `{path}` is new ({})", short_sha(d)),
        Change::Removed => format!("code file `{path}` is no longer used"),
        Change::Changed(a, b) => format!("code file `{path}` changed: {} -> {}", short_sha(a), short_sha(b)),
    });
    maps(&old.datasets, &new.datasets, &mut out, |path, change| match change {
        Change::Added(d) => format!("input `{path}` is new ({})", short_sha(d)),
        Change::Removed => format!("input `{path}` is no longer read"),
        Change::Changed(a, b) => format!("input `{path}` changed: {} -> {}", short_sha(a), short_sha(b)),
    });
    maps(&old.artifacts, &new.artifacts, &mut out, |name, change| match change {
        Change::Added(d) => format!("upstream artifact `{name}` is new ({})", short_sha(d)),
        Change::Removed => format!("upstream artifact `{name}` is no longer consumed"),
        Change::Changed(a, b) => {
            format!("upstream artifact `{name}` changed: {} -> {}", short_sha(a), short_sha(b))
        }
    });
    let old_values: BTreeMap<String, String> =
        old.values.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    let new_values: BTreeMap<String, String> =
        new.values.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    maps(&old_values, &new_values, &mut out, |name, change| {
        let what = value_name(name);
        let secret = |v: &str| v.starts_with("\"secret:");
        match change {
            Change::Added(v) if secret(v) => format!("{what} is now read (a secret: not shown)"),
            Change::Added(v) => format!("{what} is now read ({v})"),
            Change::Removed => format!("{what} is no longer read"),
            Change::Changed(a, b) if secret(a) || secret(b) => {
                format!("{what} changed (it feeds a secret: its value is not shown)")
            }
            Change::Changed(a, b) => format!("{what} changed: {a} -> {b}"),
        }
    });
    if old.image != new.image {
        let image = new.request.get("image").and_then(Value::as_str).unwrap_or("the image");
        let was_tag = old.request.get("image") == new.request.get("image");
        let (a, b) = (old.image.as_deref().unwrap_or("none"), new.image.as_deref().unwrap_or("none"));
        if was_tag {
            out.push(format!(
                "image `{image}` now resolves to another image: {} -> {}",
                short_sha(a),
                short_sha(b)
            ));
        } else {
            out.push(format!("the image changed: {} -> {}", short_sha(a), short_sha(b)));
        }
    }
    if old.outputs != new.outputs {
        out.push(format!("the declared outputs changed: {:?} -> {:?}", old.outputs, new.outputs));
    }
    if old.declares != new.declares {
        out.push("the declared artifacts changed".to_string());
    }
    out
}

fn value_name(name: &str) -> String {
    if let Some(p) = name.strip_prefix("params.") {
        format!("param `{p}`")
    } else if let Some(rest) = name.strip_prefix("steps.") {
        format!("upstream value `{rest}`")
    } else if name == "item" || name.starts_with("item.") {
        format!("the map item (`{name}`)")
    } else {
        format!("`{name}`")
    }
}

fn shown(name: &str, v: &str) -> String {
    if secret_name(name) { String::new() } else { format!(" ({v})") }
}

fn short_sha(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    match hex.get(..12) {
        Some(s) if hex.len() > 12 => format!("sha256 {s}…"),
        _ => format!("sha256 {hex}"),
    }
}

enum Change<'a> {
    Added(&'a str),
    Removed,
    Changed(&'a str, &'a str),
}

fn maps(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    out: &mut Vec<String>,
    say: impl Fn(&str, Change<'_>) -> String,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(say(k, Change::Added(v))),
            Some(was) if was != v => out.push(say(k, Change::Changed(was, v))),
            Some(_) => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(say(k, Change::Removed));
    }
}

/// The leaves that differ between two JSON values: (path, old, new).
fn json_changes(path: &str, old: &Value, new: &Value, out: &mut Vec<(String, String, String)>) {
    let at = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                json_changes(&at(k), a.get(k).unwrap_or(&Value::Null), v, out);
            }
            for (k, v) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                json_changes(&at(k), v, &Value::Null, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_changes(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push((path.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> KeyDoc {
        KeyDoc {
            format: CACHE_FORMAT,
            kind: "process".into(),
            request: serde_json::json!({"argv": ["python", "train.py", "--lr", "0.01"]}),
            env: [("MODE".to_string(), "fast".to_string())].into_iter().collect(),
            workdir: "$SPEC_DIR".into(),
            code: BTreeMap::new(),
            datasets: [("$SPEC_DIR/data.csv".to_string(), format!("sha256:{}", "a".repeat(64)))]
                .into_iter()
                .collect(),
            artifacts: BTreeMap::new(),
            values: [("params.lr".to_string(), serde_json::json!("0.01"))].into_iter().collect(),
            image: None,
            outputs: vec![],
            declares: vec![],
            pipeline: "p".into(),
            step: "train".into(),
            item: None,
        }
    }

    #[test]
    fn the_key_is_stable_and_sees_every_part() {
        let a = doc();
        assert_eq!(a.key(), doc().key());
        assert!(a.key().starts_with("sha256:") && a.key().len() == 71);
        let mut b = doc();
        b.env.insert("MODE".into(), "slow".into());
        assert_ne!(a.key(), b.key());
        let mut c = doc();
        c.datasets.insert("$SPEC_DIR/data.csv".into(), format!("sha256:{}", "b".repeat(64)));
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn differences_are_said_in_words() {
        let old = doc();
        let mut new = doc();
        new.request = serde_json::json!({"argv": ["python", "train.py", "--lr", "0.1"]});
        new.values.insert("params.lr".into(), serde_json::json!("0.1"));
        new.datasets.insert("$SPEC_DIR/data.csv".into(), format!("sha256:{}", "c".repeat(64)));
        new.env.insert("API_TOKEN".into(), hidden(&[1; 32], "hunter2"));
        let said = differences(&old, &new);
        assert!(
            said.contains(&"the process request's `argv[3]` changed: \"0.01\" -> \"0.1\"".to_string()),
            "{said:?}"
        );
        assert!(said.contains(&"param `lr` changed: \"0.01\" -> \"0.1\"".to_string()), "{said:?}");
        assert!(
            said.contains(
                &"input `$SPEC_DIR/data.csv` changed: sha256 aaaaaaaaaaaa… -> sha256 cccccccccccc…"
                    .to_string()
            ),
            "{said:?}"
        );
        assert!(said.contains(&"env API_TOKEN was added".to_string()), "{said:?}");
        assert!(!said.iter().any(|s| s.contains("hunter2")));
        assert_eq!(differences(&old, &doc()), Vec::<String>::new());
    }

    #[test]
    fn folders_of_a_run_are_named_not_spelled() {
        let canon = Canon(vec![
            ("/d/attempts/7/a.0.2".into(), "$ATTEMPT".into()),
            ("/d/work/7".into(), "$RUN_DIR".into()),
            ("/d".into(), "$DATA".into()),
        ]);
        assert_eq!(canon.text("/d/work/7/x.csv"), "$RUN_DIR/x.csv");
        assert_eq!(canon.text("/d/attempts/7/a.0.2.outputs.json"), "$ATTEMPT.outputs.json");
        assert_eq!(canon.text("/d/code/ab/p.wasm"), "$DATA/code/ab/p.wasm");
        assert_eq!(canon.text("/d/work/70/x /dx /d.csv"), "$DATA/work/70/x /dx /d.csv");
        assert_eq!(canon.text("--out=/d/work/7/m /e/d/work/7"), "--out=$RUN_DIR/m /e/d/work/7");
        let outputs: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"model": "/d/work/7/m.bin", "n": 3, "other": "/d/work/70/x"}"#).unwrap();
        let moved = rebase(&outputs, &["/d/work/7".into()], &["/d/work/9".into()]);
        assert_eq!(
            Value::Object(moved),
            serde_json::json!({"model": "/d/work/9/m.bin", "n": 3, "other": "/d/work/70/x"})
        );
    }
}
