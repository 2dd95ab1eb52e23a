//! The pipeline spec: the types a `dags/*.yaml` or `.json` file deserializes into.
//!
//! The same types serve YAML and JSON, generate the JSON Schema (`sluice schema`) and define
//! the DAG's content hash. Validation beyond types lives in `compile`.

mod params;
pub mod source;
mod triggers;
mod units;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use params::{ParamSpec, ParamType};
pub use triggers::{AlertMatch, AlertStatus, Catchup, EventTrigger, Overlap, ScheduleSpec, WebhookMatch};
pub use units::{ByteSize, DurationSpec};

/// A pipeline: one DAG file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// The pipeline's name; runs are listed under it.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed parameters, given with `--param name=value` or taken from their defaults.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, ParamSpec>,
    /// Settings every step inherits unless it sets its own.
    #[serde(default, skip_serializing_if = "StepDefaults::is_empty")]
    pub defaults: StepDefaults,
    /// The most attempts of this pipeline's run that may execute at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// A cron schedule that starts runs when `sluice serve` runs the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Events that start runs when `sluice serve` runs the pipeline.
    #[serde(default, rename = "on", skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<EventTrigger>,
    /// The steps, by id.
    pub steps: IndexMap<String, Step>,
}

/// When a step runs, given how its upstream steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded (a skipped upstream skips this step).
    #[default]
    AllSuccess,
    /// Every upstream finished, however it ended.
    AllDone,
    /// At least one upstream succeeded (runs as soon as one does).
    OneSuccess,
    /// At least one upstream failed (runs as soon as one does).
    OneFailed,
    /// Every upstream finished and none failed (skipped ones are fine).
    NoneFailed,
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    #[default]
    Fixed,
    Exponential,
}

/// Retry policy. `retries: 3` is short for `retries: { count: 3 }`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// How many times a failed attempt is tried again.
    pub count: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// The first delay (default 1s).
    #[serde(default, alias = "initial", skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationSpec>,
    /// The longest delay exponential backoff may reach (default 10m).
    #[serde(default, alias = "max", skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<DurationSpec>,
    /// Randomize each delay down by up to this fraction (0 to 1), to spread retries out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetriesMap {
    count: u32,
    #[serde(default)]
    backoff: Backoff,
    #[serde(default, alias = "initial")]
    delay: Option<DurationSpec>,
    #[serde(default, alias = "max")]
    max_delay: Option<DurationSpec>,
    #[serde(default)]
    jitter: Option<f64>,
}

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Retries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a retry count or a map with `count`, `backoff`, `delay`, `max_delay`, `jitter`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Retries, E> {
                let count = u32::try_from(v).map_err(|_| E::custom("the retry count is too large"))?;
                Ok(Retries { count, backoff: Backoff::Fixed, delay: None, max_delay: None, jitter: None })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Retries, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("the retry count cannot be negative")),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Retries, A::Error> {
                let m = RetriesMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Retries {
                    count: m.count,
                    backoff: m.backoff,
                    delay: m.delay,
                    max_delay: m.max_delay,
                    jitter: m.jitter,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// What a step asks of the resource pools while it runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU slots (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory, as bytes or with a unit: `512Mi`, `2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// GPUs (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

/// Settings shared by every step of a pipeline; a step's own settings win, `env` is merged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
}

impl StepDefaults {
    fn is_empty(&self) -> bool {
        self == &StepDefaults::default()
    }
}

/// A `process:` executor block: a command as argv, or a shell script run by `sh -c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessBlock {
    /// The program and its arguments (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A script for `sh -c` (templated); use instead of `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

/// When a container step's image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Never,
    /// Pull only when the image is missing (the default).
    #[default]
    IfNotPresent,
    Always,
}

