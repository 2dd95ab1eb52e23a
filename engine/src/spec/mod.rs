//! The pipeline spec: the types a `dags/*.yaml` or `.json` file deserializes into.
//!
//! The same types serve YAML and JSON, generate the JSON Schema (`sluice schema`) and define
//! the DAG's content hash. Validation beyond types lives in `compile`.

mod params;
mod triggers;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::{Kind, StepKind};
use crate::syntax::{ByteSize, DurationSpec};

pub use params::{ParamSpec, ParamType};
pub use triggers::{
    AlertMatch, AlertStatus, Catchup, DriftMatch, EventTrigger, Overlap, RolloutEnd, RolloutMatch,
    ScheduleSpec, WebhookMatch,
};

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
    /// Live drift monitors of served models, run by `sluice serve`: each compares the window
    /// of a model's served inputs with the training data its version was registered with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitor: Vec<MonitorSpec>,
    /// Secrets by name, each a provider reference: `env:VARIABLE` (the engine's environment)
    /// or `file:/absolute/path`. Steps read them only in `env:` values
    /// (`{{ secrets.name }}`); their values are never stored and are masked in logs and
    /// outputs.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, String>,
    /// The steps, by id.
    pub steps: IndexMap<String, Step>,
}

/// The most rows a monitor's window holds: what serving keeps of each version.
pub const MAX_WINDOW: usize = 5_000;

/// A live drift monitor of a served model. Drift is an event (`sluice.drift`) that
/// `on: - drift: {model: ...}` matches (with the inbox, cooldown and dedup of alerts), and,
/// with `alertmanager`, an alert posted to that Alertmanager (`SluiceModelDrift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub model: String,
    /// The alias whose version is watched (default `production`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The most recent served rows compared (default 500; 20 to 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// How often (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    #[serde(default)]
    pub method: crate::drift::Method,
    /// Overrides the method's threshold (see the `drift:` step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The share of drifted features from which the model's inputs drift (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_share: Option<f64>,
    /// While the drift lasts, it is said again after this long (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationSpec>,
    /// An Alertmanager to post the drift to as an alert (`http://host:9093`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
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
#[schemars(transform = count_or_policy)]
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

/// The schema of [`Retries`] says what its deserializer takes: a count, or the map.
fn count_or_policy(schema: &mut schemars::Schema) {
    let mut policy = std::mem::take(schema);
    let description = policy.remove("description");
    let mut both = schemars::json_schema!({
        "anyOf": [{ "type": "integer", "minimum": 0, "maximum": u32::MAX }, policy]
    });
    if let Some(d) = description {
        both.insert("description".into(), d);
    }
    *schema = both;
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

/// Whether a step's result may be reused from an earlier run whose attempt had the same key
/// (see docs/artifacts.md): `cache: true`, `cache: false`, or `cache: { ttl: 7d }` (reuse only
/// results younger than that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = flag_or_policy)]
pub struct CachePolicy {
    /// Whether results are reused (and stored for reuse).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The oldest a result may be to be reused; without one, any age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationSpec>,
}

fn yes() -> bool {
    true
}

/// The schema of [`CachePolicy`] says what its deserializer takes: a flag, or the map.
fn flag_or_policy(schema: &mut schemars::Schema) {
    let mut policy = std::mem::take(schema);
    let description = policy.remove("description");
    let mut both = schemars::json_schema!({ "anyOf": [{ "type": "boolean" }, policy] });
    if let Some(d) = description {
        both.insert("description".into(), d);
    }
    *schema = both;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheMap {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    ttl: Option<DurationSpec>,
}

impl<'de> Deserialize<'de> for CachePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CachePolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false`, or a map with `ttl` (and `enabled`)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<CachePolicy, E> {
                Ok(CachePolicy { enabled: v, ttl: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<CachePolicy, A::Error> {
                let m = CacheMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CachePolicy { enabled: m.enabled, ttl: m.ttl })
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

/// Where a step runs on a Slurm cluster: as a batch job, with these `sbatch` options. Its
/// `resources:` become `--cpus-per-task`, `--mem` and `--gres=gpu:N` (and take nothing from
/// the engine's own pools); its `timeout:` becomes the job's time limit unless `time:` says.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlurmBlock {
    /// `--partition` (default: the engine's `--slurm PARTITION`, else the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--time`, as `30m`, `2h` (whole minutes, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DurationSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// `--constraint`: node features, as Slurm writes them (`a100&ib`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// `--gres`, as Slurm writes it (`gpu:a100:2`); by default `resources: {gpu: N}` gives
    /// `gpu:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// More `sbatch` options, each one argument (`--exclusive`, `--nodelist=n1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Runs every step that can (`process:`) on Slurm, unless it says `slurm:` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmBlock>,
}

impl StepDefaults {
    fn is_empty(&self) -> bool {
        self == &StepDefaults::default()
    }
}

macro_rules! define_step {
    ($($key:ident : $variant:ident($ty:ty) $doc:literal,)*) => {
        /// One step of the DAG. Exactly one kind block (`process:`, `container:`, `wasm:`,
        /// `train:`; `kinds::step_kinds!` lists them) says what it runs.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct Step {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub description: Option<String>,
            // Boxed: a step holds one block, so a step is no bigger than its common settings
            // plus a pointer per kind (a plan of 10,000 steps holds 20,000 of them).
            $(
                #[doc = $doc]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<Box<$ty>>,
            )*
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
            /// The longest one attempt may run, as `30s`, `5m`, `1h 30m` (a `wasm:` step that
            /// sets none gets 10m).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timeout: Option<DurationSpec>,
            /// Environment variables (values templated).
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub env: BTreeMap<String, String>,
            /// The working folder, relative to the pipeline file's folder (templated). A `wasm:`
            /// plugin sees it as `/work` (default: the run's shared folder).
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
            /// Files the step produces, by name: paths relative to its work folder (globs
            /// allowed), stored by content once it succeeds; downstream templates read
            /// `steps.<id>.artifacts.<name>.path`, `.digest`, `.size`.
            #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
            pub artifacts: IndexMap<String, String>,
            /// Datasets the step reads: files or folders (globs allowed, templated; relative
            /// ones against the pipeline file's folder), hashed when an attempt starts and
            /// recorded as the dataset versions it consumed.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub inputs: Vec<String>,
            /// Reuse the result of an earlier attempt with the same key (kind, rendered
            /// request, code, inputs and upstream artifacts by content, referenced values):
            /// `true`, or `{ ttl: 7d }`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cache: Option<CachePolicy>,
            /// Run as a batch job on a Slurm cluster (`process:` steps), with these options.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub slurm: Option<SlurmBlock>,
        }

        impl Step {
            /// The kind blocks that are set, with their keys.
            pub fn blocks(&self) -> Vec<(&'static str, &dyn Kind)> {
                let mut found: Vec<(&'static str, &dyn Kind)> = Vec::new();
                $(
                    if let Some(block) = &self.$key {
                        found.push((stringify!($key), block.as_ref()));
                    }
                )*
                found
            }

            /// Takes the kind blocks out of the step.
            pub fn take_kinds(&mut self) -> Vec<StepKind> {
                let mut found = Vec::new();
                $(
                    if let Some(block) = self.$key.take() {
                        found.push(StepKind::$variant(block));
                    }
                )*
                found
            }
        }
    };
}
crate::kinds::step_kinds!(define_step);

/// The JSON Schema of a pipeline file, for editors.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Pipeline)).unwrap_or(Value::Null)
}
