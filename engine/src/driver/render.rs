//! Turning a step's spec into an executor request at run time: templates, paths, env.

use std::path::{Path, PathBuf};

use minijinja::Value as JValue;
use serde_json::{Map, Value, json};
use sluice_worker::{
    AttemptId, AttemptRequest, Bind, CONTAINER_INPUTS_DIR, CONTAINER_RUN_DIR, ContainerSpec,
    DEFAULT_MAX_MEMORY, ExecSpec, ProcessSpec, PullPolicy, TrainSpec, WASM_INPUTS_DIR, WASM_WORK_DIR,
    WasmInput, WasmSpec,
};

use crate::compile::Plan;
use crate::scheduler::{PrepareOutcome, RunMachine, StepIx};
use crate::template;

/// What templates can see of a run.
pub(crate) struct RunView<'a> {
    pub id: u64,
    pub plan: &'a Plan,
    pub params: &'a Map<String, Value>,
    /// Outputs of finished steps: an object, or a list of objects for a mapped step.
    pub outputs: &'a std::collections::HashMap<StepIx, Value>,
    pub machine: &'a RunMachine,
    /// Why the run started (`manual`, `cron`, `event`, ...) and the details.
    pub trigger: &'a str,
    pub cause: Option<&'a Value>,
}

impl RunView<'_> {
    fn context(&self, step: StepIx, item: Option<&Value>) -> JValue {
        let mut steps = Map::new();
        let mut add = |ix: StepIx| {
            let state = self.machine.step_state(ix);
            if state.is_terminal() {
                let outputs = self.outputs.get(&ix).cloned().unwrap_or_else(|| json!({}));
                steps.insert(self.plan.id(ix).to_string(), json!({ "outputs": outputs, "state": state }));
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
        JValue::from_serialize(&ctx)
    }
}

/// Evaluates `when:` and `map:` of a step.
pub(crate) fn prepare(view: &RunView, step: StepIx) -> PrepareOutcome {
    let spec = &view.plan.steps[step as usize];
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

/// Where an attempt's files go on the host.
pub(crate) struct AttemptPaths {
    /// The run's shared folder (`SLUICE_RUN_DIR`).
    pub run_dir: PathBuf,
    /// Where the step writes its outputs (`SLUICE_OUTPUTS`).
    pub outputs_file: PathBuf,
    /// Where a plugin's declared inputs are gathered.
    pub inputs_dir: PathBuf,
}

/// Builds the executor request for one attempt.
pub(crate) fn request(
    view: &RunView,
    step: StepIx,
    item: u32,
    attempt: u32,
    item_value: Option<&Value>,
    paths: AttemptPaths,
) -> Result<AttemptRequest, String> {
    let spec = &view.plan.steps[step as usize];
    let env = template::environment();
    // Built only if one of the step's strings is a template.
    let ctx = std::cell::OnceCell::new();
    let r = |s: &str| {
        if template::is_template(s) {
            template::render(env, s, ctx.get_or_init(|| view.context(step, item_value)))
        } else {
            Ok(s.to_string())
        }
    };
    let exec = if let Some(p) = &spec.process {
        let argv = match (&p.command, &p.shell) {
            (Some(cmd), _) => cmd.iter().map(|a| r(a)).collect::<Result<Vec<_>, _>>()?,
            (None, Some(script)) => vec!["sh".into(), "-c".into(), r(script)?],
            (None, None) => return Err("the step has no command".into()),
        };
        ExecSpec::Process(ProcessSpec { argv })
    } else if let Some(c) = &spec.container {
        let all = |list: &[String]| list.iter().map(|a| r(a)).collect::<Result<Vec<_>, _>>();
        let mut inputs = Vec::with_capacity(c.inputs.len());
        for input in &c.inputs {
            let source = existing_file(&view.plan.base_dir, &r(input)?)?;
            let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            inputs.push(Bind { source, target: format!("{CONTAINER_INPUTS_DIR}/{name}"), read_only: true });
        }
        ExecSpec::Container(ContainerSpec {
            image: r(&c.image)?,
            command: all(&c.command)?,
            entrypoint: c.entrypoint.as_deref().map(all).transpose()?,
            user: c.user.clone(),
            workdir: c.workdir.clone().unwrap_or_else(|| CONTAINER_RUN_DIR.to_string()),
            cpus: c.cpus,
            memory: c.memory.map(|m| m.0),
            network: c.network.clone().unwrap_or_else(|| "none".to_string()),
            pull: match c.pull {
                crate::spec::PullPolicy::Never => PullPolicy::Never,
                crate::spec::PullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
                crate::spec::PullPolicy::Always => PullPolicy::Always,
            },
            init: c.init,
            inputs,
        })
    } else if let Some(w) = &spec.wasm {
        let mut inputs = Vec::with_capacity(w.inputs.len());
        let mut shown = Map::new();
        for input in &w.inputs {
            let source = existing_file(&view.plan.base_dir, &r(input)?)?;
            let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            shown.insert(name.clone(), json!(format!("{WASM_INPUTS_DIR}/{name}")));
            inputs.push(WasmInput { source, name });
        }
        let work_dir = match &spec.workdir {
            Some(d) => view.plan.base_dir.join(r(d).map_err(|e| format!("workdir: {e}"))?),
            None => paths.run_dir.clone(),
        };
        let config = match &w.config {
            Some(c) => render_strings(c, &r)?,
            None => json!({}),
        };
        // `config` first: the simplest plugins (hand-written text format) find their settings
        // by scanning the document's start.
        let mut input = json!({ "config": config, "params": view.params });
        input["upstream"] = Value::Object(
            view.plan.core[step as usize]
                .upstream
                .iter()
                .map(|ix| {
                    let outputs = view.outputs.get(ix).cloned().unwrap_or_else(|| json!({}));
                    (view.plan.id(*ix).to_string(), outputs)
                })
                .collect(),
        );
        input["inputs"] = Value::Object(shown);
        if let Some(item) = item_value {
            input["item"] = item.clone();
        }
        input["run"] = json!({ "id": view.id, "name": view.plan.name(), "dag": view.plan.short_hash() });
        input["step"] = json!(view.plan.id(step));
        input["attempt"] = json!(attempt);
        input["work_dir"] = json!(WASM_WORK_DIR);
        let module = view.plan.base_dir.join(&w.module);
        ExecSpec::Wasm(WasmSpec {
            module: std::path::absolute(&module).unwrap_or(module),
            input,
            work_dir,
            inputs,
            inputs_dir: paths.inputs_dir.clone(),
            max_memory: w.max_memory.map_or(DEFAULT_MAX_MEMORY, |m| m.0),
        })
    } else if let Some(t) = &spec.train {
        use crate::spec::{TrainDevice, TrainModel, TrainOptimizer};
        use sluice_worker::{Device, ModelKind, OptimizerKind};
        let output = match &t.output {
            Some(o) => paths.run_dir.join(r(o)?),
            None if item_value.is_some() => paths.run_dir.join(format!("{}-{item}", view.plan.id(step))),
            None => paths.run_dir.join(view.plan.id(step)),
        };
        ExecSpec::Train(TrainSpec {
            data: existing_file(&view.plan.base_dir, &r(&t.data)?)?,
            validation_data: t
                .validation_data
                .as_deref()
                .map(|v| existing_file(&view.plan.base_dir, &r(v)?))
                .transpose()?,
            validation: t.validation.unwrap_or(0.2),
            label: t.label.clone(),
            features: t.features.clone(),
            model: match t.model {
                TrainModel::Logistic => ModelKind::Logistic,
                TrainModel::Mlp => {
                    ModelKind::Mlp { hidden: if t.hidden.is_empty() { vec![64] } else { t.hidden.clone() } }
                }
            },
            optimizer: match t.optimizer {
                TrainOptimizer::Adam => OptimizerKind::Adam,
                TrainOptimizer::Sgd => OptimizerKind::Sgd { momentum: t.momentum.unwrap_or(0.9) },
            },
            epochs: t.epochs.unwrap_or(10) as usize,
            batch_size: t.batch_size.unwrap_or(64) as usize,
            learning_rate: t.learning_rate.unwrap_or(0.01),
            l2: t.l2.unwrap_or(0.0),
            seed: t.seed.unwrap_or(0),
            device: match t.device {
                TrainDevice::Auto => Device::Auto,
                TrainDevice::Cpu => Device::Cpu,
                TrainDevice::Gpu => Device::Gpu,
            },
            output,
        })
    } else {
        return Err("the step has no executor block".into());
    };
    let mut env_vars = std::collections::BTreeMap::new();
    for (k, v) in &spec.env {
        env_vars.insert(k.clone(), r(v).map_err(|e| format!("env `{k}`: {e}"))?);
    }
    // A plugin sees the step's env and nothing more; host paths mean nothing inside it.
    if spec.wasm.is_none() {
        env_vars.insert("SLUICE_RUN_DIR".into(), paths.run_dir.display().to_string());
    }
    let workdir = match &spec.workdir {
        Some(w) => view.plan.base_dir.join(r(w).map_err(|e| format!("workdir: {e}"))?),
        None => view.plan.base_dir.clone(),
    };
    Ok(AttemptRequest {
        id: AttemptId { run: view.id, step: view.plan.id(step).to_string(), item, attempt },
        spec: exec,
        env: env_vars,
        workdir,
        outputs_file: paths.outputs_file,
    })
}

/// A declared input file, as an absolute path; it must exist.
fn existing_file(base: &Path, rendered: &str) -> Result<PathBuf, String> {
    let source = base.join(rendered);
    let source = std::path::absolute(&source).unwrap_or(source);
    if !source.is_file() {
        return Err(format!("the input file {} does not exist", source.display()));
    }
    Ok(source)
}

/// A JSON value with every string in it rendered as a template.
fn render_strings(v: &Value, r: &impl Fn(&str) -> Result<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(r(s)?),
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| render_strings(i, r)).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, i)| Ok((k.clone(), render_strings(i, r)?))).collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}
