//! What a run's templates see, `when:` and `map:` decided, and an attempt's request built: the
//! step's kind renders its part, this adds the step's env, folder and files.

use std::path::{Path, PathBuf};

use minijinja::Value as JValue;
use serde_json::{Map, Value, json};
use sluice_worker::{ATTEMPT_REQUEST_VERSION, AttemptFiles, AttemptId, AttemptRequest};

use crate::artifacts::{self, Blobs};
use crate::compile::Plan;
use crate::kinds::{Render, RunFacts};
use crate::scheduler::{PrepareOutcome, Produced, RunMachine, StepIx};
use crate::security::secrets::{Provider, Redactor};
use crate::store::{ConsumedArtifact, RunCache, Trigger};
use crate::template;

/// What templates can see of a run.
pub(crate) struct RunView<'a> {
    pub id: u64,
    pub plan: &'a Plan,
    pub params: &'a Map<String, Value>,
    /// Outputs of finished steps: an object, or a list of objects for a mapped step.
    pub outputs: &'a std::collections::HashMap<StepIx, Value>,
    /// The artifacts of finished tasks.
    pub artifacts: &'a std::collections::HashMap<(StepIx, u32), Vec<Produced>>,
    /// The data folder.
    pub data_dir: &'a Path,
    /// Its artifact store (upstream artifacts are read from it).
    pub blobs: Blobs,
    pub machine: &'a RunMachine,
    /// Why the run started and the details.
    pub trigger: Trigger,
    pub cause: Option<&'a Value>,
    /// How the run uses the step cache.
    pub cache: &'a RunCache,
}

impl RunView<'_> {
    /// The upstream steps' outputs, by id.
    fn upstream(&self, step: StepIx) -> Map<String, Value> {
        self.plan.core[step as usize]
            .upstream
            .iter()
            .map(|ix| {
                let outputs = self.outputs.get(ix).cloned().unwrap_or_else(|| json!({}));
                (self.plan.id(*ix).to_string(), outputs)
            })
            .collect()
    }

    /// What templates see of a step's artifacts: by name `{path, digest, size, media_type,
    /// file}` (a list for a glob), and for a mapped step a list of those, one per item. With
    /// `mount`, the consumer sees them in its sandbox's input folder, not on the host.
    fn artifacts_of(&self, ix: StepIx, mount: Option<&str>) -> Value {
        let spec = &self.plan.steps[ix as usize].spec;
        let task = |item: u32| {
            let mut by_name = Map::new();
            for a in self.artifacts.get(&(ix, item)).map(Vec::as_slice).unwrap_or_default() {
                let path = match mount {
                    Some(m) => format!("{m}/{}", mounted_name(a)),
                    None => self
                        .blobs
                        .readable_path(&a.digest, &a.file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                };
                let one = json!({
                    "path": path, "digest": a.digest, "size": a.size,
                    "media_type": a.media_type, "file": a.file,
                });
                if spec.artifacts.get(&a.name).is_some_and(|p| artifacts::is_glob(p)) {
                    match by_name.entry(a.name.clone()).or_insert_with(|| Value::Array(Vec::new())) {
                        Value::Array(list) => list.push(one),
                        other => *other = Value::Array(vec![one]),
                    }
                } else {
                    by_name.insert(a.name.clone(), one);
                }
            }
            Value::Object(by_name)
        };
        if spec.map.is_some() {
            let n = match self.outputs.get(&ix) {
                Some(Value::Array(list)) => list.len() as u32,
                _ => 0,
            };
            Value::Array((0..n).map(task).collect())
        } else {
            task(0)
        }
    }

    fn context(&self, step: StepIx, item: Option<&Value>) -> JValue {
        JValue::from_serialize(self.context_json(step, item))
    }

    /// What a step's templates see, as JSON.
    pub(crate) fn context_json(&self, step: StepIx, item: Option<&Value>) -> Value {
        let mut steps = Map::new();
        let mount = self.plan.steps[step as usize].kind.hooks().input_folder();
        let mut add = |ix: StepIx| {
            let state = self.machine.step_state(ix);
            if state.is_terminal() {
                let outputs = self.outputs.get(&ix).cloned().unwrap_or_else(|| json!({}));
                let artifacts = self.artifacts_of(ix, mount);
                steps.insert(
                    self.plan.id(ix).to_string(),
                    json!({ "outputs": outputs, "artifacts": artifacts, "state": state }),
                );
            }
        };
        // Only what the step's templates read: building every step's view for every attempt
        // would make a wide DAG quadratic.
        match &self.plan.reads[step as usize] {
            Some(reads) => reads.iter().for_each(|ix| add(*ix)),
            None => (0..self.plan.ids.len() as StepIx).for_each(add),
        }
        let mut ctx = json!({
            "params": self.params,
            "steps": steps,
            "run": {
                "id": self.id, "name": self.plan.name(), "dag": self.plan.short_hash(),
                "trigger": self.trigger, "cause": self.cause,
            },
        });
        if let Some(item) = item {
            ctx["item"] = item.clone();
        }
        ctx
    }
}

