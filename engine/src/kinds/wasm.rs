//! `wasm:`: run a WASI preview 1 plugin inside the engine, sandboxed: its input document on
//! stdin (config, params, upstream outputs, inputs), its result document on stdout. The module
//! is code the DAG version covers: a run keeps its own copy of it.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_worker::{
    DEFAULT_MAX_MEMORY, ExecSpec, MAX_MEMORY_LIMIT, WASM_INPUTS_DIR, WASM_WORK_DIR, WasmSpec,
};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::syntax::ByteSize;
use crate::template;

/// The execution limit of a `wasm:` step that sets no `timeout`: a plugin runs inside the
/// engine, so none runs without a deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A `wasm:` block: run a WASI preview 1 plugin inside the engine, sandboxed.
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

impl Kind for WasmBlock {
    fn check(&self, cx: &mut Check<'_>) {
        let module = Path::new(&self.module);
        if self.module.trim().is_empty() {
            cx.at("module", "`module` is empty");
        } else if !module.extension().is_some_and(|e| e == "wasm" || e == "wat") {
            cx.at("module", format!("the module `{}` must be a `.wasm` or `.wat` file", self.module));
        } else if !cx.base_dir.join(module).is_file() {
            cx.at(
                "module",
                format!(
                    "the module `{}` does not exist (paths are relative to the pipeline file's folder)",
                    self.module
                ),
            );
        }
        if let Some(m) = self.max_memory
            && !(64 * 1024..=MAX_MEMORY_LIMIT).contains(&m.0)
        {
            cx.at(
                "max_memory",
                format!("`max_memory` must be between 64Ki (one page) and 4Gi, not {} bytes", m.0),
            );
        }
        let mut names = HashSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let name = Path::new(input).file_name().map(|n| n.to_string_lossy().into_owned());
            if !template::is_template(input)
                && let Some(name) = name
                && !names.insert(name.clone())
            {
                cx.at(
                    &format!("inputs/{i}"),
                    format!("two inputs are named `{name}`; the plugin sees them by file name"),
                );
            }
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.list("inputs", &self.inputs);
        if let Some(config) = &self.config {
            out.json("config", config);
        }
    }

    fn code(&self) -> Vec<&str> {
        vec![&self.module]
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(DEFAULT_TIMEOUT)
    }

    fn input_folder(&self) -> Option<&'static str> {
        Some(WASM_INPUTS_DIR)
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let inputs = self.inputs.iter().map(|i| cx.input(i)).collect::<Result<Vec<_>, _>>()?;
        let shown: serde_json::Map<String, Value> =
            inputs.iter().map(|i| (i.name.clone(), json!(format!("{WASM_INPUTS_DIR}/{}", i.name)))).collect();
        let config = match &self.config {
            Some(c) => cx.json(c)?,
            None => json!({}),
        };
        // `config` first: the simplest plugins (hand-written text format) find their settings
        // by scanning the document's start.
        let mut input = json!({ "config": config, "params": cx.params });
        input["upstream"] = Value::Object((cx.upstream)());
        input["inputs"] = Value::Object(shown);
        if let Some((_, item)) = cx.item {
            input["item"] = item.clone();
        }
        input["run"] = json!({ "id": cx.run.id, "name": cx.run.pipeline, "dag": cx.run.dag });
        input["step"] = json!(cx.step);
        input["attempt"] = json!(cx.attempt);
        input["work_dir"] = json!(WASM_WORK_DIR);
        let spec = WasmSpec {
            module: (cx.code)(&self.module)?,
            input,
            // The plugin's `/work`: the step's folder, else the run's.
            work_dir: cx.workdir.unwrap_or(cx.run_dir).to_path_buf(),
            max_memory: self.max_memory.map_or(DEFAULT_MAX_MEMORY, |m| m.0),
        };
        let work_folder = Some(spec.work_dir.clone());
        Ok(Rendered { spec: ExecSpec::Wasm(spec), inputs, work_folder, artifacts: Vec::new() })
    }
}
