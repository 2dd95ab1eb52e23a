//! Experiment tracking in the store. Trees: `experiments` (id, big-endian -> record),
//! `experiment_names` (name -> id), `tracking_runs` (run id -> record, which holds its
//! params, tags and each metric's newest value), `tracking_by_experiment` (experiment | run
//! id), `tracking_by_task` (run | step | item | attempt -> run id: the tracking run of a step
//! attempt) and `tracking_series` (run id | 0 | key | 0 | sequence -> a segment: the points
//! of one key that one write logged, in order; a version byte, then 24 bytes a point: the
//! value, step and timestamp, big-endian). A history is a scan of a few segments, not of one
//! key per point.
//!
//! Writes to one record are read-modify-write under one lock; they are durable with the
//! caller's next flush.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Refusal, Result, Store, StoreError, decode, encode, task_prefix};
use crate::scheduler::StepIx;
use crate::tracking::{
    DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_NAME, Experiment, Latest, Lifecycle, Metric, MetricPoint,
    RECORD_VERSION, RunStatus, TaskRef, TrackingRun,
};

/// The trees of tracking.
#[derive(Clone)]
pub(super) struct Trees {
    experiments: sled::Tree,
    names: sled::Tree,
    runs: sled::Tree,
    by_experiment: sled::Tree,
    by_task: sled::Tree,
    series: sled::Tree,
    /// Tags set on pipeline runs after they started (run -> the changes), apart from the run
    /// records that the driver rewrites as runs move.
    run_tags: sled::Tree,
    /// Serializes read-modify-write of records.
    lock: Arc<Mutex<()>>,
    /// Pipelines' experiments by pipeline (they are never renamed or deleted), so that an
    /// attempt's start does not look them up in the store.
    pipelines: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Trees> {
        Ok(Trees {
            experiments: db.open_tree("experiments")?,
            names: db.open_tree("experiment_names")?,
            runs: db.open_tree("tracking_runs")?,
            by_experiment: db.open_tree("tracking_by_experiment")?,
            by_task: db.open_tree("tracking_by_task")?,
            series: db.open_tree("tracking_series")?,
            run_tags: db.open_tree("run_tags")?,
            lock: Arc::default(),
            pipelines: Arc::default(),
        })
    }

    /// Every tree, for the store's drop after a failed write.
    pub(super) fn all(&self) -> [&sled::Tree; 7] {
        [
            &self.experiments,
            &self.names,
            &self.runs,
            &self.by_experiment,
            &self.by_task,
            &self.series,
            &self.run_tags,
        ]
    }
}

/// The tag that marks a pipeline's experiment (Sluice's: not deleted or renamed by clients).
pub const PIPELINE_TAG: &str = "sluice.pipeline";

/// The version byte of a stored segment.
const SEGMENT_VERSION: u8 = 1;
/// The bytes of one point in a segment.
const POINT: usize = 24;

fn series_prefix(run: &str, key: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.len() + key.map_or(0, str::len) + 11);
    k.extend_from_slice(run.as_bytes());
    k.push(0);
    if let Some(key) = key {
        k.extend_from_slice(key.as_bytes());
        k.push(0);
    }
    k
}

fn encode_segment<'a>(points: impl Iterator<Item = &'a Metric>) -> Vec<u8> {
    let mut b = vec![SEGMENT_VERSION];
    for m in points {
        b.extend_from_slice(&m.value.to_be_bytes());
        b.extend_from_slice(&m.step.to_be_bytes());
        b.extend_from_slice(&m.timestamp.to_be_bytes());
    }
    b
}

fn decode_segment(key: &str, b: &[u8], out: &mut Vec<Metric>) -> Result<()> {
    if b.first() != Some(&SEGMENT_VERSION) || !(b.len() - 1).is_multiple_of(POINT) {
        return Err(StoreError::Corrupt { what: "metric segment", detail: format!("{} bytes", b.len()) });
    }
    let f = |c: &[u8], at: usize| <[u8; 8]>::try_from(&c[at..at + 8]).expect("8 bytes");
    out.reserve((b.len() - 1) / POINT);
    for c in b[1..].chunks_exact(POINT) {
        out.push(Metric {
            key: key.to_string(),
            value: f64::from_be_bytes(f(c, 0)),
            step: i64::from_be_bytes(f(c, 8)),
            timestamp: i64::from_be_bytes(f(c, 16)),
        });
    }
    Ok(())
}

