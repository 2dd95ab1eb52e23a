//! The engine's own executor, for the steps it carries out itself over the registry:
//! `register:` (a version from an upstream step's artifacts, once per task), `gate:` (a
//! version's metrics against thresholds and an alias's version) and `promote:` (an alias
//! moved, a protected one only after a passed gate and an approval in the run). Their
//! retries, timeouts and logs are those of every step.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sluice_worker::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecError, ExecSpec, Executor, KillSignal,
    LogStream,
};
use tokio::sync::watch;

use super::EngineError;
use super::registry::{Actor, NewVersion, Registry};
use crate::registry::gate::{self, Baseline, Check, Direction};
use crate::registry::{Cause, Feature, SourceAttempt, VersionFile, schema_of_metadata, schema_of_mlmodel};
use crate::store::{ArtifactRecord, GatePass, StoreError};

/// Carries out `register:`, `gate:`, `promote:`, `drift:` and `rollout:` steps.
pub(crate) struct Builtins {
    registry: Registry,
    rollouts: Arc<std::sync::OnceLock<Arc<dyn RolloutHost>>>,
}

impl Builtins {
    pub(crate) fn new(registry: Registry, rollouts: Arc<std::sync::OnceLock<Arc<dyn RolloutHost>>>) -> Self {
        Builtins { registry, rollouts }
    }
}

/// What a `rollout:` step asks of the server that runs rollouts.
#[derive(Debug, Clone)]
pub(crate) struct RolloutRequest {
    pub model: String,
    pub version: u64,
    pub alias: String,
    pub strategy: Value,
    pub route_by: Value,
    /// The step, as the audit log names it; a retried or resumed attempt of the same step
    /// adopts the rollout it started.
    pub by: String,
    pub may_move_protected: bool,
}

/// The server's side of `rollout:` steps (`server/rollouts.rs`).
pub(crate) trait RolloutHost: Send + Sync {
    /// Starts the rollout (or finds the one this step started before); its id.
    fn start(&self, request: RolloutRequest) -> Result<u64, String>;
    /// Aborts it (the step was cancelled or timed out).
    fn abort(&self, id: u64, reason: &str);
}

/// A step's failure: fatal (trying again cannot help) or retryable.
type Failed = ExecError;

fn engine_error(e: EngineError) -> Failed {
    match e {
        EngineError::Store(StoreError::Refused(_, m))
        | EngineError::Forbidden(m)
        | EngineError::Invalid(m) => ExecError::fatal(m),
        EngineError::NotFound(m) => ExecError::fatal(m),
        e => ExecError::retryable(e.to_string()),
    }
}

fn store_error(e: StoreError) -> Failed {
    engine_error(EngineError::Store(e))
}

impl Executor for Builtins {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        let registry = self.registry.clone();
        let rollouts = self.rollouts.get().cloned();
        Box::pin(async move {
            let ExecSpec::Builtin(spec) = &request.spec else {
                return AttemptOutcome::failed(ExecError::fatal("not a built-in step"));
            };
            let (op, args) = (spec.op.clone(), spec.args.clone());
            let id = request.id.clone();
            let log = sink.clone();
            let done = tokio::task::spawn_blocking(move || {
                let say = |line: &str| log.log(LogStream::System, format!("sluice: {line}\n").as_bytes());
                // Asked to stop (a timeout, a cancel): nothing more is written.
                let stopped = || kill.borrow().is_some();
                let cx = Cx {
                    registry: &registry,
                    run: id.run,
                    step: &id.step,
                    item: id.item,
                    say: &say,
                    stopped: &stopped,
                };
                match op.as_str() {
                    "register" => cx.register(&args),
                    "gate" => cx.gate(&args),
                    "promote" => cx.promote(&args),
                    "drift" => drift(&args, &say),
                    "rollout" => cx.rollout(&args, rollouts.as_deref()),
                    other => Err(ExecError::fatal(format!("`{other}` is not a built-in step"))),
                }
            })
            .await;
            match done {
                Ok(Ok(outputs)) => AttemptOutcome { result: Ok(()), outputs, exit_code: None },
                Ok(Err(e)) => AttemptOutcome::failed(e),
                Err(e) => AttemptOutcome::failed(ExecError::retryable(format!("the step crashed: {e}"))),
            }
        })
    }
}

