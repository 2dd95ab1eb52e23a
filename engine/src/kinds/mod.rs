//! Step kinds: what a step runs. Each kind is one module here that owns all of it: its spec
//! block (what users write under its key), its checks beyond types (located under the block),
//! the strings it templates, the code files its DAG version covers, and how it renders its
//! part of an attempt request for its executor.
//!
//! [`step_kinds!`] is the one list of kinds. `spec::Step` gets a field per kind from it (so the
//! file format, its errors and its JSON Schema come from serde and schemars as before), and
//! [`StepKind`] a variant per kind, which is what a compiled plan holds for each step. Adding a
//! kind is a module here and a line in that list (docs/ARCHITECTURE.md, "How to add a step
//! kind").

pub mod approval;
pub mod container;
pub mod drift;
pub mod gate;
pub mod process;
pub mod promote;
pub mod register;
pub mod rollout;
pub mod train;
pub mod wasm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_worker::{ExecSpec, InputFile};

use crate::syntax::push_pointer;
use crate::template;

/// THE registry of step kinds: `key: Variant(block type) "what it does"`, one line per kind.
/// The key is the field users write in a step (its text is the field's description in the
/// JSON Schema); the order is the order of the spec's fields.
macro_rules! step_kinds {
    ($then:ident) => {
        $then! {
            process: Process($crate::kinds::process::ProcessBlock) "Run a local process.",
            container: Container($crate::kinds::container::ContainerBlock) "Run a Docker container.",
            wasm: Wasm($crate::kinds::wasm::WasmBlock) "Run a WASM plugin inside the engine.",
            train: Train($crate::kinds::train::TrainBlock) "Train a built-in model.",
            register: Register($crate::kinds::register::RegisterBlock) "Register a model version from an upstream step's artifacts.",
            gate: Gate($crate::kinds::gate::GateBlock) "Check a model version's metrics against thresholds and against an alias's version.",
            approval: Approval($crate::kinds::approval::ApprovalBlock) "Wait for a person to approve or reject.",
            promote: Promote($crate::kinds::promote::PromoteBlock) "Point a model's alias at a version.",
            drift: Drift($crate::kinds::drift::DriftBlock) "Compare a table with a reference, column by column, for drift.",
            rollout: Rollout($crate::kinds::rollout::RolloutBlock) "Roll a model version out onto an alias (canary or blue-green) under `sluice serve`.",
        }
    };
}
pub(crate) use step_kinds;

macro_rules! define_step_kind {
    ($($key:ident : $variant:ident($ty:ty) $doc:literal,)*) => {
        /// What a step runs: one variant per kind, holding the step's block.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum StepKind {
            $(#[doc = $doc] $variant(Box<$ty>),)*
        }

        /// The key of every kind, in the registry's order.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl StepKind {
            /// The key of the step's block (`process`, `wasm`, ...).
            pub fn key(&self) -> &'static str {
                match self {
                    $(StepKind::$variant(_) => stringify!($key),)*
                }
            }

            /// The kind's hooks.
            pub fn hooks(&self) -> &dyn Kind {
                match self {
                    $(StepKind::$variant(block) => block.as_ref(),)*
                }
            }
        }
    };
}
step_kinds!(define_step_kind);

/// What every step kind implements. Defaults fit a kind that runs a local program.
pub trait Kind: std::fmt::Debug + Send + Sync {
    /// Checks beyond types: report each problem at a field of the block.
    fn check(&self, cx: &mut Check<'_>);
    /// Every string of the block that may hold a template, with its field.
    fn templates<'a>(&'a self, out: &mut Templates<'a>);
    /// Files whose content is part of the DAG version, relative to the pipeline file's folder
    /// (a plugin's module): editing one makes a new version, and a run keeps its own copy.
    fn code(&self) -> Vec<&str> {
        Vec::new()
    }
    /// The longest an attempt runs when the step sets no `timeout`.
    fn default_timeout(&self) -> Option<Duration> {
        None
    }
    /// Why the step's own `workdir:` does not apply to this kind, if it does not.
    fn refuses_workdir(&self) -> Option<&'static str> {
        None
    }
    /// Whether an attempt gets a folder of its own (holding its outputs file) rather than
    /// files beside its siblings' (a container mounts the folder).
    fn attempt_folder(&self) -> bool {
        false
    }
    /// Whether attempts run on the Docker engine (a restarted engine reaps their leftovers).
    fn uses_docker(&self) -> bool {
        false
    }
    /// Where an attempt sees its input files, when they are mounted into a sandbox (a
    /// container's `/sluice/inputs`, a plugin's `/inputs`): the artifacts of its upstream
    /// steps are given there too, read-only, and templates read their paths there.
    fn input_folder(&self) -> Option<&'static str> {
        None
    }
    /// Whether its attempts can run as Slurm batch jobs (`slurm:`): a command, not work the
    /// engine does itself.
    fn runs_on_slurm(&self) -> bool {
        false
    }
    /// Whether the step waits for a decision instead of running (an `approval:` step): the
    /// core holds it in `waiting`, with no slot, until someone decides or its timeout passes.
    fn waits(&self) -> bool {
        false
    }
    /// The artifacts the kind declares itself (a `train:` step's `model` and `metadata`).
    fn artifact_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// The kind's part of one attempt's request.
    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String>;
}

/// A problem a kind found in its block, at a JSON pointer into the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

