//! Serving registered models on the CPU: versions of Sluice-trained models (logistic, MLP:
//! the safetensors weights and metadata a `train:` step writes) loaded once, after their files,
//! signed registration and provenance verify, and kept while requests use them; a request
//! names a version, an alias (`churn@staging`), or only the model (the served alias,
//! `production`, or a rollout's routing). Rows are checked against the version's features,
//! computed as one batch, and recorded (latency, outcome, a bounded window of inputs and
//! predictions) for rollout analysis, drift monitors and online accuracy from feedback.
//!
//! `server/api/serving.rs` (Sluice's API) and `server/api/oip.rs` (the Open Inference
//! Protocol) are its two doors.

pub mod input;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_worker::Model;

use crate::driver::Registry;
pub use input::Invalid;
use stats::{Served, VersionStats};

pub use crate::registry::SERVED_ALIAS;
/// Rows kept per version in the window of served inputs (the most a monitor compares).
pub const WINDOW_ROWS: usize = crate::spec::MAX_WINDOW;
/// Requests whose predictions are kept for feedback.
pub const REMEMBERED: usize = 100_000;
/// Versions kept loaded at once (the least recently used goes first).
pub const MAX_LOADED: usize = 32;
/// The largest model file read.
const MAX_FILE: u64 = 1 << 30;

/// What a request asks to be served by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The model: its served alias, or its rollout's routing.
    Model,
    Alias(String),
    Version(u64),
}

impl Target {
    /// `churn@staging` names an alias; `churn` the model.
    pub fn parse(name: &str) -> (String, Target) {
        match name.split_once('@') {
            Some((m, a)) => (m.to_string(), Target::Alias(a.to_string())),
            None => (name.to_string(), Target::Model),
        }
    }
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq)]
pub enum ServeError {
    NotFound(String),
    /// The input does not fit the version (422, naming the field).
    Invalid(Invalid),
    /// The version cannot be served (it does not verify, or is not a Sluice model).
    Refused(String),
    Internal(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::NotFound(m) | ServeError::Refused(m) | ServeError::Internal(m) => f.write_str(m),
            ServeError::Invalid(i) => write!(f, "{i}"),
        }
    }
}

/// A loaded version.
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub version: u64,
    pub model: Model,
    /// The weights' digest.
    pub digest: String,
}

/// One request's predictions.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The prediction's id, which feedback names: made by the server, unguessable.
    pub id: String,
    pub model: Arc<Loaded>,
    /// The alias it was served through, if any.
    pub alias: Option<String>,
    pub rows: usize,
    /// `rows × classes` probabilities.
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The most likely class of each row.
    pub fn classes(&self) -> Vec<usize> {
        let k = self.model.model.classes.len();
        self.probabilities
            .chunks(k)
            .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i))
            .collect()
    }

    /// Sluice's answer.
    pub fn doc(&self) -> Value {
        let k = self.model.model.classes.len();
        let classes = &self.model.model.classes;
        json!({
            "v": 1,
            "model": self.model.name,
            "version": self.model.version,
            "alias": self.alias,
            "request_id": self.id,
            "classes": classes,
            "predictions": self.classes().into_iter().map(|c| &classes[c]).collect::<Vec<_>>(),
            "probabilities": self.probabilities.chunks(k).collect::<Vec<_>>(),
        })
    }
}

/// A rollout's routing of a model's alias: `share` percent of the requests go to the
/// candidate, the rest to the stable version; sticky by a key when one is given.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub rollout: u64,
    pub alias: String,
    pub stable: Option<u64>,
    pub candidate: u64,
    pub share: u32,
    pub by: Option<crate::rollout::spec::RouteBy>,
}

impl Route {
    /// The version a request is served by: a key hashes to the same side while the share
    /// holds (FNV-1a, so every server agrees); without one, a fresh draw.
    pub fn pick(&self, key: Option<&str>) -> u64 {
        let Some(stable) = self.stable else { return self.candidate };
        let bucket = match key {
            Some(k) => {
                k.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
                    % 100
            }
            None => draw() % 100,
        };
        if bucket < self.share as u64 { self.candidate } else { stable }
    }
}