/// One built-in attempt: where it runs and how it speaks to its log.
struct Cx<'a> {
    registry: &'a Registry,
    run: u64,
    step: &'a str,
    item: u32,
    say: &'a dyn Fn(&str),
    stopped: &'a dyn Fn() -> bool,
}

fn text(args: &Value, key: &str) -> Option<String> {
    args[key].as_str().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_string())
}

impl Cx<'_> {
    /// Refuses to go on once the step was asked to stop.
    fn go_on(&self) -> Result<(), Failed> {
        if (self.stopped)() {
            return Err(ExecError::cancelled("the step was stopped before it changed the registry"));
        }
        Ok(())
    }

    fn pipeline(&self) -> Result<String, Failed> {
        Ok(self.registry.store().run(self.run).map_err(store_error)?.pipeline)
    }

    /// This run, and the runs it retries (a retry from a later step keeps the results of the
    /// steps before it: their registrations, gates and approvals are this run's too).
    fn lineage(&self) -> Result<Vec<u64>, Failed> {
        let mut runs = vec![self.run];
        while runs.len() < 16 {
            let r = self.registry.store().run(*runs.last().expect("one")).map_err(store_error)?;
            match r.cause.as_ref().and_then(|c| c["retry_of"].as_u64()) {
                Some(before) if !runs.contains(&before) => runs.push(before),
                _ => break,
            }
        }
        Ok(runs)
    }

    /// Who this step is, as the audit log names it.
    fn actor_name(&self) -> Result<String, Failed> {
        Ok(format!("pipeline:{}#{}.{}", self.pipeline()?, self.run, self.step))
    }

    /// The model and version a step names, or the one version registered in this run.
    fn candidate(&self, args: &Value) -> Result<(String, u64), Failed> {
        let named = (text(args, "model"), text(args, "version"));
        let mut registered = Vec::new();
        for run in self.lineage()? {
            registered = self.registry.store().registered_in(run).map_err(store_error)?;
            if !registered.is_empty() {
                break;
            }
        }
        let pick = |model: Option<&str>| -> Result<(String, u64), Failed> {
            let mut found: Vec<&(String, u64)> =
                registered.iter().filter(|(m, _)| model.is_none_or(|want| m == want)).collect();
            found.dedup();
            match found.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(ExecError::fatal(format!(
                    "run {} registered no version{}: give `version:` (`{{{{ steps.<register step>.outputs.version }}}}`)",
                    self.run,
                    model.map(|m| format!(" of `{m}`")).unwrap_or_default()
                ))),
                many => Err(ExecError::fatal(format!(
                    "run {} registered {} versions ({}): say which with `model:` and `version:`",
                    self.run,
                    many.len(),
                    many.iter().map(|(m, v)| format!("{m} {v}")).collect::<Vec<_>>().join(", ")
                ))),
            }
        };
        match named {
            (Some(m), Some(v)) => {
                let v = crate::registry::parse_version(&v).map_err(ExecError::fatal)?;
                Ok((m, v))
            }
            (model, None) => pick(model.as_deref()),
            (None, Some(v)) => {
                let (m, _) = pick(None)?;
                Ok((m, crate::registry::parse_version(&v).map_err(ExecError::fatal)?))
            }
        }
    }

    /// The artifacts of the newest successful attempt of `step` in this run (this item's,
    /// for a mapped step, else item 0's).
    fn artifacts_of(&self, step: &str) -> Result<Vec<ArtifactRecord>, Failed> {
        let all: Vec<ArtifactRecord> = self
            .registry
            .store()
            .artifacts(Some(self.run))
            .map_err(store_error)?
            .into_iter()
            .filter(|a| a.step == step)
            .collect();
        let item = if all.iter().any(|a| a.item == self.item) { self.item } else { 0 };
        let newest = all.iter().filter(|a| a.item == item).map(|a| a.attempt).max();
        Ok(all.into_iter().filter(|a| a.item == item && Some(a.attempt) == newest).collect())
    }

    fn register(&self, args: &Value) -> Result<Map<String, Value>, Failed> {
        let model = text(args, "model").ok_or_else(|| ExecError::fatal("`model` is empty"))?;
        crate::registry::check_model_name(&model).map_err(ExecError::fatal)?;
        // What to register: `STEP`, `STEP.NAME`, or the upstream step that made a `model`.
        let (step, only) = match text(args, "artifact") {
            Some(a) => match a.split_once('.') {
                Some((s, n)) => (s.to_string(), Some(n.to_string())),
                None => (a, None),
            },
            None => {
                let upstream: Vec<String> = args["upstream"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                let mut makers = Vec::new();
                for s in &upstream {
                    if self.artifacts_of(s)?.iter().any(|a| a.name == "model") {
                        makers.push(s.clone());
                    }
                }
                match makers.as_slice() {
                    [one] => (one.clone(), None),
                    [] => {
                        return Err(ExecError::fatal(format!(
                            "no upstream step of `{}` made an artifact named `model` (upstream: {}); name what to register with `artifact: STEP` or `artifact: STEP.NAME`",
                            self.step,
                            if upstream.is_empty() { "none".to_string() } else { upstream.join(", ") }
                        )));
                    }
                    many => {
                        return Err(ExecError::fatal(format!(
                            "several upstream steps made a `model` ({}): name one with `artifact: STEP`",
                            many.join(", ")
                        )));
                    }
                }
            }
        };
        let records: Vec<ArtifactRecord> = self
            .artifacts_of(&step)?
            .into_iter()
            .filter(|a| only.as_ref().is_none_or(|n| &a.name == n))
            .collect();
        let Some(first) = records.first() else {
            return Err(ExecError::fatal(format!(
                "step `{step}` of run {} stored no artifact{}",
                self.run,
                only.map(|n| format!(" named `{n}`")).unwrap_or_default()
            )));
        };
        let source = SourceAttempt {
            run: self.run,
            pipeline: first.pipeline.clone(),
            step: step.clone(),
            item: first.item,
            attempt: first.attempt,
        };
        let file_name = |a: &ArtifactRecord| a.file.rsplit('/').next().unwrap_or(&a.file).to_string();
        let mut files = BTreeMap::new();
        let mut main = None;
        for a in &records {
            let name = file_name(a);
            if a.name == "model" || (main.is_none() && only.is_some()) {
                main = Some(name.clone());
            }
            files.insert(name, VersionFile { digest: a.digest.clone(), size: a.size });
        }
        let store = self.registry.store();
        let tracking =
            store.task_run(self.run, first.step_ix, first.item, first.attempt).map_err(store_error)?;
        let mut metrics: BTreeMap<String, f64> =
            tracking.iter().flat_map(|r| r.metrics.iter().map(|(k, l)| (k.clone(), l.value))).collect();
        let mut params: BTreeMap<String, String> = tracking.iter().flat_map(|r| r.params.clone()).collect();
        // A `train:` step's metadata: the features it takes and its hyperparameters.
        let mut input_schema: Vec<Feature> = Vec::new();
        for a in &records {
            let small = a.size <= 4 << 20;
            if small && (a.name == "metadata" || file_name(a) == "MLmodel") {
                let mut bytes = Vec::new();
                if let Ok((mut r, _)) = store.blobs().reader(&a.digest) {
                    let _ = std::io::Read::read_to_end(&mut r, &mut bytes);
                }
                if a.name == "metadata"
                    && let Ok(meta) = serde_json::from_slice::<Value>(&bytes)
                {
                    input_schema = schema_of_metadata(&meta);
                    for (k, v) in meta["hyperparameters"].as_object().into_iter().flatten() {
                        params.entry(k.clone()).or_insert_with(|| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                    }
                    for (k, v) in meta["metrics"].as_object().into_iter().flatten() {
                        if let Some(f) = v.as_f64().filter(|f| f.is_finite()) {
                            metrics.entry(k.clone()).or_insert(f);
                        }
                    }
                } else if input_schema.is_empty() {
                    input_schema = schema_of_mlmodel(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        let tags: BTreeMap<String, String> = args["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let new = NewVersion {
            name: model.clone(),
            files,
            main,
            source: format!("sluice:runs/{}/steps/{step}", self.run),
            attempt: Some(source),
            tracking_run: tracking.map(|r| r.id),
            metrics,
            params,
            input_schema,
            description: text(args, "description").unwrap_or_default(),
            tags,
            create_model: true,
        };
        let actor = Actor::new(self.actor_name()?, false, None);
        self.go_on()?;
        let (v, made) = self
            .registry
            .register_version(new, &actor, Some((self.run, self.step, self.item)))
            .map_err(engine_error)?;
        (self.say)(&format!(
            "{} {model} version {} ({}, {} files)",
            if made { "registered" } else { "already registered (a retry):" },
            v.version,
            v.artifact,
            v.files.len()
        ));
        let mut out = Map::new();
        out.insert("model".into(), json!(model));
        out.insert("version".into(), json!(v.version));
        out.insert("artifact".into(), json!(v.artifact));
        Ok(out)
    }

    fn gate(&self, args: &Value) -> Result<Map<String, Value>, Failed> {
        let (model, version) = self.candidate(args)?;
        let store = self.registry.store();
        let candidate = store.model_version_needed(&model, version).map_err(store_error)?;
        let checks: Vec<Check> = args["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Check {
                metric: c["metric"].as_str().unwrap_or_default().to_string(),
                min: c["min"].as_f64(),
                max: c["max"].as_f64(),
                direction: serde_json::from_value::<Option<Direction>>(c["direction"].clone()).ok().flatten(),
            })
            .collect();
        let against = text(args, "against");
        if let Some(a) = &against {
            crate::registry::check_alias(a).map_err(|e| ExecError::fatal(format!("`against`: {e}")))?;
        }
        let base_version = match &against {
            Some(alias) => match store.alias(&model, alias).map_err(store_error)? {
                Some(v) => Some((v, store.model_version_needed(&model, v).map_err(store_error)?)),
                None => None,
            },
            None => None,
        };
        let baseline = against.as_deref().map(|alias| Baseline {
            alias,
            version: base_version.as_ref().map(|(v, rec)| (*v, &rec.metrics)),
        });
        let min_improvement = args["min_improvement"].as_f64().unwrap_or(0.0);
        let report =
            gate::evaluate((&model, version, &candidate.metrics), &checks, baseline, min_improvement)
                .map_err(|e| ExecError::fatal(e.to_string()))?;
        let shown = serde_json::to_value(&report).unwrap_or_default();
        (self.say)(&format!("gate report: {shown}"));
        if !report.passed {
            return Err(ExecError::fatal(report.failures()));
        }
        self.go_on()?;
        store
            .put_gate_pass(
                self.run,
                &model,
                version,
                &GatePass { v: 1, step: self.step.to_string(), report: shown.clone() },
            )
            .and_then(|()| store.flush())
            .map_err(store_error)?;
        (self.say)(&format!("the gate on {model} version {version} passed"));
        let mut out = Map::new();
        out.insert("passed".into(), json!(true));
        out.insert("model".into(), json!(model));
        out.insert("version".into(), json!(version));
        out.insert("report".into(), shown);
        Ok(out)
    }

    fn promote(&self, args: &Value) -> Result<Map<String, Value>, Failed> {
        let (model, version) = self.candidate(args)?;
        let alias = text(args, "alias").ok_or_else(|| ExecError::fatal("`alias` is empty"))?;
        crate::registry::check_alias(&alias).map_err(ExecError::fatal)?;
        let (protected, gate, approval) = self.clearance(&model, version, &alias, "a promote step")?;
        let reason = text(args, "reason")
            .unwrap_or_else(|| format!("promoted by run {} step {}", self.run, self.step));
        let cause =
            Cause { run: Some(self.run), step: Some(self.step.to_string()), gate, approval, request: None };
        let actor = Actor::new(self.actor_name()?, protected, None);
        self.go_on()?;
        let moved = self
            .registry
            .move_alias(&model, &alias, Some(version), &actor, &reason, cause)
            .map_err(engine_error)?;
        (self.say)(&format!(
            "{model}@{alias}: {} -> version {version}",
            moved.from.map_or("nothing".to_string(), |v| format!("version {v}"))
        ));
        let mut out = Map::new();
        out.insert("model".into(), json!(model));
        out.insert("alias".into(), json!(alias));
        out.insert("version".into(), json!(version));
        out.insert("from".into(), json!(moved.from));
        Ok(out)
    }

    /// Whether `alias` is protected, and the gate passed for the version and the approval
    /// given in this run (or the run it retries) that let `what` move it; refused when it is
    /// protected and either is missing.
    fn clearance(
        &self,
        model: &str,
        version: u64,
        alias: &str,
        what: &str,
    ) -> Result<(bool, Option<String>, Option<String>), Failed> {
        let store = self.registry.store();
        let m = store.model_needed(model).map_err(store_error)?;
        // In this run, or in the run it retries (whose gate and approval it kept).
        let (mut gate, mut approval) = (None, None);
        for run in self.lineage()? {
            if gate.is_none() {
                gate = store.gate_pass(run, model, version).map_err(store_error)?;
            }
            if approval.is_none() {
                approval = store.decisions(run).map_err(store_error)?.into_iter().find(|(_, d)| d.approved);
            }
        }
        let protected = m.protected.contains(alias);
        if protected && (gate.is_none() || approval.is_none()) {
            let mut missing = Vec::new();
            if gate.is_none() {
                missing.push(format!("no gate passed for version {version}"));
            }
            if approval.is_none() {
                missing.push("no approval was given".to_string());
            }
            return Err(ExecError::fatal(format!(
                "the alias `{alias}` of `{model}` is protected: {what} moves it only after a gate passed for the version and an approval in the same run, and in run {} {}",
                self.run,
                missing.join(" and ")
            )));
        }
        Ok((protected, gate.map(|g| g.step), approval.map(|(s, _)| s)))
    }

    /// A `rollout:` step: the server rolls the version out onto the alias; the step waits
    /// for the end (a retried attempt adopts the rollout it started) and aborts it when
    /// stopped.
    fn rollout(&self, args: &Value, host: Option<&dyn RolloutHost>) -> Result<Map<String, Value>, Failed> {
        let host = host.ok_or_else(|| {
            ExecError::fatal(
                "a `rollout:` step routes live traffic: it runs under `sluice serve`, not `sluice run`",
            )
        })?;
        let (model, version) = self.candidate(args)?;
        let alias = text(args, "alias").unwrap_or_else(|| crate::registry::SERVED_ALIAS.to_string());
        crate::registry::check_alias(&alias).map_err(ExecError::fatal)?;
        let (protected, _, _) = self.clearance(&model, version, &alias, "a rollout step")?;
        self.go_on()?;
        let id = host
            .start(RolloutRequest {
                model: model.clone(),
                version,
                alias: alias.clone(),
                strategy: args["strategy"].clone(),
                route_by: args["route_by"].clone(),
                by: self.actor_name()?,
                may_move_protected: protected,
            })
            .map_err(ExecError::fatal)?;
        (self.say)(&format!("rollout {id}: version {version} of `{model}` onto `{alias}`"));
        let mut said = String::new();
        loop {
            if (self.stopped)() {
                host.abort(id, &format!("step `{}` of run {} was stopped", self.step, self.run));
                return Err(ExecError::cancelled(format!("the step was stopped; rollout {id} is aborted")));
            }
            let r = self
                .registry
                .store()
                .rollout(id)
                .map_err(store_error)?
                .ok_or_else(|| ExecError::retryable(format!("rollout {id} vanished")))?;
            let now = format!(
                "{} at stage {}/{}, {}% to the candidate",
                r.phase.name(),
                r.stage,
                r.stages.len(),
                r.candidate_share()
            );
            if now != said {
                (self.say)(&format!("rollout {id}: {now}"));
                said = now;
            }
            match &r.phase {
                crate::rollout::Phase::Succeeded => {
                    let mut out = Map::new();
                    out.insert("rollout".into(), json!(id));
                    out.insert("status".into(), json!("succeeded"));
                    out.insert("model".into(), json!(model));
                    out.insert("alias".into(), json!(alias));
                    out.insert("version".into(), json!(version));
                    out.insert("stable".into(), json!(r.stable));
                    return Ok(out);
                }
                crate::rollout::Phase::Aborted { reason } => {
                    return Err(ExecError::fatal(format!("rollout {id} was aborted: {reason}")));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
}

/// A `drift:` step: both tables compared, the report written as JSON and HTML, the verdict
/// as outputs (and as the step's failure when it asks for that).
fn drift(args: &Value, say: &dyn Fn(&str)) -> Result<Map<String, Value>, Failed> {
    use crate::drift::{self, Method, Options};
    let path = |key: &str| -> Result<std::path::PathBuf, Failed> {
        text(args, key)
            .map(Into::into)
            .ok_or_else(|| ExecError::fatal(format!("the drift step has no `{key}`")))
    };
    let method: Method = serde_json::from_value(args["method"].clone()).unwrap_or_default();
    let opts = Options {
        columns: serde_json::from_value(args["columns"].clone()).unwrap_or_default(),
        method,
        threshold: args["threshold"].as_f64(),
        drift_share: args["drift_share"].as_f64().unwrap_or(0.5),
    };
    let (reference, current) = (path("reference")?, path("current")?);
    let r = drift::read_csv(&reference).map_err(ExecError::fatal)?;
    let c = drift::read_csv(&current).map_err(ExecError::fatal)?;
    say(&format!(
        "drift of {} ({} rows) against {} ({} rows)",
        current.display(),
        c.rows,
        reference.display(),
        r.rows
    ));
    let report = drift::compare(&r, &c, &opts).map_err(ExecError::fatal)?;
    for col in &report.columns {
        say(&format!(
            "  {}: {} {}{} {}",
            col.column,
            col.method,
            short(col.statistic),
            col.p_value.map(|p| format!(" p={}", short(p))).unwrap_or_default(),
            if col.drifted { "DRIFT" } else { "ok" }
        ));
    }
    let write = |key: &str, bytes: &[u8]| -> Result<(), Failed> {
        let file = path(key)?;
        std::fs::write(&file, bytes)
            .map_err(|e| ExecError::retryable(format!("cannot write {}: {e}", file.display())))
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| ExecError::fatal(e.to_string()))?;
    write("json", &json)?;
    write("html", drift::html::render(&report, args["title"].as_str().unwrap_or("Drift")).as_bytes())?;
    let verdict = format!(
        "{} of {} columns drifted (share {:.3}; the table drifts at {}){}",
        report.drifted_columns.len(),
        report.columns.len(),
        report.share,
        report.drift_share,
        if report.drifted_columns.is_empty() {
            String::new()
        } else {
            format!(": {}", report.drifted_columns.join(", "))
        }
    );
    say(&verdict);
    if report.drifted && args["fail_on_drift"].as_bool() == Some(true) {
        return Err(ExecError::fatal(format!("the data drifted: {verdict}")));
    }
    Ok(report.outputs())
}

/// A figure in a log line: six decimals, or three significant digits when smaller.
fn short(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-4 { format!("{v:.3e}") } else { format!("{v:.6}") }
}
