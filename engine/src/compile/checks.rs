//! Checks beyond types: executors, ids, needs, cycles, params, templates and references.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use super::Diagnostic;
use crate::scheduler::StepIx;
use crate::spec::source::{SourceMap, push_pointer};
use crate::spec::{EXECUTOR_KEYS, Pipeline, Step};
use crate::template;

/// Upstream and downstream adjacency by step index.
pub(super) struct Graph {
    pub upstream: Vec<Vec<StepIx>>,
    pub downstream: Vec<Vec<StepIx>>,
    /// The upstream steps whose outputs each step's templates read; `None` when a template
    /// reads `steps` as a whole, so every finished step must be visible.
    pub reads: Vec<Option<Vec<StepIx>>>,
}

pub(super) struct Ctx<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    map: &'a SourceMap,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn at(&mut self, pointer: &str, message: String) {
        self.diags.push(Diagnostic::new(self.file, self.map.value(pointer), message));
    }
    pub(super) fn at_key(&mut self, pointer: &str, message: String) {
        self.diags.push(Diagnostic::new(self.file, self.map.key(pointer), message));
    }
}

fn step_pointer(id: &str) -> String {
    push_pointer("/steps", id)
}

pub(super) fn check(
    spec: &Pipeline,
    map: &SourceMap,
    file: &Path,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Graph {
    let mut cx = Ctx { file, base_dir, map, diags };
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
        }
        check_executor(id, step, &sp, &mut cx);
        check_container(id, step, &sp, &mut cx);
        check_wasm(id, step, &sp, &mut cx);
        check_train(id, step, &sp, &mut cx);
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
    }
    let acyclic = check_cycles(spec, &graph, &mut cx);
    if acyclic {
        graph.reads = check_templates(spec, &index, &graph, &mut cx);
    }
    graph
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .filter(|c| strsim(name, c) <= 2)
        .min_by_key(|c| strsim(name, c))
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, for "did you mean" hints.
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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

fn check_executor(id: &str, step: &Step, sp: &str, cx: &mut Ctx) {
    let keys = step.executor_keys();
    match keys.as_slice() {
        [] => cx.at_key(
            sp,
            format!(
                "step `{id}` says nothing to run: give it one of {}",
                EXECUTOR_KEYS.iter().map(|k| format!("`{k}:`")).collect::<Vec<_>>().join(", ")
            ),
        ),
        [_] => {}
        many => cx.at_key(
            sp,
            format!(
                "step `{id}` has {} executor blocks ({}); a step runs exactly one",
                many.len(),
                many.join(", ")
            ),
        ),
    }
    if let Some(p) = &step.process {
        let pp = push_pointer(sp, "process");
        match (&p.command, &p.shell) {
            (None, None) => cx
                .at(&pp, format!("step `{id}`: `process:` needs `command:` (a list) or `shell:` (a script)")),
            (Some(_), Some(_)) => {
                cx.at(&pp, format!("step `{id}`: `process:` takes `command:` or `shell:`, not both"))
            }
            (Some(c), None) if c.is_empty() => {
                cx.at(&push_pointer(&pp, "command"), format!("step `{id}`: `command:` is empty"))
            }
            _ => {}
        }
    }
}

fn check_container(id: &str, step: &Step, sp: &str, cx: &mut Ctx) {
    let Some(c) = &step.container else { return };
    let cp = push_pointer(sp, "container");
    if c.image.trim().is_empty() {
        cx.at(&push_pointer(&cp, "image"), format!("step `{id}`: `image` is empty"));
    }
    if let Some(cpus) = c.cpus
        && (cpus.is_nan() || cpus <= 0.0)
    {
        cx.at(&push_pointer(&cp, "cpus"), format!("step `{id}`: `cpus` must be more than 0, not {cpus}"));
    }
    if let Some(w) = &c.workdir
        && !w.starts_with('/')
    {
        cx.at(
            &push_pointer(&cp, "workdir"),
            format!("step `{id}`: the container `workdir` must be an absolute path"),
        );
    }
    if step.workdir.is_some() {
        cx.at(
            &push_pointer(sp, "workdir"),
            format!("step `{id}`: a container step sets its folder with `container.workdir`"),
        );
    }
}

