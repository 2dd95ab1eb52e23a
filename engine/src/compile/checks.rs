//! Checks beyond types: ids, needs, params, each step's kind (its own checks), limits; then
//! cycles (`graph`) and templates (`refs`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::context::suggest;
use super::context::{Ctx, step_pointer};
use super::graph::{self, Graph};
use super::{Diagnostic, refs};
use crate::kinds::{self, Check};
use crate::scheduler::StepIx;
use crate::spec::{Pipeline, Step};
use crate::syntax::{SourceMap, push_pointer};

pub(super) fn check(
    spec: &Pipeline,
    map: &SourceMap,
    file: &Path,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Graph {
    let mut cx = Ctx::new(file, base_dir, map, diags);
    if spec.name.trim().is_empty() {
        cx.at("/name", "the pipeline's `name` is empty".into());
    }
    if spec.steps.is_empty() {
        cx.at("/steps", "the pipeline has no steps".into());
    }
    if spec.concurrency == Some(0) {
        cx.at("/concurrency", "`concurrency` must be at least 1".into());
    }
    check_params(spec, &mut cx);
    check_secrets(spec, &mut cx);
    if let Some(slurm) = &spec.defaults.slurm {
        check_slurm(slurm, "/defaults/slurm", &mut cx);
    }
    super::triggers::check(spec, &mut cx);
    let index: HashMap<&str, StepIx> =
        spec.steps.keys().enumerate().map(|(i, k)| (k.as_str(), i as StepIx)).collect();
    let n = spec.steps.len();
    let mut graph = Graph {
        upstream: vec![Vec::new(); n],
        downstream: vec![Vec::new(); n],
        reads: vec![Some(Vec::new()); n],
    };
    for (ix, (id, step)) in spec.steps.iter().enumerate() {
        let sp = step_pointer(id);
        if !valid_id(id) {
            cx.at_key(&sp, format!("step id `{id}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"));
        } else if id.len() > MAX_ID_LEN {
            cx.at_key(
                &sp,
                format!("step id `{}…` is {} characters long; a step id may have at most {MAX_ID_LEN} (it names the step's files)", &id[..24], id.len()),
            );
        }
        check_kind(id, step, &sp, &mut cx);
        check_retries_and_limits(step, &sp, &mut cx);
        let mut seen = HashSet::new();
        for (i, need) in step.needs.iter().enumerate() {
            let np = push_pointer(&push_pointer(&sp, "needs"), &i.to_string());
            match index.get(need.as_str()) {
                None => cx.at(
                    &np,
                    format!(
                        "step `{id}` needs `{need}`, which is not a step of this pipeline{}",
                        suggest(need, index.keys().copied())
                    ),
                ),
                Some(_) if !seen.insert(need.as_str()) => {
                    cx.at(&np, format!("step `{id}` lists `{need}` in `needs` twice"))
                }
                Some(&up) => {
                    graph.upstream[ix].push(up);
                    graph.downstream[up as usize].push(ix as StepIx);
                }
            }
        }
        for (i, out) in step.outputs.iter().enumerate() {
            if !valid_id(out) {
                let op = push_pointer(&push_pointer(&sp, "outputs"), &i.to_string());
                cx.at(&op, format!("output name `{out}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"));
            }
        }
        let implicit: Vec<&str> =
            step.blocks().iter().flat_map(|(_, k)| k.artifact_names().iter().copied()).collect();
        for (name, pattern) in &step.artifacts {
            let ap = push_pointer(&push_pointer(&sp, "artifacts"), name);
            if !valid_id(name) {
                cx.at_key(&ap, format!("step `{id}`: artifact name `{name}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"));
            } else if implicit.contains(&name.as_str()) {
                cx.at_key(
                    &ap,
                    format!("step `{id}`: artifact `{name}` is declared by the step's kind itself"),
                );
            }
            if let Some(why) =
                crate::artifacts::check_pattern(pattern).filter(|_| !crate::template::is_template(pattern))
            {
                cx.at(&ap, format!("step `{id}`: artifact `{name}` {why}"));
            }
        }
    }
    let acyclic = graph::check_cycles(spec, &graph, &mut cx);
    if acyclic {
        graph.reads = refs::check_templates(spec, &index, &graph, &mut cx);
    }
    graph
}

/// The longest step id: the engine names each attempt's files
/// `<id>.<item>.<attempt>.<suffix>`, and with a 10-digit item, a 10-digit attempt and the
/// longest suffix every name stays well under the 255 bytes a file name may have.
pub(crate) const MAX_ID_LEN: usize = 128;

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Each secret's name is an identifier and its reference names a provider.
fn check_secrets(spec: &Pipeline, cx: &mut Ctx) {
    for (name, reference) in &spec.secrets {
        let sp = push_pointer("/secrets", name);
        if !valid_id(name) || name.contains('-') {
            cx.at_key(&sp, format!("secret name `{name}` must start with a letter or `_` and hold only letters, digits and `_`"));
        }
        if let Err(why) = crate::security::secrets::Provider::parse(reference) {
            cx.at(&sp, format!("secret `{name}`: {why}"));
        }
    }
}

fn check_params(spec: &Pipeline, cx: &mut Ctx) {
    for (name, p) in &spec.params {
        let pp = push_pointer("/params", name);
        if !valid_id(name) || name.contains('-') {
            cx.at_key(&pp, format!("parameter name `{name}` must start with a letter or `_` and hold only letters, digits and `_`"));
        }
        if let Some(default) = &p.default
            && let Err(why) = p.kind.check(default)
        {
            cx.at(&push_pointer(&pp, "default"), format!("the default of parameter `{name}` {why}"));
        }
    }
}

/// The step's kind: exactly one block, checked by its kind; and what the kind says of the
/// step's own settings.
fn check_kind(id: &str, step: &Step, sp: &str, cx: &mut Ctx) {
    let blocks = step.blocks();
    match blocks.as_slice() {
        [] => cx.at_key(
            sp,
            format!(
                "step `{id}` says nothing to run: give it one of {}",
                kinds::KEYS.iter().map(|k| format!("`{k}:`")).collect::<Vec<_>>().join(", ")
            ),
        ),
        [_] => {}
        many => cx.at_key(
            sp,
            format!(
                "step `{id}` has {} executor blocks ({}); a step runs exactly one",
                many.len(),
                many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
    let mut problems = Vec::new();
    for (key, block) in &blocks {
        block.check(&mut Check::new(id, key, cx.base_dir, &mut problems));
        if let Some(slurm) = &step.slurm {
            let at = push_pointer(sp, "slurm");
            if block.runs_on_slurm() {
                check_slurm(slurm, &at, cx);
            } else {
                cx.at_key(
                    &at,
                    format!("step `{id}`: only `process:` steps run on Slurm; `{key}:` steps run on the engine's machine"),
                );
            }
        }
        if step.workdir.is_some()
            && let Some(why) = block.refuses_workdir()
        {
            cx.at(&push_pointer(sp, "workdir"), format!("step `{id}`: {why}"));
        }
        if block.waits() {
            // A wait is one decision, with its own deadline.
            if step.map.is_some() {
                cx.at(&push_pointer(sp, "map"), format!("step `{id}`: an `{key}:` step cannot be mapped"));
            }
            if step.timeout.is_some() {
                cx.at(
                    &push_pointer(sp, "timeout"),
                    format!("step `{id}`: set how long it waits with `{key}: {{timeout: ...}}`"),
                );
            }
        }
    }
    for p in problems {
        cx.at(&p.pointer, p.message);
    }
}

/// The `sbatch` options Sluice sets itself, which `extra:` may not set again.
const SLURM_OWN: &[&str] = &[
    "--job-name",
    "-J",
    "--output",
    "-o",
    "--error",
    "-e",
    "--array",
    "-a",
    "--chdir",
    "-D",
    "--parsable",
    "--wrap",
    "--export",
    "--wait",
    "-W",
];

/// A `slurm:` block: names are single words, `extra:` options are options Sluice leaves free.
fn check_slurm(slurm: &crate::spec::SlurmBlock, at: &str, cx: &mut Ctx) {
    for (field, value) in [
        ("partition", &slurm.partition),
        ("account", &slurm.account),
        ("qos", &slurm.qos),
        ("constraint", &slurm.constraint),
        ("gres", &slurm.gres),
    ] {
        if let Some(v) = value
            && (v.trim().is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            cx.at(&push_pointer(at, field), format!("`{field}: {v:?}` must be one word, as Slurm writes it"));
        }
    }
    if let Some(t) = &slurm.time
        && t.0.is_zero()
    {
        cx.at(&push_pointer(at, "time"), "`time:` must be longer than zero".into());
    }
    for (i, option) in slurm.extra.iter().enumerate() {
        let here = push_pointer(&push_pointer(at, "extra"), &i.to_string());
        let name = option.split('=').next().unwrap_or(option);
        if !option.starts_with('-') || option.contains(['\n', '\0']) {
            cx.at(&here, format!("`{option}` is not an sbatch option (they start with `-`; one per item)"));
        } else if SLURM_OWN.contains(&name) {
            cx.at(
                &here,
                format!(
                    "`{name}` is set by Sluice itself (it names, places and watches the job); leave it out"
                ),
            );
        }
    }
}

fn check_retries_and_limits(step: &Step, sp: &str, cx: &mut Ctx) {
    if let Some(r) = &step.retries
        && let Some(j) = r.jitter
        && !(0.0..=1.0).contains(&j)
    {
        cx.at(
            &push_pointer(&push_pointer(sp, "retries"), "jitter"),
            format!("`jitter` must be between 0 and 1, not {j}"),
        );
    }
    if let Some(t) = step.timeout
        && t.0.is_zero()
    {
        cx.at(&push_pointer(sp, "timeout"), "`timeout` must be longer than zero".into());
    }
    if let Some(m) = &step.map
        && !(m.is_array() || m.is_string())
    {
        cx.at(&push_pointer(sp, "map"), "`map` must be a list or an expression that gives one".into());
    }
}