fn refused<T>(kind: Refusal, message: String) -> Result<T> {
    Err(StoreError::Refused(kind, message))
}

impl Store {
    fn tracking_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.tracking.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// MLflow's default experiment (id 0), as a folder without one shows it.
    fn default_experiment() -> Experiment {
        Experiment {
            v: RECORD_VERSION,
            id: DEFAULT_EXPERIMENT,
            name: DEFAULT_EXPERIMENT_NAME.into(),
            artifact_location: format!("mlflow-artifacts:/{DEFAULT_EXPERIMENT}"),
            lifecycle: Lifecycle::Active,
            tags: BTreeMap::new(),
            created: 0,
            updated: 0,
        }
    }

    fn put_experiment(&self, e: &Experiment) -> Result<()> {
        self.writable()?;
        self.tracking.experiments.insert(e.id.to_be_bytes(), encode(e)).map_err(|x| self.broke(x))?;
        self.tracking.names.insert(e.name.as_bytes(), &e.id.to_be_bytes()).map_err(|x| self.broke(x))?;
        Ok(())
    }

    pub fn experiment(&self, id: u64) -> Result<Option<Experiment>> {
        match self.tracking.experiments.get(id.to_be_bytes())? {
            Some(b) => decode("experiment", &b).map(Some),
            None if id == DEFAULT_EXPERIMENT => Ok(Some(Self::default_experiment())),
            None => Ok(None),
        }
    }

    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        match self.tracking.names.get(name.as_bytes())? {
            None if name == DEFAULT_EXPERIMENT_NAME
                && self.tracking.experiments.get(DEFAULT_EXPERIMENT.to_be_bytes())?.is_none() =>
            {
                Ok(Some(Self::default_experiment()))
            }
            Some(id) => {
                let id = <[u8; 8]>::try_from(id.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt { what: "experiment name", detail: name.to_string() })?;
                self.experiment(id)
            }
            None => Ok(None),
        }
    }

    /// Every experiment, by id.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        let mut out: Vec<Experiment> = self
            .tracking
            .experiments
            .iter()
            .values()
            .map(|v| decode("experiment", &v?))
            .collect::<Result<_>>()?;
        if out.first().is_none_or(|e| e.id != DEFAULT_EXPERIMENT) {
            out.insert(0, Self::default_experiment());
        }
        Ok(out)
    }

    /// A new experiment; refused when one has the name.
    pub fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<String>,
        tags: BTreeMap<String, String>,
        now: i64,
    ) -> Result<Experiment> {
        let _guard = self.tracking_lock();
        if self.tracking.names.contains_key(name.as_bytes())? || name == DEFAULT_EXPERIMENT_NAME {
            return refused(Refusal::Exists, format!("an experiment named `{name}` exists"));
        }
        let id = self.db.generate_id()? + 1;
        let e = Experiment {
            v: RECORD_VERSION,
            id,
            name: name.to_string(),
            artifact_location: artifact_location.unwrap_or_else(|| format!("mlflow-artifacts:/{id}")),
            lifecycle: Lifecycle::Active,
            tags,
            created: now,
            updated: now,
        };
        self.put_experiment(&e)?;
        Ok(e)
    }

    /// Changes an experiment; `f` may refuse. A new name must be free.
    pub fn update_experiment<T>(
        &self,
        id: u64,
        now: i64,
        f: impl FnOnce(&mut Experiment) -> std::result::Result<T, (Refusal, String)>,
    ) -> Result<T> {
        let _guard = self.tracking_lock();
        let Some(mut e) = self.experiment(id)? else {
            return refused(Refusal::NotFound, format!("there is no experiment {id}"));
        };
        let old_name = e.name.clone();
        let out = f(&mut e).or_else(|(k, m)| refused(k, m))?;
        if e.name != old_name {
            if self.tracking.names.contains_key(e.name.as_bytes())? || e.name == DEFAULT_EXPERIMENT_NAME {
                return refused(Refusal::Exists, format!("an experiment named `{}` exists", e.name));
            }
            self.tracking.names.remove(old_name.as_bytes()).map_err(|x| self.broke(x))?;
        }
        e.updated = now;
        self.put_experiment(&e)?;
        Ok(out)
    }

    /// The experiment of a pipeline (named after it), made on first use.
    pub fn pipeline_experiment(&self, pipeline: &str, now: i64) -> Result<u64> {
        let cached = |id: u64| {
            self.tracking
                .pipelines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pipeline.to_string(), id);
            Ok(id)
        };
        if let Some(id) = self.tracking.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(pipeline) {
            return Ok(*id);
        }
        if let Some(e) = self.experiment_by_name(pipeline)? {
            // Only Sluice's own (tagged) experiment is kept: one a client made under the name
            // could be renamed or deleted.
            if e.tags.get(PIPELINE_TAG).is_some_and(|p| p == pipeline) {
                return cached(e.id);
            }
            return Ok(e.id);
        }
        let tags = BTreeMap::from([(PIPELINE_TAG.to_string(), pipeline.to_string())]);
        match self.create_experiment(pipeline, None, tags, now) {
            Ok(e) => cached(e.id),
            // Made meanwhile by another attempt.
            Err(StoreError::Refused(Refusal::Exists, _)) => self
                .experiment_by_name(pipeline)?
                .map(|e| e.id)
                .ok_or_else(|| StoreError::Corrupt { what: "experiment name", detail: pipeline.to_string() }),
            Err(e) => Err(e),
        }
    }

    pub fn tracking_run(&self, id: &str) -> Result<Option<TrackingRun>> {
        self.tracking.runs.get(id.as_bytes())?.map(|b| decode("tracking run", &b)).transpose()
    }

    fn put_tracking_run(&self, r: &TrackingRun) -> Result<()> {
        self.writable()?;
        self.tracking.runs.insert(r.id.as_bytes(), encode(r)).map_err(|x| self.broke(x))?;
        Ok(())
    }

    /// Stores a new tracking run (its experiment must exist).
    pub fn create_tracking_run(&self, r: &TrackingRun) -> Result<()> {
        let _guard = self.tracking_lock();
        match self.experiment(r.experiment)? {
            Some(e) if e.lifecycle == Lifecycle::Active => {}
            Some(_) => {
                return refused(Refusal::Invalid, format!("the experiment {} is deleted", r.experiment));
            }
            None => return refused(Refusal::NotFound, format!("there is no experiment {}", r.experiment)),
        }
        self.put_tracking_run(r)?;
        let mut k = r.experiment.to_be_bytes().to_vec();
        k.extend_from_slice(r.id.as_bytes());
        self.tracking.by_experiment.insert(k, &[]).map_err(|x| self.broke(x))?;
        if let Some(t) = &r.task {
            let mut k = task_prefix(t.run, t.step_ix, t.item);
            k.extend_from_slice(&t.attempt.to_be_bytes());
            self.tracking.by_task.insert(k, r.id.as_bytes()).map_err(|x| self.broke(x))?;
        }
        Ok(())
    }

    /// Changes a tracking run; `f` may refuse, and nothing is written then.
    pub fn update_tracking_run<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut TrackingRun) -> std::result::Result<T, (Refusal, String)>,
    ) -> Result<T> {
        let _guard = self.tracking_lock();
        let Some(mut r) = self.tracking_run(id)? else {
            return refused(Refusal::NotFound, format!("there is no run `{}`", crate::tracking::short(id)));
        };
        let out = f(&mut r).or_else(|(k, m)| refused(k, m))?;
        self.put_tracking_run(&r)?;
        Ok(out)
    }

    /// Appends points to a run's series and keeps each key's newest value on the record.
    pub fn log_metrics(&self, id: &str, points: &[Metric]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let _guard = self.tracking_lock();
        let Some(mut r) = self.tracking_run(id)? else {
            return refused(Refusal::NotFound, format!("there is no run `{}`", crate::tracking::short(id)));
        };
        if r.lifecycle == Lifecycle::Deleted {
            return refused(Refusal::Invalid, format!("the run `{id}` is deleted"));
        }
        self.writable()?;
        let mut batch = sled::Batch::default();
        // One segment per key, its points in the order given.
        let mut keys: Vec<&str> = Vec::new();
        for p in points {
            if !keys.contains(&p.key.as_str()) {
                keys.push(&p.key);
            }
            let new = Latest { value: p.value, step: p.step, timestamp: p.timestamp };
            match r.metrics.get_mut(&p.key) {
                Some(old) if !new.supersedes(old) => {}
                Some(old) => *old = new,
                None => {
                    r.metrics.insert(p.key.clone(), new);
                }
            }
        }
        for key in keys {
            let mut k = series_prefix(id, Some(key));
            k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            batch.insert(k, encode_segment(points.iter().filter(|p| p.key == key)));
        }
        self.tracking.series.apply_batch(batch).map_err(|x| self.broke(x))?;
        self.put_tracking_run(&r)
    }

    /// A metric's points in a run, in recorded order (`key` `None`: every metric's).
    pub fn metric_history(&self, id: &str, key: Option<&str>) -> Result<Vec<Metric>> {
        let prefix = series_prefix(id, key);
        let run_len = id.len() + 1;
        let mut segments = Vec::new();
        for kv in self.tracking.series.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let Some(split) = k.len().checked_sub(9).filter(|s| *s >= run_len) else {
                return Err(StoreError::Corrupt {
                    what: "metric segment key",
                    detail: format!("{} bytes", k.len()),
                });
            };
            let seq = u64::from_be_bytes(k[split + 1..].try_into().expect("8 bytes"));
            let name = match key {
                Some(key) => key.to_string(),
                None => String::from_utf8_lossy(&k[run_len..split]).into_owned(),
            };
            segments.push((seq, name, v));
        }
        if key.is_none() {
            segments.sort_by_key(|(seq, _, _)| *seq);
        }
        let mut out = Vec::new();
        for (_, name, v) in segments {
            decode_segment(&name, &v, &mut out)?;
        }
        Ok(out)
    }

    /// The tracking runs of some experiments (all of them when `experiments` is empty).
    pub fn tracking_runs(&self, experiments: &[u64]) -> Result<Vec<TrackingRun>> {
        if experiments.is_empty() {
            return self.tracking.runs.iter().values().map(|v| decode("tracking run", &v?)).collect();
        }
        let mut out = Vec::new();
        for e in experiments {
            for kv in self.tracking.by_experiment.scan_prefix(e.to_be_bytes()) {
                let (k, _) = kv?;
                if let Some(b) = self.tracking.runs.get(&k[8..])? {
                    out.push(decode("tracking run", &b)?);
                }
            }
        }
        Ok(out)
    }

    /// Makes the tracking run of a step attempt, in its pipeline's experiment; the runs of
    /// the task's earlier attempts that were left running (a killed engine) are marked
    /// killed. Returns its id.
    pub fn start_task_run(&self, task: TaskRef, user: &str, now: i64) -> Result<String> {
        let experiment = self.pipeline_experiment(&task.pipeline, now)?;
        // A task's first attempt has no earlier one left running.
        let earlier = if task.attempt > 1 {
            self.task_runs_of(task.run, (task.step_ix, task.item))?
        } else {
            Vec::new()
        };
        for r in earlier {
            if r.status == RunStatus::Running {
                self.update_tracking_run(&r.id, |r| {
                    r.status = RunStatus::Killed;
                    r.end = Some(now);
                    Ok(())
                })?;
            }
        }
        let id = crate::tracking::new_run_id().map_err(StoreError::System)?;
        let name = match task.item {
            0 => task.step.clone(),
            i => format!("{}[{i}]", task.step),
        };
        let mut tags = BTreeMap::new();
        tags.insert("mlflow.runName".to_string(), name.clone());
        tags.insert("mlflow.user".to_string(), user.to_string());
        tags.insert("mlflow.source.type".to_string(), "JOB".to_string());
        tags.insert("mlflow.source.name".to_string(), format!("sluice:{}", task.pipeline));
        tags.insert("sluice.pipeline".to_string(), task.pipeline.clone());
        tags.insert("sluice.run".to_string(), task.run.to_string());
        tags.insert("sluice.step".to_string(), task.step.clone());
        tags.insert("sluice.item".to_string(), task.item.to_string());
        tags.insert("sluice.attempt".to_string(), task.attempt.to_string());
        let r = TrackingRun {
            v: RECORD_VERSION,
            artifact_uri: format!("mlflow-artifacts:/{experiment}/{id}/artifacts"),
            id: id.clone(),
            experiment,
            name,
            user: user.to_string(),
            status: RunStatus::Running,
            start: now,
            end: None,
            lifecycle: Lifecycle::Active,
            params: BTreeMap::new(),
            tags,
            metrics: BTreeMap::new(),
            task: Some(task),
        };
        self.create_tracking_run(&r)?;
        Ok(id)
    }

    /// Ends the tracking run of a step attempt (unless its step's code ended it already).
    pub fn finish_task_run(&self, id: &str, status: RunStatus, now: i64) -> Result<()> {
        self.update_tracking_run(id, |r| {
            if !r.status.is_terminal() {
                r.status = status;
                r.end = Some(now);
            }
            Ok(())
        })
    }

    /// A pipeline run's tags: those it started with, and the changes made since (an empty
    /// value removes one).
    pub fn run_tags(&self, run: &crate::store::RunRecord) -> Result<BTreeMap<String, String>> {
        let mut tags = run.tags.clone();
        if let Some(b) = self.tracking.run_tags.get(run.id.to_be_bytes())? {
            let changes: BTreeMap<String, String> = decode("run tags", &b)?;
            for (k, v) in changes {
                if v.is_empty() {
                    tags.remove(&k);
                } else {
                    tags.insert(k, v);
                }
            }
        }
        Ok(tags)
    }

    /// Sets tags of a pipeline run (an empty value removes one); returns them all.
    pub fn set_run_tags(&self, run: u64, set: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let _guard = self.tracking_lock();
        let record = self.run(run)?;
        self.writable()?;
        let mut changes: BTreeMap<String, String> = match self.tracking.run_tags.get(run.to_be_bytes())? {
            Some(b) => decode("run tags", &b)?,
            None => BTreeMap::new(),
        };
        changes.extend(set);
        self.tracking.run_tags.insert(run.to_be_bytes(), encode(&changes)).map_err(|x| self.broke(x))?;
        self.run_tags(&record)
    }

    /// The tracking run of one step attempt.
    pub fn task_run(&self, run: u64, step: StepIx, item: u32, attempt: u32) -> Result<Option<TrackingRun>> {
        let mut k = task_prefix(run, step, item);
        k.extend_from_slice(&attempt.to_be_bytes());
        match self.tracking.by_task.get(k)? {
            Some(id) => self.tracking.runs.get(&id)?.map(|b| decode("tracking run", &b)).transpose(),
            None => Ok(None),
        }
    }

    /// The tracking runs of the attempts whose `tracking_by_task` key starts with `prefix`,
    /// in step, item and attempt order.
    fn task_runs_under(&self, prefix: Vec<u8>) -> Result<Vec<TrackingRun>> {
        let mut out = Vec::new();
        for kv in self.tracking.by_task.scan_prefix(prefix) {
            let (_, id) = kv?;
            if let Some(b) = self.tracking.runs.get(&id)? {
                out.push(decode("tracking run", &b)?);
            }
        }
        Ok(out)
    }

    /// The tracking runs of one task's (run, step, item) attempts.
    fn task_runs_of(&self, run: u64, (step, item): (StepIx, u32)) -> Result<Vec<TrackingRun>> {
        self.task_runs_under(task_prefix(run, step, item))
    }

    /// The tracking runs of a pipeline run's attempts (of one step's), in step, item and
    /// attempt order.
    pub fn task_runs(&self, run: u64, step: Option<StepIx>) -> Result<Vec<TrackingRun>> {
        let mut prefix = run.to_be_bytes().to_vec();
        if let Some(s) = step {
            prefix.extend_from_slice(&s.to_be_bytes());
        }
        self.task_runs_under(prefix)
    }

    /// The metric points of a pipeline run (or of one of its steps), by step, item and
    /// attempt, each series in recorded order.
    pub fn run_metrics(&self, run: u64, step: Option<StepIx>) -> Result<Vec<MetricPoint>> {
        let mut out = Vec::new();
        for r in self.task_runs(run, step)? {
            let Some(t) = &r.task else { continue };
            for m in self.metric_history(&r.id, None)? {
                out.push(MetricPoint {
                    task: t.step.clone(),
                    item: t.item,
                    attempt: t.attempt,
                    key: m.key,
                    value: m.value,
                    step: m.step,
                    timestamp: m.timestamp,
                });
            }
        }
        Ok(out)
    }
}