/// Where a kind's checks report what is wrong with its block.
pub struct Check<'a> {
    /// The step's id, named in every message.
    pub step: &'a str,
    /// The folder relative paths of the file resolve against.
    pub base_dir: &'a Path,
    block: String,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Check<'a> {
    /// Checks of the block `key` of step `step`, located under `/steps/<step>/<key>`.
    pub fn new(step: &'a str, key: &str, base_dir: &'a Path, problems: &'a mut Vec<Problem>) -> Self {
        let block = push_pointer(&push_pointer("/steps", step), key);
        Check { step, base_dir, block, problems }
    }

    /// A problem with `field` of the block (a pointer below it: `image`, `command/0`; empty
    /// for the block itself).
    pub fn at(&mut self, field: &str, message: impl std::fmt::Display) {
        let pointer = if field.is_empty() { self.block.clone() } else { format!("{}/{field}", self.block) };
        self.problems.push(Problem { pointer, message: format!("step `{}`: {message}", self.step) });
    }
}

/// The templated strings of a block, each with its pointer. Strings without template syntax
/// are left out (most are plain).
pub struct Templates<'a> {
    block: String,
    found: Vec<(String, &'a str)>,
}

impl<'a> Templates<'a> {
    pub fn new(step: &str, key: &str) -> Self {
        Templates { block: push_pointer(&push_pointer("/steps", step), key), found: Vec::new() }
    }

    /// One string, at `field` of the block.
    pub fn text(&mut self, field: &str, text: &'a str) {
        if template::is_template(text) {
            self.found.push((format!("{}/{field}", self.block), text));
        }
    }

    /// Every element of a list, at `field/0`, `field/1`, ...
    pub fn list(&mut self, field: &str, items: &'a [String]) {
        for (i, item) in items.iter().enumerate() {
            if template::is_template(item) {
                self.found.push((format!("{}/{field}/{i}", self.block), item));
            }
        }
    }

    /// Every string anywhere in a JSON value (a plugin's `config`).
    pub fn json(&mut self, field: &str, value: &'a Value) {
        let mut stack = vec![(format!("{}/{field}", self.block), value)];
        while let Some((pointer, v)) = stack.pop() {
            match v {
                Value::String(s) if template::is_template(s) => self.found.push((pointer, s)),
                Value::Array(items) => stack.extend(
                    items.iter().enumerate().map(|(i, x)| (push_pointer(&pointer, &i.to_string()), x)),
                ),
                Value::Object(map) => stack.extend(map.iter().map(|(k, x)| (push_pointer(&pointer, k), x))),
                _ => {}
            }
        }
    }

    /// What was found: (pointer, template).
    pub fn into_found(self) -> Vec<(String, &'a str)> {
        self.found
    }
}

/// The run an attempt belongs to, as the kinds see it.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub id: u64,
    pub pipeline: &'a str,
    /// The DAG version, shortened.
    pub dag: &'a str,
}

/// What a kind renders an attempt from.
pub struct Render<'a> {
    /// Renders a string of the block as a template against the attempt's context (a plain
    /// string comes back as it is).
    pub text: &'a dyn Fn(&str) -> Result<String, String>,
    /// Renders a shell script: like `text`, but every value is written as one quoted shell
    /// word (see [`crate::template::shell_environment`]).
    pub shell: &'a dyn Fn(&str) -> Result<String, String>,
    pub run: RunFacts<'a>,
    pub step: &'a str,
    /// The item of a mapped step: its index and value.
    pub item: Option<(u32, &'a Value)>,
    pub attempt: u32,
    pub params: &'a Map<String, Value>,
    /// The outputs of the step's upstream steps, by id (built on demand).
    pub upstream: &'a dyn Fn() -> Map<String, Value>,
    /// The folder relative paths of the pipeline resolve against.
    pub base_dir: &'a Path,
    /// The folder the run's steps share.
    pub run_dir: &'a Path,
    /// In an encrypted data folder, where upstream artifacts' plaintext copies will be: made
    /// just before the attempt starts, so not there yet while it is rendered.
    pub opened: Option<&'a Path>,
    /// The step's own `workdir:`, rendered and resolved, when it sets one.
    pub workdir: Option<&'a Path>,
    /// Where the run's copy of one of the kind's code files is.
    pub code: &'a dyn Fn(&str) -> Result<PathBuf, String>,
}

impl Render<'_> {
    /// A templated path of a file the attempt reads: rendered, resolved against the pipeline's
    /// folder, and required to exist.
    pub fn file(&self, text: &str) -> Result<PathBuf, String> {
        let source = self.base_dir.join((self.text)(text)?);
        let source = std::path::absolute(&source).unwrap_or(source);
        if !source.is_file() && !self.opened.is_some_and(|o| source.starts_with(o)) {
            return Err(format!("the input file {} does not exist", source.display()));
        }
        Ok(source)
    }

    /// A declared input file, named by its file name.
    pub fn input(&self, text: &str) -> Result<InputFile, String> {
        let source = self.file(text)?;
        let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(InputFile { source, name })
    }

    /// Every string inside a JSON value rendered as a template.
    pub fn json(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String((self.text)(s)?),
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.json(i)).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => Value::Object(
                map.iter().map(|(k, i)| Ok((k.clone(), self.json(i)?))).collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// A kind's part of an attempt request.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub spec: ExecSpec,
    /// The files the attempt declares it reads.
    pub inputs: Vec<InputFile>,
    /// The host folder the step's artifact paths are relative to, when it is not the
    /// request's `workdir` (a container's or plugin's mounted folder).
    pub work_folder: Option<PathBuf>,
    /// The artifacts the kind declares itself: (name, path in the work folder).
    pub artifacts: Vec<(String, String)>,
}

impl From<ExecSpec> for Rendered {
    fn from(spec: ExecSpec) -> Self {
        Rendered { spec, inputs: Vec::new(), work_folder: None, artifacts: Vec::new() }
    }
}

#[cfg(test)]
mod tests;