fn check_wasm(id: &str, step: &Step, sp: &str, cx: &mut Ctx) {
    let Some(w) = &step.wasm else { return };
    let wp = push_pointer(sp, "wasm");
    let mp = push_pointer(&wp, "module");
    let module = Path::new(&w.module);
    if w.module.trim().is_empty() {
        cx.at(&mp, format!("step `{id}`: `module` is empty"));
    } else if !module.extension().is_some_and(|e| e == "wasm" || e == "wat") {
        cx.at(&mp, format!("step `{id}`: the module `{}` must be a `.wasm` or `.wat` file", w.module));
    } else if !cx.base_dir.join(module).is_file() {
        cx.at(
            &mp,
            format!(
                "step `{id}`: the module `{}` does not exist (paths are relative to the pipeline file's folder)",
                w.module
            ),
        );
    }
    if let Some(m) = w.max_memory
        && !(64 * 1024..=sluice_worker::MAX_MEMORY_LIMIT).contains(&m.0)
    {
        cx.at(
            &push_pointer(&wp, "max_memory"),
            format!("step `{id}`: `max_memory` must be between 64Ki (one page) and 4Gi, not {} bytes", m.0),
        );
    }
    let mut names = HashSet::new();
    for (i, input) in w.inputs.iter().enumerate() {
        let name = Path::new(input).file_name().map(|n| n.to_string_lossy().into_owned());
        if !template::is_template(input)
            && let Some(name) = name
            && !names.insert(name.clone())
        {
            cx.at(
                &push_pointer(&push_pointer(&wp, "inputs"), &i.to_string()),
                format!("step `{id}`: two inputs are named `{name}`; the plugin sees them by file name"),
            );
        }
    }
}

fn check_train(id: &str, step: &Step, sp: &str, cx: &mut Ctx) {
    let Some(t) = &step.train else { return };
    let tp = push_pointer(sp, "train");
    if t.label.trim().is_empty() {
        cx.at(&push_pointer(&tp, "label"), format!("step `{id}`: `label` is empty"));
    }
    if t.data.trim().is_empty() {
        cx.at(&push_pointer(&tp, "data"), format!("step `{id}`: `data` is empty"));
    }
    if let Some(v) = t.validation
        && !(0.0..1.0).contains(&v)
    {
        cx.at(
            &push_pointer(&tp, "validation"),
            format!("step `{id}`: `validation` must be in [0, 1), not {v}"),
        );
    }
    for (key, value) in [("epochs", t.epochs), ("batch_size", t.batch_size)] {
        if value == Some(0) {
            cx.at(&push_pointer(&tp, key), format!("step `{id}`: `{key}` must be at least 1"));
        }
    }
    if let Some(lr) = t.learning_rate
        && !(lr > 0.0 && lr.is_finite())
    {
        cx.at(
            &push_pointer(&tp, "learning_rate"),
            format!("step `{id}`: `learning_rate` must be more than 0"),
        );
    }
    if t.model == crate::spec::TrainModel::Logistic && !t.hidden.is_empty() {
        cx.at(&push_pointer(&tp, "hidden"), format!("step `{id}`: `hidden` layers are for `model: mlp`"));
    }
    if t.hidden.contains(&0) {
        cx.at(&push_pointer(&tp, "hidden"), format!("step `{id}`: a hidden layer needs at least one unit"));
    }
}

/// Every string in a JSON value, with its pointer: templates may hide anywhere in a config.
fn strings<'a>(pointer: String, v: &'a Value, out: &mut Vec<(String, &'a str, bool)>) {
    match v {
        Value::String(s) => out.push((pointer, s, false)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(push_pointer(&pointer, &i.to_string()), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                strings(push_pointer(&pointer, k), item, out);
            }
        }
        _ => {}
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

/// Reports every cycle (as a path `a -> b -> a`); returns whether the graph is acyclic.
fn check_cycles(spec: &Pipeline, graph: &Graph, cx: &mut Ctx) -> bool {
    let n = graph.upstream.len();
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n, n);
    let nodes: Vec<NodeIndex> = (0..n).map(|_| g.add_node(())).collect();
    for (d, ups) in graph.upstream.iter().enumerate() {
        for &u in ups {
            g.add_edge(nodes[u as usize], nodes[d], ());
        }
    }
    let ids: Vec<&String> = spec.steps.keys().collect();
    let mut acyclic = true;
    for scc in tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        acyclic = false;
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc.iter().min().expect("non-empty component");
        let mut path = vec![start];
        let mut on_path: HashSet<NodeIndex> = [start].into();
        // Walk edges inside the component until a node repeats: that closes a cycle.
        let mut cur = start;
        let cycle = loop {
            let next = g
                .neighbors(cur)
                .filter(|m| members.contains(m))
                .min()
                .expect("a component node has an edge inside it");
            if on_path.contains(&next) {
                let from = path.iter().position(|p| *p == next).unwrap_or(0);
                let mut c: Vec<NodeIndex> = path[from..].to_vec();
                c.push(next);
                break c;
            }
            path.push(next);
            on_path.insert(next);
            cur = next;
        };
        let text: Vec<&str> = cycle.iter().map(|i| ids[i.index()].as_str()).collect();
        cx.at_key(&step_pointer(text[0]), format!("steps form a cycle: {}", text.join(" -> ")));
    }
    acyclic
}