/// A prediction's id: 96 random bits from the system's generator, as hex (as request ids).
fn prediction_id() -> String {
    match crate::security::random::<12>() {
        Ok(b) => crate::security::hex(&b),
        // Unreachable on Linux; ids then stay unique by the counter, if guessable.
        Err(_) => format!("{:016x}", draw()),
    }
}

/// A cheap uniform draw: the scheduler's splitmix over a counter, seeded once a process by
/// the clock.
fn draw() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    crate::scheduler::splitmix(seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// A loaded version and when it was last used (a counter).
type LoadedEntry = (Arc<Loaded>, u64);

/// The predictions of recent requests, for feedback: (model, version, (class, score) per row).
type Remembered = (String, u64, Vec<(u32, f32)>);

/// The serving side of an engine: loaded versions and their records.
pub struct Serving {
    registry: Registry,
    /// Loaded versions, with when each was last used (at most [`MAX_LOADED`]).
    loaded: Mutex<HashMap<(String, u64), LoadedEntry>>,
    uses: std::sync::atomic::AtomicU64,
    stats: Mutex<HashMap<(String, u64), VersionStats>>,
    recent: Mutex<(HashMap<String, Remembered>, VecDeque<String>)>,
    routes: std::sync::RwLock<HashMap<String, Route>>,
    /// The last drift check of each monitored model (its report).
    drift: Mutex<HashMap<String, Value>>,
    window: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Serving {
    pub fn new(registry: Registry) -> Self {
        Serving {
            registry,
            loaded: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
            stats: Mutex::new(HashMap::new()),
            recent: Mutex::new((HashMap::new(), VecDeque::new())),
            routes: std::sync::RwLock::new(HashMap::new()),
            drift: Mutex::new(HashMap::new()),
            window: WINDOW_ROWS,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets (or, with none, ends) the routing of a model's rollout.
    pub fn set_route(&self, model: &str, route: Option<Route>) {
        crate::metrics::rollout_weight(model, route.as_ref().map_or(0, |r| r.share));
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        match route {
            Some(r) => routes.insert(model.to_string(), r),
            None => routes.remove(model),
        };
    }

    /// The rollouts that route now (every running one has a route).
    pub fn routed(&self) -> Vec<u64> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).values().map(|r| r.rollout).collect()
    }

    pub fn route(&self, model: &str) -> Option<Route> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).get(model).cloned()
    }

    /// The routing key of a request to `model`, when its rollout routes by one: the header
    /// it names (`header` looks one up), or the named feature of the first row.
    pub fn route_key(
        &self,
        model: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &Value,
    ) -> Option<String> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let by = routes.get(model)?.by.as_ref()?;
        if let Some(h) = &by.header {
            return header(h);
        }
        let f = by.feature.as_ref()?;
        let first = ["rows", "instances", "inputs", "dataframe_records"]
            .iter()
            .find_map(|k| body.get(*k))
            .and_then(|v| if v.is_array() { v.get(0) } else { Some(v) })?;
        first.get(f).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    }

    /// The version a request is served by (through a rollout's routing when the alias it
    /// names is being rolled out), and the alias it came through.
    pub fn resolve(&self, name: &str, target: &Target) -> Result<(u64, Option<String>), ServeError> {
        self.resolve_keyed(name, target, None)
    }

    pub fn resolve_keyed(
        &self,
        name: &str,
        target: &Target,
        key: Option<&str>,
    ) -> Result<(u64, Option<String>), ServeError> {
        let alias = match target {
            Target::Model => Some(SERVED_ALIAS),
            Target::Alias(a) => Some(a.as_str()),
            Target::Version(_) => None,
        };
        if let Some(a) = alias
            && let Some(r) =
                self.routes.read().unwrap_or_else(|p| p.into_inner()).get(name).filter(|r| r.alias == a)
        {
            return Ok((r.pick(key), Some(a.to_string())));
        }
        let store = self.registry.store();
        let internal = |e: crate::store::StoreError| ServeError::Internal(e.to_string());
        // The alias first (one read a request); the model's own record only to say why not.
        let found = match alias {
            Some(a) => store.alias(name, a).map_err(internal)?,
            None => None,
        };
        if let (Some(v), Some(a)) = (found, alias) {
            return Ok((v, Some(a.to_string())));
        }
        if store.model(name).map_err(internal)?.is_none() {
            return Err(ServeError::NotFound(format!(
                "there is no model `{name}` (`sluice models` lists them)"
            )));
        }
        match target {
            Target::Version(v) => Ok((*v, None)),
            Target::Alias(a) => Err(ServeError::NotFound(format!("model `{name}` has no alias `{a}`"))),
            Target::Model => Err(ServeError::NotFound(format!(
                "model `{name}` has no `{SERVED_ALIAS}` alias to serve: point it at a version \
                 (`sluice model alias {name} {SERVED_ALIAS} N`), or ask for `{name}@ALIAS` or a version"
            ))),
        }
    }

    /// A version, loaded once (its files, registration and provenance verified first).
    pub fn load(&self, name: &str, version: u64) -> Result<Arc<Loaded>, ServeError> {
        if let Some(l) = lock(&self.loaded).get_mut(&(name.to_string(), version)) {
            l.1 = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(l.0.clone());
        }
        let store = self.registry.store();
        let v = store
            .model_version(name, version)
            .map_err(|e| ServeError::Internal(e.to_string()))?
            .ok_or_else(|| ServeError::NotFound(format!("model `{name}` has no version {version}")))?;
        match self.registry.verify_version(&v) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                return Err(ServeError::Refused(format!(
                    "version {version} of `{name}` is not served: {why}"
                )));
            }
            Err(e) => return Err(ServeError::Internal(e.to_string())),
        }
        let read = |digest: &str| -> Result<Vec<u8>, ServeError> {
            let (r, size) = store
                .blobs()
                .reader(digest)
                .map_err(|e| ServeError::Internal(format!("cannot read {digest}: {e}")))?;
            if size > MAX_FILE {
                return Err(ServeError::Refused(format!("{digest} is over 1 GiB")));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            r.take(MAX_FILE)
                .read_to_end(&mut bytes)
                .map_err(|e| ServeError::Internal(format!("cannot read {digest}: {e}")))?;
            Ok(bytes)
        };
        let not_ours = || {
            ServeError::Refused(format!(
                "version {version} of `{name}` is not a model Sluice serves: serving takes the logistic and \
                 MLP models of `train:` steps (safetensors weights with sluice-model/1 metadata)"
            ))
        };
        let weights = v
            .files
            .iter()
            .filter(|(p, _)| p.ends_with(".safetensors"))
            .min_by_key(|(_, f)| f.digest != v.artifact)
            .map(|(_, f)| f.digest.clone())
            .ok_or_else(not_ours)?;
        let mut metadata = None;
        for (_, f) in v.files.iter().filter(|(p, f)| p.ends_with(".json") && f.size < 64 << 20) {
            if let Ok(m) = serde_json::from_slice::<Value>(&read(&f.digest)?)
                && m["format"] == "sluice-model/1"
            {
                metadata = Some(m);
                break;
            }
        }
        let metadata = metadata.ok_or_else(not_ours)?;
        let model = Model::load(&read(&weights)?, &metadata).map_err(|e| {
            ServeError::Refused(format!("version {version} of `{name}` cannot be loaded: {e}"))
        })?;
        let loaded = Arc::new(Loaded { name: name.to_string(), version, model, digest: weights });
        let mut cache = lock(&self.loaded);
        if cache.len() >= MAX_LOADED
            && let Some(oldest) = cache.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            // Requests that hold it finish with it; the next one loads it again.
            cache.remove(&oldest);
        }
        let used = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cache.insert((name.to_string(), version), (loaded.clone(), used));
        Ok(loaded)
    }

    /// Serves one request of Sluice's API: resolve, load, check, predict, record.
    pub fn predict(
        &self,
        name: &str,
        target: &Target,
        body: &Value,
        key: Option<&str>,
    ) -> Result<Prediction, ServeError> {
        self.predict_with(name, target, key, |l| {
            input::rows(body, &l.model.features, &format!("{} version {}", l.name, l.version))
        })
    }

    /// Serves one request whose rows `read` takes from the request for the loaded version
    /// (`n × features` values, row after row).
    pub fn predict_with(
        &self,
        name: &str,
        target: &Target,
        key: Option<&str>,
        read: impl FnOnce(&Loaded) -> Result<(Vec<f32>, usize), Invalid>,
    ) -> Result<Prediction, ServeError> {
        let start = std::time::Instant::now();
        let (version, alias) = self.resolve_keyed(name, target, key)?;
        let loaded = match self.load(name, version) {
            Ok(l) => l,
            // A version that does not exist is not counted: its number comes from the
            // request, and each would be a new metric series and a new stats entry.
            Err(e @ ServeError::NotFound(_)) => return Err(e),
            Err(e) => {
                self.record_failure(name, version, false);
                return Err(e);
            }
        };
        let d = loaded.model.features.len();
        let (x, n) = match read(&loaded) {
            Ok((x, n)) if n > 0 && n.checked_mul(d) == Some(x.len()) => (x, n),
            Ok((x, n)) => {
                self.record_failure(name, version, false);
                return Err(ServeError::Internal(format!(
                    "{} values read for {n} rows of {d} features",
                    x.len()
                )));
            }
            Err(e) => {
                self.record_failure(name, version, true);
                return Err(ServeError::Invalid(e));
            }
        };
        let probabilities = loaded.model.predict(&x, n);
        let p = Prediction { id: prediction_id(), model: loaded, alias, rows: n, probabilities };
        self.record(&p, &x, start.elapsed());
        Ok(p)
    }

    /// Starts a version's record anew (a rollout's analyses read what it serves from then on).
    pub fn reset_stats(&self, name: &str, version: u64) {
        lock(&self.stats).insert((name.to_string(), version), VersionStats::new(self.window));
    }

    fn record_failure(&self, name: &str, version: u64, invalid: bool) {
        let outcome = if invalid { "invalid" } else { "failed" };
        crate::metrics::predicted(name, version, outcome, 0, std::time::Duration::ZERO);
        let mut stats = lock(&self.stats);
        let s = stats.entry((name.to_string(), version)).or_insert_with(|| VersionStats::new(self.window));
        s.requests += 1;
        if invalid {
            s.invalid += 1;
        } else {
            s.failures += 1;
        }
    }

    fn record(&self, p: &Prediction, x: &[f32], took: std::time::Duration) {
        crate::metrics::predicted(&p.model.name, p.model.version, "ok", p.rows, took);
        let k = p.model.model.classes.len();
        let d = p.model.model.features.len();
        let classes = p.classes();
        let rows: Vec<(u32, f32)> = classes
            .iter()
            .zip(p.probabilities.chunks(k))
            .map(|(&c, probs)| (c as u32, if k == 2 { probs[1] } else { probs[c] }))
            .collect();
        {
            let mut stats = lock(&self.stats);
            let s = stats
                .entry((p.model.name.clone(), p.model.version))
                .or_insert_with(|| VersionStats::new(self.window));
            s.requests += 1;
            s.rows += p.rows as u64;
            s.latencies_ms.push(took.as_secs_f32() * 1000.0);
            for (row, &(class, score)) in x.chunks(d).zip(&rows) {
                s.window.push(Served { inputs: row.to_vec(), class, score });
            }
        }
        let mut recent = lock(&self.recent);
        let (map, order) = &mut *recent;
        if map.insert(p.id.clone(), (p.model.name.clone(), p.model.version, rows)).is_none() {
            order.push_back(p.id.clone());
        }
        while order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Ground truth for an earlier request's rows (one label per row, class names): online
    /// accuracy and AUC of the version that served it. Returns (version, rows taken).
    pub fn feedback(
        &self,
        name: &str,
        request_id: &str,
        labels: &[String],
    ) -> Result<(u64, usize), ServeError> {
        let (model, version, rows) = lock(&self.recent).0.get(request_id).cloned().ok_or_else(|| {
            ServeError::NotFound(format!(
                "no prediction waits for feedback with request id `{request_id}` (each takes one, within the last {REMEMBERED} requests)"
            ))
        })?;
        if model != name {
            return Err(ServeError::NotFound(format!(
                "request `{request_id}` was served by `{model}`, not `{name}`"
            )));
        }
        if labels.len() != rows.len() {
            return Err(ServeError::Invalid(Invalid {
                field: "labels".into(),
                message: format!("has {} labels for the request's {} rows", labels.len(), rows.len()),
            }));
        }
        let loaded = self.load(name, version)?;
        let classes = &loaded.model.classes;
        let mut truth = Vec::with_capacity(labels.len());
        for (i, l) in labels.iter().enumerate() {
            let c = classes.iter().position(|c| c == l).ok_or_else(|| {
                ServeError::Invalid(Invalid {
                    field: if labels.len() == 1 { "label".into() } else { format!("labels[{i}]") },
                    message: format!(
                        "`{l}` is not a class of {name} version {version} ({})",
                        classes.join(", ")
                    ),
                })
            })?;
            truth.push(c as u32);
        }
        // One feedback per prediction: taken now, so it cannot be counted twice.
        if lock(&self.recent).0.remove(request_id).is_none() {
            return Err(ServeError::NotFound(format!(
                "the feedback of request `{request_id}` was already taken"
            )));
        }
        let mut stats = lock(&self.stats);
        let s = stats.entry((name.to_string(), version)).or_insert_with(|| VersionStats::new(self.window));
        for ((class, score), t) in rows.iter().zip(truth) {
            s.feedback.push((*score, t, *class == t));
        }
        Ok((version, labels.len()))
    }

    /// The most recent `n` served rows of a version (oldest first), when it has that many.
    pub fn recent_rows(&self, name: &str, version: u64, n: usize) -> Option<Vec<Vec<f32>>> {
        let stats = lock(&self.stats);
        let s = stats.get(&(name.to_string(), version))?;
        let len = s.window.len();
        (len >= n).then(|| s.window.iter().skip(len - n).map(|r| r.inputs.clone()).collect())
    }

    /// Keeps a monitor's last drift check of a model.
    pub fn set_drift(&self, model: &str, report: Value) {
        lock(&self.drift).insert(model.to_string(), report);
    }

    pub fn drift(&self, model: &str) -> Option<Value> {
        lock(&self.drift).get(model).cloned()
    }

    /// Reads one version's record.
    pub fn with_stats<T>(&self, name: &str, version: u64, f: impl FnOnce(Option<&VersionStats>) -> T) -> T {
        f(lock(&self.stats).get(&(name.to_string(), version)))
    }

    /// Every served version of a model with its record.
    pub fn summary(&self, name: &str) -> Value {
        let stats = lock(&self.stats);
        let loaded = lock(&self.loaded);
        let mut versions: Vec<u64> =
            stats.keys().chain(loaded.keys()).filter(|(m, _)| m == name).map(|(_, v)| *v).collect();
        versions.sort_unstable();
        versions.dedup();
        let list: Vec<Value> = versions
            .into_iter()
            .map(|v| {
                let key = (name.to_string(), v);
                let mut doc = stats
                    .get(&key)
                    .map(VersionStats::summary)
                    .unwrap_or_else(|| VersionStats::new(1).summary());
                doc["version"] = json!(v);
                doc["loaded"] = json!(loaded.contains_key(&key));
                doc
            })
            .collect();
        json!({ "v": 1, "model": name, "versions": list })
    }
}

#[cfg(test)]
mod tests;
