//! Compiling a spec file into a [`Plan`]: parse, deserialize, check, build the DAG.
//!
//! Compilation reports **every** error at once, each with file, line and column, before any
//! run starts. A plan is immutable and identified by the hash of its normalized content.

mod checks;
mod diagnostic;
mod export;
mod structure;
mod triggers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use diagnostic::Diagnostic;
pub use export::{to_dot, to_mermaid};
pub use triggers::{MAX_CATCHUP, valid_source};

use crate::scheduler::{CoreStep, ResourceRequest, RetryPolicy, StepIx};
use crate::spec::source::{self, Format};
use crate::spec::{Pipeline, Step};

/// A compiled pipeline, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub spec: Pipeline,
    /// sha256 of the normalized spec: the DAG version.
    pub hash: String,
    /// The file it came from, and the folder relative paths resolve against.
    pub path: PathBuf,
    pub base_dir: PathBuf,
    /// The file's text, stored with the DAG version.
    pub source: String,
    /// Step ids in plan order (the file's order).
    pub ids: Vec<String>,
    pub index: HashMap<String, StepIx>,
    /// The effective spec of each step (defaults applied).
    pub steps: Vec<Step>,
    pub core: Arc<Vec<CoreStep>>,
    /// The steps whose outputs each step's templates read (`None`: all of them).
    pub reads: Vec<Option<Vec<StepIx>>>,
}

impl Plan {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
    pub fn step_ix(&self, id: &str) -> Option<StepIx> {
        self.index.get(id).copied()
    }
    pub fn id(&self, ix: StepIx) -> &str {
        &self.ids[ix as usize]
    }
}

/// Reads and compiles a pipeline file.
pub fn compile_file(path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Diagnostic::new(path, Default::default(), format!("cannot read the file: {e}"))])?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    compile_source(path, &base, &text, Format::from_path(path))
}

/// Compiles pipeline text; `path` names it in diagnostics.
pub fn compile_source(
    path: &Path,
    base_dir: &Path,
    text: &str,
    format: Format,
) -> Result<Plan, Vec<Diagnostic>> {
    let (value, map, duplicates) =
        source::parse(text, format).map_err(|e| vec![Diagnostic::new(path, e.location, e.message)])?;
    let mut diags: Vec<Diagnostic> =
        duplicates.into_iter().map(|d| Diagnostic::new(path, d.location, d.message)).collect();
    let parsed = structure::deserialize(&value, &map, path, &mut diags);
    let Some((spec, _)) = parsed.filter(|(_, whole)| *whole || diags.is_empty()) else {
        diags.sort_by_key(|d| (d.location.line, d.location.column));
        return Err(diags);
    };
    let graph = checks::check(&spec, &map, path, base_dir, &mut diags);
    if !diags.is_empty() {
        diags.sort_by_key(|d| (d.location.line, d.location.column));
        return Err(diags);
    }
    Ok(build(spec, graph, path, base_dir, text))
}

/// The execution limit of a `wasm:` step that sets no `timeout`: a plugin runs inside the
/// engine, so none runs without a deadline.
pub const DEFAULT_WASM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn build(spec: Pipeline, graph: checks::Graph, path: &Path, base_dir: &Path, text: &str) -> Plan {
    let hash = hex(&Sha256::digest(serde_json::to_vec(&spec).unwrap_or_default()));
    let ids: Vec<String> = spec.steps.keys().cloned().collect();
    let index: HashMap<String, StepIx> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), i as StepIx)).collect();
    let d = &spec.defaults;
    let mut steps = Vec::with_capacity(ids.len());
    let mut core = Vec::with_capacity(ids.len());
    for (ix, step) in spec.steps.values().enumerate() {
        let mut eff = step.clone();
        eff.retries = eff.retries.or_else(|| d.retries.clone());
        eff.timeout = eff.timeout.or(d.timeout);
        if eff.wasm.is_some() && eff.timeout.is_none() {
            eff.timeout = Some(crate::spec::DurationSpec(DEFAULT_WASM_TIMEOUT));
        }
        eff.workdir = eff.workdir.or_else(|| d.workdir.clone());
        eff.resources = eff.resources.or_else(|| d.resources.clone());
        eff.priority = eff.priority.or(d.priority);
        eff.trigger_rule = eff.trigger_rule.or(d.trigger_rule);
        let mut env = d.env.clone();
        env.extend(step.env.clone());
        eff.env = env;
        let retry = eff.retries.as_ref().map_or_else(RetryPolicy::default, |r| {
            let base = RetryPolicy::default();
            RetryPolicy {
                count: r.count,
                backoff: r.backoff,
                delay_ms: r.delay.map_or(base.delay_ms, |d| d.0.as_millis() as u64),
                max_delay_ms: r.max_delay.map_or(base.max_delay_ms, |d| d.0.as_millis() as u64),
                jitter: r.jitter.unwrap_or(0.0),
            }
        });
        let res = eff.resources.clone().unwrap_or_default();
        core.push(CoreStep {
            upstream: graph.upstream[ix].clone(),
            downstream: graph.downstream[ix].clone(),
            rule: eff.trigger_rule.unwrap_or_default(),
            retry,
            timeout_ms: eff.timeout.map(|t| t.0.as_millis() as u64),
            priority: eff.priority.unwrap_or(0),
            resources: ResourceRequest {
                cpu: res.cpu.unwrap_or(1),
                memory: res.memory.map_or(0, |m| m.0),
                gpu: res.gpu.unwrap_or(0),
            },
            prepare: eff.when.is_some() || eff.map.is_some(),
        });
        steps.push(eff);
    }
    Plan {
        spec,
        hash,
        path: path.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        source: text.to_string(),
        ids,
        index,
        steps,
        core: Arc::new(core),
        reads: graph.reads,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