/// The name an upstream artifact has in a sandbox's input folder: its digest's first 12 hex
/// digits and its file name (one name per content; the extension kept for tools that look).
fn mounted_name(a: &Produced) -> String {
    let hex = a.digest.strip_prefix(artifacts::SHA256).unwrap_or(&a.digest);
    let file = Path::new(&a.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}-{file}", hex.get(..12).unwrap_or(hex))
}

/// Evaluates `when:` and `map:` of a step.
pub(crate) fn prepare(view: &RunView, step: StepIx) -> PrepareOutcome {
    let spec = &view.plan.steps[step as usize].spec;
    let env = template::environment();
    let ctx = view.context(step, None);
    if let Some(cond) = &spec.when {
        match template::evaluate(env, cond, &ctx) {
            Ok(v) if !v.is_true() => {
                return PrepareOutcome::Skip { reason: format!("`when: {cond}` is false") };
            }
            Ok(_) => {}
            Err(e) => {
                return PrepareOutcome::Error { message: format!("cannot evaluate `when: {cond}`: {e}") };
            }
        }
    }
    match &spec.map {
        None => PrepareOutcome::Run,
        Some(Value::Array(items)) => PrepareOutcome::Map { items: items.clone() },
        Some(Value::String(expr)) => match template::evaluate(env, expr, &ctx) {
            Ok(v) => match serde_json::to_value(&v) {
                Ok(Value::Array(items)) => PrepareOutcome::Map { items },
                Ok(other) => {
                    PrepareOutcome::Error { message: format!("`map: {expr}` gave {other}, not a list") }
                }
                Err(e) => PrepareOutcome::Error {
                    message: format!("`map: {expr}` gave a value that is not data: {e}"),
                },
            },
            Err(e) => PrepareOutcome::Error { message: format!("cannot evaluate `map: {expr}`: {e}") },
        },
        Some(other) => PrepareOutcome::Error { message: format!("`map` must be a list, not {other}") },
    }
}

/// Where an attempt's declared artifacts are found once it succeeds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ArtifactPlan {
    /// The folder their paths are relative to.
    pub folder: PathBuf,
    /// (name, path or glob): the kind's own, then the step's `artifacts:`.
    pub declared: Vec<(String, String)>,
    /// The step's `inputs:`, rendered, and the folder relative ones start from.
    pub inputs: Vec<String>,
    pub base: PathBuf,
    /// The artifacts of its upstream steps.
    pub consumed: Vec<ConsumedArtifact>,
    /// Upstream artifacts (digest, file name) the attempt reads from an encrypted store: each
    /// is decrypted to its [`Blobs::readable_path`] while the attempt runs.
    pub open: Vec<(String, String)>,
    /// Masks the values of the pipeline's secrets in what the attempt leaves (logs, outputs,
    /// messages, its cache key).
    pub redact: Redactor,
}

