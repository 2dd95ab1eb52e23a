//! Template checks: every templated string of every step parses, and what it reads exists
//! and is upstream of the step. Also which upstream outputs each step's templates read, so
//! that rendering builds only what a step needs.

use std::collections::HashMap;

use serde_json::Value;

use super::context::{Ctx, step_pointer, suggest};
use super::graph::{Graph, is_ancestor};
use crate::kinds::Templates;
use crate::scheduler::StepIx;
use crate::spec::{Pipeline, Step};
use crate::syntax::push_pointer;
use crate::template;

/// Checks every step's templates; returns, per step, the upstream steps whose outputs they
/// read (`None`: a template reads `steps` as a whole).
pub(super) fn check_templates(
    spec: &Pipeline,
    index: &HashMap<&str, StepIx>,
    graph: &Graph,
    cx: &mut Ctx,
) -> Vec<Option<Vec<StepIx>>> {
    let env = template::environment();
    let mut all_reads = Vec::with_capacity(spec.steps.len());
    for (ix, (id, step)) in spec.steps.iter().enumerate() {
        let mut reads: Option<Vec<StepIx>> = Some(Vec::new());
        let sp = step_pointer(id);
        // (pointer, text, whether it is an expression rather than a template, whether it is an
        // `env:` value: the only place a secret may go)
        let mut fields: Vec<(String, &str, bool, bool)> = Vec::new();
        for (key, block) in step.blocks() {
            let mut found = Templates::new(id, key);
            block.templates(&mut found);
            fields.extend(found.into_found().into_iter().map(|(p, t)| (p, t, false, false)));
        }
        for (k, v) in step.env.iter().chain(spec.defaults.env.iter()) {
            if template::is_template(v) {
                fields.push((push_pointer(&push_pointer(&sp, "env"), k), v, false, true));
            }
        }
        if let Some(w) = &step.workdir
            && template::is_template(w)
        {
            fields.push((push_pointer(&sp, "workdir"), w, false, false));
        }
        for (i, path) in step.inputs.iter().enumerate() {
            if template::is_template(path) {
                fields.push((push_pointer(&push_pointer(&sp, "inputs"), &i.to_string()), path, false, false));
            }
        }
        for (name, path) in &step.artifacts {
            if template::is_template(path) {
                fields.push((push_pointer(&push_pointer(&sp, "artifacts"), name), path, false, false));
            }
        }
        if let Some(w) = &step.when {
            fields.push((push_pointer(&sp, "when"), w, true, false));
        }
        if let Some(Value::String(m)) = &step.map {
            fields.push((push_pointer(&sp, "map"), m, true, false));
        }
        for (pointer, text, expression, in_env) in fields {
            match template::references(env, text, expression) {
                Err(e) => cx.at(&pointer, format!("step `{id}`: bad template: {e}")),
                Ok(refs) => {
                    for unknown in template::unknown_names(env, text, expression) {
                        cx.at(&pointer, format!("step `{id}`: bad template: {unknown}"));
                    }
                    for r in refs {
                        let checked = match r.split('.').next() {
                            Some("secrets") => check_secret(spec, in_env, &r),
                            _ => check_reference(spec, index, graph, ix as StepIx, step, &r),
                        };
                        if let Err(why) = checked {
                            cx.at(&pointer, format!("step `{id}`: {why}"));
                        }
                        let mut parts = r.split('.');
                        if parts.next() == Some("steps") {
                            match (parts.next().and_then(|s| index.get(s)), reads.as_mut()) {
                                (Some(&up), Some(list)) if !list.contains(&up) => list.push(up),
                                (Some(_), _) => {}
                                (None, _) => reads = None,
                            }
                        }
                    }
                }
            }
        }
        all_reads.push(reads);
    }
    all_reads
}

/// `secrets.<name>` in an `env:` value, naming a declared secret. Anywhere else its value
/// would reach what Sluice keeps (the request, the event log, the cache key, the logs).
fn check_secret(spec: &Pipeline, in_env: bool, reference: &str) -> Result<(), String> {
    if !in_env {
        return Err(format!(
            "the template reads `{reference}`, but secrets may be used only in `env:` values (pass it to the step as an environment variable)"
        ));
    }
    match reference.split('.').nth(1) {
        None => Err("the template reads `secrets` as a whole; name one secret (`secrets.<name>`)".into()),
        Some(name) if !spec.secrets.contains_key(name) => Err(format!(
            "the template reads `secrets.{name}`, but the pipeline declares no secret `{name}`{}",
            suggest(name, spec.secrets.keys().map(String::as_str))
        )),
        Some(_) => Ok(()),
    }
}

fn check_reference(
    spec: &Pipeline,
    index: &HashMap<&str, StepIx>,
    graph: &Graph,
    me: StepIx,
    step: &Step,
    reference: &str,
) -> Result<(), String> {
    let parts: Vec<&str> = reference.split('.').collect();
    match parts[0] {
        "params" => match parts.get(1) {
            Some(p) if !spec.params.contains_key(*p) => Err(format!(
                "the template reads `params.{p}`, but the pipeline has no parameter `{p}`{}",
                suggest(p, spec.params.keys().map(String::as_str))
            )),
            _ => Ok(()),
        },
        "run" => match parts.get(1) {
            Some(f) if !["id", "name", "dag", "trigger", "cause"].contains(f) => Err(format!(
                "the template reads `run.{f}`; runs have `id`, `name`, `dag`, `trigger` and `cause`"
            )),
            _ => Ok(()),
        },
        "item" if step.map.is_none() => Err("the template reads `item`, but the step has no `map:`".into()),
        "item" => Ok(()),
        "steps" => {
            let Some(other) = parts.get(1) else { return Ok(()) };
            let Some(&up) = index.get(other) else {
                return Err(format!(
                    "the template reads `steps.{other}`, which is not a step of this pipeline"
                ));
            };
            if !is_ancestor(graph, up, me) {
                return Err(format!(
                    "the template reads `steps.{other}`, but `{other}` is not upstream of this step (add it to `needs`)"
                ));
            }
            match (parts.get(2), parts.get(3)) {
                (Some(&"outputs"), Some(name)) => {
                    let declared = &spec.steps[*other].outputs;
                    if !declared.is_empty()
                        && !declared.iter().any(|d| d == name)
                        && spec.steps[*other].map.is_none()
                    {
                        return Err(format!(
                            "the template reads `steps.{other}.outputs.{name}`, but `{other}` declares only {}",
                            declared.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    Ok(())
                }
                (Some(&"artifacts"), Some(name)) => {
                    let s = &spec.steps[*other];
                    let names: Vec<&str> = s
                        .artifacts
                        .keys()
                        .map(String::as_str)
                        .chain(s.blocks().iter().flat_map(|(_, k)| k.artifact_names().iter().copied()))
                        .collect();
                    if names.contains(name) {
                        return Ok(());
                    }
                    let has = if names.is_empty() {
                        "declares no artifacts".to_string()
                    } else {
                        format!(
                            "declares only {}",
                            names.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
                        )
                    };
                    Err(format!("the template reads `steps.{other}.artifacts.{name}`, but `{other}` {has}"))
                }
                (Some(&"outputs") | Some(&"state") | Some(&"artifacts") | None, _) => Ok(()),
                (Some(f), _) => Err(format!(
                    "the template reads `steps.{other}.{f}`; steps have `outputs`, `artifacts` and `state`"
                )),
            }
        }
        other => Err(format!(
            "the template reads `{other}`, which is not defined; templates see `params`, `steps`, `run` and `item` (and `secrets` in `env:` values)"
        )),
    }
}