fn check_templates(
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
        let mut fields: Vec<(String, &str, bool)> = Vec::new();
        if let Some(p) = &step.process {
            let pp = push_pointer(&sp, "process");
            if let Some(cmd) = &p.command {
                for (i, a) in cmd.iter().enumerate() {
                    fields.push((push_pointer(&push_pointer(&pp, "command"), &i.to_string()), a, false));
                }
            }
            if let Some(s) = &p.shell {
                fields.push((push_pointer(&pp, "shell"), s, false));
            }
        }
        if let Some(c) = &step.container {
            let cp = push_pointer(&sp, "container");
            fields.push((push_pointer(&cp, "image"), &c.image, false));
            let lists = [
                ("command", Some(&c.command)),
                ("entrypoint", c.entrypoint.as_ref()),
                ("inputs", Some(&c.inputs)),
            ];
            for (key, list) in lists {
                for (i, a) in list.into_iter().flatten().enumerate() {
                    fields.push((push_pointer(&push_pointer(&cp, key), &i.to_string()), a, false));
                }
            }
        }
        if let Some(w) = &step.wasm {
            let wp = push_pointer(&sp, "wasm");
            for (i, a) in w.inputs.iter().enumerate() {
                fields.push((push_pointer(&push_pointer(&wp, "inputs"), &i.to_string()), a, false));
            }
            if let Some(config) = &w.config {
                strings(push_pointer(&wp, "config"), config, &mut fields);
            }
        }
        if let Some(t) = &step.train {
            let tp = push_pointer(&sp, "train");
            fields.push((push_pointer(&tp, "data"), &t.data, false));
            if let Some(v) = &t.validation_data {
                fields.push((push_pointer(&tp, "validation_data"), v, false));
            }
            if let Some(o) = &t.output {
                fields.push((push_pointer(&tp, "output"), o, false));
            }
        }
        for (k, v) in step.env.iter().chain(spec.defaults.env.iter()) {
            fields.push((push_pointer(&push_pointer(&sp, "env"), k), v, false));
        }
        if let Some(w) = &step.workdir {
            fields.push((push_pointer(&sp, "workdir"), w, false));
        }
        if let Some(w) = &step.when {
            fields.push((push_pointer(&sp, "when"), w, true));
        }
        if let Some(Value::String(m)) = &step.map {
            fields.push((push_pointer(&sp, "map"), m, true));
        }
        for (pointer, text, expression) in fields {
            if !expression && !template::is_template(text) {
                continue;
            }
            match template::references(env, text, expression) {
                Err(e) => cx.at(&pointer, format!("step `{id}`: bad template: {e}")),
                Ok(refs) => {
                    for r in refs {
                        if let Err(why) = check_reference(spec, index, graph, ix as StepIx, step, &r) {
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
                (Some(&"outputs") | Some(&"state") | None, _) => Ok(()),
                (Some(f), _) => {
                    Err(format!("the template reads `steps.{other}.{f}`; steps have `outputs` and `state`"))
                }
            }
        }
        other => Err(format!(
            "the template reads `{other}`, which is not defined; templates see `params`, `steps`, `run` and `item`"
        )),
    }
}

fn is_ancestor(graph: &Graph, candidate: StepIx, of: StepIx) -> bool {
    let mut stack = graph.upstream[of as usize].clone();
    let mut seen = HashSet::new();
    while let Some(s) = stack.pop() {
        if s == candidate {
            return true;
        }
        if seen.insert(s) {
            stack.extend(graph.upstream[s as usize].iter().copied());
        }
    }
    false
}
