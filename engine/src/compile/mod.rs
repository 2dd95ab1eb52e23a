//! Compiling a spec file into a [`Plan`]: parse, deserialize, check, build the DAG.
//!
//! Compilation reports **every** error at once, each with file, line and column, before any
//! run starts. A plan is immutable and identified by its DAG version: the hash of its
//! normalized content and of the code files it references. A run stores its plan, so nothing
//! is compiled again for it (see `Plan::to_stored`).

mod checks;
mod context;
mod diagnostic;
mod export;
mod graph;
mod refs;
mod structure;
mod triggers;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use diagnostic::Diagnostic;
pub use export::{to_dot, to_mermaid};
pub use triggers::{MAX_CATCHUP, valid_source};

use crate::kinds::StepKind;
use crate::scheduler::{CoreStep, ResourceRequest, RetryPolicy, StepIx};
use crate::spec::{Pipeline, Step};
use crate::syntax::{DurationSpec, Format, source};

/// One step of a plan: its effective settings (defaults applied) and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The step's settings with the pipeline's defaults applied; its kind block is in `kind`.
    pub spec: Step,
    pub kind: StepKind,
}

/// A code file a plan references (a plugin's module), by its path as written (relative to
/// the pipeline file's folder) and the sha256 of its content when it was compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeFile {
    pub path: String,
    pub sha256: String,
}

/// A compiled pipeline, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The pipeline without its steps (they are in `steps`, effective).
    pub spec: Pipeline,
    /// The DAG version: sha256 of the normalized spec and of the code files it references.
    pub hash: String,
    /// The file it came from, and the folder relative paths resolve against.
    pub path: PathBuf,
    pub base_dir: PathBuf,
    /// The file's text, stored with the DAG version.
    pub source: String,
    /// Step ids in plan order (the file's order).
    pub ids: Vec<String>,
    pub index: HashMap<String, StepIx>,
    pub steps: Vec<PlanStep>,
    pub core: Arc<Vec<CoreStep>>,
    /// The steps whose outputs each step's templates read (`None`: all of them).
    pub reads: Vec<Option<Vec<StepIx>>>,
    /// The code files the plan references, by path.
    pub code: Vec<CodeFile>,
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
    /// The code file at `path` (as the spec writes it).
    pub fn code_file(&self, path: &str) -> Option<&CodeFile> {
        self.code.iter().find(|c| c.path == path)
    }

    /// The plan as stored with its DAG version (everything but the file's text, which the
    /// version keeps beside it).
    pub fn to_stored(&self) -> StoredPlan {
        StoredPlan {
            v: STORED_PLAN_VERSION,
            spec: self.spec.clone(),
            hash: self.hash.clone(),
            path: self.path.clone(),
            base_dir: self.base_dir.clone(),
            ids: self.ids.clone(),
            steps: self.steps.clone(),
            core: self.core.as_ref().clone(),
            reads: self.reads.clone(),
            code: self.code.clone(),
        }
    }

    /// A stored plan back as a plan, with the file's text it was compiled from.
    pub fn from_stored(stored: StoredPlan, source: String) -> Plan {
        let index = stored.ids.iter().enumerate().map(|(i, id)| (id.clone(), i as StepIx)).collect();
        Plan {
            spec: stored.spec,
            hash: stored.hash,
            path: stored.path,
            base_dir: stored.base_dir,
            source,
            ids: stored.ids,
            index,
            steps: stored.steps,
            core: Arc::new(stored.core),
            reads: stored.reads,
            code: stored.code,
        }
    }
}

/// The version of [`StoredPlan`] this build writes.
pub const STORED_PLAN_VERSION: u32 = 1;

/// A checked plan as the store keeps it with its DAG version: what a run needs to resume, be
/// shown or be retried, without the pipeline file or the code files it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub v: u32,
    pub spec: Pipeline,
    pub hash: String,
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub ids: Vec<String>,
    pub steps: Vec<PlanStep>,
    pub core: Vec<CoreStep>,
    pub reads: Vec<Option<Vec<StepIx>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<CodeFile>,
}

/// Reads and compiles a pipeline file.
pub fn compile_file(path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    let text = read_regular(path, MAX_SPEC_BYTES)
        .and_then(|bytes| String::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text: {e}")))
        .map_err(|e| vec![Diagnostic::new(path, Default::default(), format!("cannot read the file: {e}"))])?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    compile_source(path, &base, &text, Format::from_path(path))
}

/// Compiles pipeline text; `path` names it in diagnostics. Code files the steps reference
/// (plugin modules) are read from `base_dir` and their content becomes part of the version.
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
        return Err(sorted(diags));
    };
    let graph = checks::check(&spec, &map, path, base_dir, &mut diags);
    if !diags.is_empty() {
        return Err(sorted(diags));
    }
    let code = code_files(&spec, base_dir, &map, path)?;
    let hash = version(&spec, &code).map_err(|e| vec![Diagnostic::new(path, Default::default(), e)])?;
    Ok(build(spec, graph, hash, code, path, base_dir, text))
}

fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| (d.location.line, d.location.column));
    diags
}

/// The largest code file a step may reference: a plugin module is read whole, to hash it and
/// to keep a copy.
pub const MAX_CODE_BYTES: u64 = 256 * 1024 * 1024;

/// The largest pipeline file: a pipeline of 10,000 steps is about 1 MB.
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a code file whole, refusing one over [`MAX_CODE_BYTES`].
pub(crate) fn read_code(path: &Path) -> Result<Vec<u8>, String> {
    read_regular(path, MAX_CODE_BYTES).map_err(|e| format!("cannot read it: {e}"))
}

/// Reads a regular file of at most `max` bytes. Anything else (a FIFO, a device) is refused
/// before it is opened, and the file is opened non-blocking, so no file can hang the reader.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("it is {} bytes, over the limit of {max}", meta.len()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("it is over the limit of {max} bytes"));
    }
    Ok(bytes)
}

/// The content digest of every code file the steps reference, each file read once; a file
/// that cannot be read is an error at the block that names it.
fn code_files(
    spec: &Pipeline,
    base_dir: &Path,
    map: &source::SourceMap,
    file: &Path,
) -> Result<Vec<CodeFile>, Vec<Diagnostic>> {
    let mut by_path: BTreeMap<&str, String> = BTreeMap::new();
    let mut diags = Vec::new();
    for (id, step) in &spec.steps {
        for (key, block) in step.blocks() {
            for path in block.code() {
                if by_path.contains_key(path) {
                    continue;
                }
                match read_code(&base_dir.join(path)) {
                    Ok(bytes) => {
                        by_path.insert(path, hex(&Sha256::digest(&bytes)));
                    }
                    Err(e) => {
                        let at = crate::syntax::push_pointer(&crate::syntax::push_pointer("/steps", id), key);
                        diags.push(Diagnostic::new(
                            file,
                            map.value(&at),
                            format!("step `{id}`: the code file `{path}`: {e}"),
                        ));
                    }
                }
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(by_path.into_iter().map(|(path, sha256)| CodeFile { path: path.to_string(), sha256 }).collect())
}

/// The DAG version: sha256 of the normalized spec, then of each code file's path and digest.
fn version(spec: &Pipeline, code: &[CodeFile]) -> Result<String, String> {
    let normalized =
        serde_json::to_vec(spec).map_err(|e| format!("cannot normalize the pipeline to hash it: {e}"))?;
    let mut h = Sha256::new();
    h.update(&normalized);
    for c in code {
        h.update(b"\ncode ");
        h.update(c.path.as_bytes());
        h.update(b" ");
        h.update(c.sha256.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

fn build(
    mut spec: Pipeline,
    graph: graph::Graph,
    hash: String,
    code: Vec<CodeFile>,
    path: &Path,
    base_dir: &Path,
    text: &str,
) -> Plan {
    let raw = std::mem::take(&mut spec.steps);
    let ids: Vec<String> = raw.keys().cloned().collect();
    let index: HashMap<String, StepIx> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), i as StepIx)).collect();
    let d = &spec.defaults;
    let mut steps = Vec::with_capacity(ids.len());
    let mut core = Vec::with_capacity(ids.len());
    for (ix, mut eff) in raw.into_values().enumerate() {
        // The checks made sure there is exactly one.
        let kind = eff.take_kinds().into_iter().next().expect("a checked step has one kind");
        let own_env = std::mem::take(&mut eff.env);
        eff.retries = eff.retries.or_else(|| d.retries.clone());
        eff.timeout = if kind.hooks().waits() {
            // A wait's own deadline (its block says it), whatever the pipeline's defaults.
            kind.hooks().default_timeout().map(DurationSpec)
        } else {
            eff.timeout.or(d.timeout).or(kind.hooks().default_timeout().map(DurationSpec))
        };
        eff.workdir = eff.workdir.or_else(|| d.workdir.clone());
        eff.resources = eff.resources.or_else(|| d.resources.clone());
        eff.priority = eff.priority.or(d.priority);
        eff.trigger_rule = eff.trigger_rule.or(d.trigger_rule);
        eff.cache = eff.cache.or(d.cache);
        if kind.hooks().runs_on_slurm() {
            eff.slurm = eff.slurm.or_else(|| d.slurm.clone());
        }
        let mut env = d.env.clone();
        env.extend(own_env);
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
                // Set by the driver, which also knows the engine's `--slurm`.
                remote: false,
            },
            prepare: eff.when.is_some() || eff.map.is_some(),
            wait: kind.hooks().waits(),
        });
        steps.push(PlanStep { spec: eff, kind });
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
        code,
    }
}

pub(crate) use crate::security::hex;

#[cfg(test)]
mod tests;