/// A `container:` executor block: run the step in a Docker container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerBlock {
    /// The image, as `name:tag` (templated).
    pub image: String,
    /// Arguments; the image's `CMD` when left out (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's `ENTRYPOINT` (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `user`, `uid` or `uid:gid` to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The working folder inside the container (default `/sluice/run`, the run's shared folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// CPU limit in cores, fractions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit: `256Mi`, `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Network mode (default `none`: no network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default)]
    pub pull: PullPolicy,
    /// Run an init process as PID 1 so that the command gets signals (default true); without
    /// it a command that ignores SIGTERM as PID 1 is only stopped by SIGKILL after the grace.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub init: bool,
    /// Files the step reads, relative to the pipeline file's folder (templated); each is
    /// mounted read-only at `/sluice/inputs/<file name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
}

/// A `wasm:` executor block: run a WASI preview 1 plugin inside the engine, sandboxed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmBlock {
    /// The plugin: a `.wasm` binary or `.wat` text file, relative to the pipeline file's folder.
    pub module: String,
    /// Any JSON, handed to the plugin as `config` on stdin (strings templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Files the plugin reads, relative to the pipeline file's folder (templated); each is
    /// seen read-only at `/inputs/<file name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// The cap on the plugin's linear memory (default `256Mi`, at most `4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteSize>,
}

/// A built-in trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainModel {
    /// Binary logistic regression.
    Logistic,
    /// A multi-layer perceptron: ReLU hidden layers, softmax output.
    Mlp,
}

/// The optimizer of a `train:` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainOptimizer {
    #[default]
    Adam,
    /// Mini-batch SGD with momentum.
    Sgd,
}

/// Where a `train:` step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// A GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// A `train:` executor block: train a built-in model on a CSV table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainBlock {
    pub model: TrainModel,
    /// The training table, CSV with a header (templated; relative to the pipeline file's folder).
    pub data: String,
    /// The label column.
    pub label: String,
    /// Feature columns (default: every column but the label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// A separate validation table (templated); without it `validation` of the rows are held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_data: Option<String>,
    /// The share of rows held out for validation (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<f64>,
    /// Hidden layer sizes of an `mlp` (default [64]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub optimizer: TrainOptimizer,
    /// SGD momentum (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f32>,
    /// L2 weight penalty (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<f32>,
    /// Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub device: TrainDevice,
    /// Where the model goes, without extension, relative to the run's shared folder (default
    /// the step id): `<output>.safetensors` and `<output>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One step of the DAG. Exactly one executor block (`process:`, `container:`, `wasm:`,
/// `train:`) says what it runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run a local process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessBlock>,
    /// Run a Docker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerBlock>,
    /// Run a WASM plugin inside the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmBlock>,
    /// Train a built-in model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainBlock>,
    /// The steps this one runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
    /// A Jinja expression on `params` and upstream `steps`; the step is skipped when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Fan out: a list, or an expression giving one (`params.regions`,
    /// `steps.a.outputs.files`); one attempt per item, `{{ item }}` in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// The longest one attempt may run, as `30s`, `5m`, `1h 30m` (a `wasm:` step that sets
    /// none gets 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Environment variables (values templated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The working folder, relative to the pipeline file's folder (templated). A `wasm:` plugin
    /// sees it as `/work` (default: the run's shared folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Higher runs first when steps wait for slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The output names this step promises to write to `SLUICE_OUTPUTS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// The executor blocks a step may carry, by spec key. Adding an executor adds its key here.
pub const EXECUTOR_KEYS: &[&str] = &["process", "container", "wasm", "train"];

impl Step {
    /// The executor blocks that are set, by key.
    pub fn executor_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.process.is_some() {
            keys.push("process");
        }
        if self.container.is_some() {
            keys.push("container");
        }
        if self.wasm.is_some() {
            keys.push("wasm");
        }
        if self.train.is_some() {
            keys.push("train");
        }
        keys
    }
}

/// The JSON Schema of a pipeline file, for editors.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Pipeline)).unwrap_or(Value::Null)
}