/// The pipeline's secrets that can be read now, by name, and why each other one cannot (a
/// sentence naming its reference, never a value).
fn resolve_secrets(plan: &Plan) -> (Map<String, Value>, std::collections::HashMap<String, String>) {
    let mut values = Map::new();
    let mut unreadable = std::collections::HashMap::new();
    for (name, reference) in &plan.spec.secrets {
        match Provider::parse(reference).and_then(|p| p.resolve()) {
            Ok(v) => {
                values.insert(name.clone(), Value::String(v));
            }
            Err(why) => {
                unreadable.insert(name.clone(), format!("secret `{name}` ({reference}): {why}"));
            }
        }
    }
    (values, unreadable)
}

/// Whether a template may read `secrets` (the exact check is `template::references`).
pub(crate) fn reads_secrets(text: &str) -> bool {
    template::is_template(text) && text.contains("secrets")
}

/// Builds the request of one attempt: the kind renders its part; the step's env, folder and
/// the attempt's files are common to every kind. `code` says where the run's copy of a code
/// file is. Also says where its artifacts will be.
pub(crate) fn request(
    view: &RunView,
    step: StepIx,
    item: Option<(u32, &Value)>,
    attempt: u32,
    files: AttemptFiles,
    code: &dyn Fn(&str) -> Result<PathBuf, String>,
) -> Result<(AttemptRequest, ArtifactPlan), String> {
    let ps = &view.plan.steps[step as usize];
    let env = template::environment();
    // Built only if one of the step's strings is a template.
    let ctx = std::cell::OnceCell::new();
    let text = |s: &str| {
        if template::is_template(s) {
            template::render(env, s, ctx.get_or_init(|| view.context(step, item.map(|(_, v)| v))))
        } else {
            Ok(s.to_string())
        }
    };
    let shell = |s: &str| {
        if template::is_template(s) {
            let ctx = ctx.get_or_init(|| view.context(step, item.map(|(_, v)| v)));
            template::render(template::shell_environment(), s, ctx)
        } else {
            Ok(s.to_string())
        }
    };
    let base_dir = &view.plan.base_dir;
    let workdir = match &ps.spec.workdir {
        Some(w) => Some(base_dir.join(text(w).map_err(|e| format!("workdir: {e}"))?)),
        None => None,
    };
    let upstream = || view.upstream(step);
    let opened = view.blobs.open_root();
    let cx = Render {
        text: &text,
        shell: &shell,
        run: RunFacts { id: view.id, pipeline: view.plan.name(), dag: view.plan.short_hash() },
        step: view.plan.id(step),
        item,
        attempt,
        params: view.params,
        upstream: &upstream,
        base_dir,
        run_dir: &files.run_dir,
        opened: opened.as_deref(),
        workdir: workdir.as_deref(),
        code,
    };
    let rendered = ps.kind.hooks().render(&cx)?;
    // The pipeline's secrets, read now; the step gets them only in its env.
    let (secrets, unreadable) = resolve_secrets(view.plan);
    let mut masked: Vec<String> = secrets.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    let mut env_vars = std::collections::BTreeMap::new();
    for (k, v) in &ps.spec.env {
        let value = if !view.plan.spec.secrets.is_empty() && reads_secrets(v) {
            for name in template::references(env, v, false).unwrap_or_default() {
                if let Some(why) = name.strip_prefix("secrets.").and_then(|n| unreadable.get(n)) {
                    return Err(format!("env `{k}`: {why}"));
                }
            }
            let mut cx = view.context_json(step, item.map(|(_, v)| v));
            cx["secrets"] = Value::Object(secrets.clone());
            let rendered = template::render(env, v, &JValue::from_serialize(cx));
            // The whole value is masked too: a secret transformed by a filter (`| upper`,
            // `| urlencode`, a slice) is not the secret's bytes, but it is in this value. A
            // short one ("1" from an `if`) is left, or every `1` of the log would be masked.
            if let Ok(r) = &rendered
                && r.len() >= 8
            {
                masked.push(r.clone());
            }
            rendered
        } else {
            text(v)
        };
        env_vars.insert(k.clone(), value.map_err(|e| format!("env `{k}`: {e}"))?);
    }
    let redact = Redactor::new(masked);
    let workdir = workdir.unwrap_or_else(|| base_dir.clone());
    let mut declared = rendered.artifacts;
    for (name, path) in &ps.spec.artifacts {
        declared.push((name.clone(), text(path).map_err(|e| format!("artifact `{name}`: {e}"))?));
    }
    let mut inputs = Vec::with_capacity(ps.spec.inputs.len());
    for (i, path) in ps.spec.inputs.iter().enumerate() {
        inputs.push(text(path).map_err(|e| format!("inputs/{i}: {e}"))?);
    }
    let mut consumed = Vec::new();
    let mut inputs_seen = rendered.inputs;
    let mount = ps.kind.hooks().input_folder().is_some();
    let blobs = &view.blobs;
    let mut open = Vec::new();
    // Its upstream steps, and any other step its templates read (an ancestor further up).
    let mut sources: Vec<StepIx> = view.plan.core[step as usize].upstream.clone();
    match &view.plan.reads[step as usize] {
        Some(reads) => {
            sources.extend(reads.iter().filter(|r| !sources.contains(r)).copied().collect::<Vec<_>>())
        }
        None => sources.extend(
            (0..view.plan.ids.len() as StepIx)
                .filter(|ix| {
                    *ix != step && view.machine.step_state(*ix).is_terminal() && !sources.contains(ix)
                })
                .collect::<Vec<_>>(),
        ),
    }
    for &up in &sources {
        let items = match (&view.plan.steps[up as usize].spec.map, view.outputs.get(&up)) {
            (Some(_), Some(Value::Array(list))) => list.len() as u32,
            _ => 1,
        };
        for i in 0..items {
            for a in view.artifacts.get(&(up, i)).into_iter().flatten() {
                let name = mounted_name(a);
                let source = blobs
                    .readable_path(&a.digest, &a.file)
                    .map_err(|e| format!("artifact `{}`: {e}", a.name))?;
                if mount && !inputs_seen.iter().any(|f| f.name == name) {
                    inputs_seen.push(sluice_worker::InputFile { source: source.clone(), name });
                    if blobs.encrypts() {
                        open.push((a.digest.clone(), a.file.clone()));
                    }
                } else if blobs.encrypts() && !open.iter().any(|(d, f)| *d == a.digest && *f == a.file) {
                    open.push((a.digest.clone(), a.file.clone()));
                }
                consumed.push(ConsumedArtifact {
                    digest: a.digest.clone(),
                    step: view.plan.id(up).to_string(),
                    name: a.name.clone(),
                });
            }
        }
    }
    let mut collect = ArtifactPlan {
        folder: rendered.work_folder.unwrap_or_else(|| workdir.clone()),
        declared,
        inputs,
        base: base_dir.clone(),
        consumed,
        open,
        redact,
    };
    let request = AttemptRequest {
        v: ATTEMPT_REQUEST_VERSION,
        id: AttemptId {
            run: view.id,
            step: view.plan.id(step).to_string(),
            item: item.map_or(0, |(i, _)| i),
            attempt,
        },
        spec: rendered.spec,
        env: env_vars,
        workdir,
        inputs: inputs_seen,
        files,
        // The driver places it (`attempt::placement`).
        placement: None,
    };
    // A process step reads an upstream artifact by the path its templates rendered: only
    // those it names are decrypted for it (a mounting kind gets them all, in its sandbox).
    if blobs.encrypts() && !mount {
        let said = serde_json::to_string(&request).unwrap_or_default();
        collect.open.retain(|(digest, file)| {
            blobs.readable_path(digest, file).is_ok_and(|p| {
                let quoted = serde_json::to_string(&p.display().to_string()).unwrap_or_default();
                said.contains(quoted.trim_matches('"'))
            })
        });
    }
    Ok((request, collect))
}
