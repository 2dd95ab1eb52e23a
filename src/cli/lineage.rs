//! `sluice lineage`: where an artifact came from, or what used a dataset version or an
//! artifact, as an indented tree, JSON, Graphviz DOT or Mermaid.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use hyper::Method;
use sluice_engine::artifacts;
use sluice_engine::store::{Direction, Lineage, Node, Origin};

use super::client::{Api, runtime};
use super::parse_run_id;
use crate::Output;

/// How a graph is drawn instead of text.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
}

/// `RUN/STEP`, or a digest (in full, or 8 or more of its first hex digits for an artifact).
fn origin(engine: Option<&sluice_engine::driver::Engine>, target: &str) -> anyhow::Result<Origin> {
    if let Some((run, step)) = target.split_once('/') {
        return Ok(Origin::Step { run: parse_run_id(run)?, step: step.to_string() });
    }
    if let Ok(d) = artifacts::normalize(target) {
        return Ok(Origin::Digest(d));
    }
    let engine =
        engine.context("through the server, give the full digest (sha256:<64 hex digits>) or RUN/STEP")?;
    let records = engine.store().artifacts(None)?;
    Ok(Origin::Digest(super::artifacts::resolve(&records, target)?))
}

pub(crate) fn lineage(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    target: &str,
    direction: Direction,
    depth: usize,
    format: Option<GraphFormat>,
) -> anyhow::Result<ExitCode> {
    let graph: Lineage = match super::inspect::open(data_dir) {
        Err(e) if super::inspect::locked(&e) && super::client::server_url(data_dir, server).is_some() => {
            let api = Api::new(data_dir, server)?;
            let dir = if direction == Direction::Upstream { "upstream" } else { "downstream" };
            let path = match origin(None, target)? {
                Origin::Digest(d) => format!("/api/v1/lineage/{d}?direction={dir}&depth={depth}"),
                Origin::Step { run, step } => {
                    format!("/api/v1/runs/{run}/steps/{step}/lineage?direction={dir}&depth={depth}")
                }
            };
            let v = runtime()?.block_on(api.ok(Method::GET, &path, None))?;
            serde_json::from_value(v).context("the server's lineage")?
        }
        Err(e) => return Err(e),
        Ok(engine) => {
            let o = origin(Some(&engine), target)?;
            engine.store().lineage(&o, direction, depth)?
        }
    };
    if graph.nodes.is_empty() {
        anyhow::bail!(
            "nothing is recorded for {target}: no artifact, dataset version or step attempt by that name"
        );
    }
    match (format, output) {
        (Some(GraphFormat::Dot), _) => print!("{}", dot(&graph)),
        (Some(GraphFormat::Mermaid), _) => print!("{}", mermaid(&graph)),
        (None, Output::Json) => println!("{}", serde_json::to_string_pretty(&graph)?),
        (None, Output::Text) => print!("{}", tree(&graph, direction)),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(g: &Lineage, n: &Node) -> String {
    match n {
        Node::Dataset { digest, path } => format!("dataset {path} {digest}"),
        Node::Artifact { digest, name } => format!("artifact `{name}` {digest}"),
        Node::Attempt { run, pipeline, step, item, attempt } => {
            let item = if *item > 0 { format!(" item {item}") } else { String::new() };
            let facts = g.runs.get(run).map_or(String::new(), |r| {
                let dag = r["dag"].as_str().unwrap_or("");
                let params = r["params"].as_object().map_or(String::new(), |p| {
                    p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                });
                format!(
                    " (DAG version {}{})",
                    &dag[..dag.len().min(12)],
                    if params.is_empty() { String::new() } else { format!(", {params}") }
                )
            });
            format!("run {run} {pipeline} step {step}{item} attempt {attempt}{facts}")
        }
    }
}

/// The graph as an indented tree from the origin (the first node): upstream, each node's
/// inputs below it; downstream, each node's uses.
fn tree(g: &Lineage, direction: Direction) -> String {
    let mut out = String::new();
    let mut seen = HashSet::new();
    fn walk(
        g: &Lineage,
        at: usize,
        depth: usize,
        direction: Direction,
        seen: &mut HashSet<usize>,
        out: &mut String,
    ) {
        let indent = "  ".repeat(depth);
        let again = !seen.insert(at);
        out.push_str(&format!(
            "{indent}{}{}\n",
            describe(g, &g.nodes[at]),
            if again { " (above)" } else { "" }
        ));
        if again {
            return;
        }
        for (from, to, what) in &g.edges {
            let next = match direction {
                Direction::Upstream if *to == at => *from,
                Direction::Downstream if *from == at => *to,
                _ => continue,
            };
            let verb = match (direction, what.as_str()) {
                (Direction::Upstream, "produced") => "made by",
                (Direction::Upstream, _) => "read",
                (Direction::Downstream, "produced") => "made",
                (Direction::Downstream, _) => "read by",
            };
            out.push_str(&format!("{indent}  {verb}:\n"));
            walk(g, next, depth + 2, direction, seen, out);
        }
    }
    walk(g, 0, 0, direction, &mut seen, &mut out);
    out
}

fn dot(g: &Lineage) -> String {
    let mut s = String::from("digraph lineage {\n  rankdir=LR;\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let shape = match n {
            Node::Attempt { .. } => "box",
            Node::Dataset { .. } => "cylinder",
            Node::Artifact { .. } => "note",
        };
        s.push_str(&format!("  n{i} [shape={shape}, label={:?}];\n", n.label()));
    }
    for (from, to, what) in &g.edges {
        s.push_str(&format!("  n{from} -> n{to} [label={what:?}];\n"));
    }
    s.push_str("}\n");
    s
}

fn mermaid(g: &Lineage) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let label = n.label().replace('"', "'");
        let node = match n {
            Node::Attempt { .. } => format!("n{i}[\"{label}\"]"),
            Node::Dataset { .. } => format!("n{i}[(\"{label}\")]"),
            Node::Artifact { .. } => format!("n{i}>\"{label}\"]"),
        };
        s.push_str(&format!("  {node}\n"));
    }
    for (from, to, what) in &g.edges {
        s.push_str(&format!("  n{from} -->|{what}| n{to}\n"));
    }
    s
}
