//! The DAG's edges: upstream and downstream by step index, the cycle check, and ancestry.

use std::collections::HashSet;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::context::{Ctx, step_pointer};
use crate::scheduler::StepIx;
use crate::spec::Pipeline;

/// Upstream and downstream adjacency by step index.
pub(super) struct Graph {
    pub(super) upstream: Vec<Vec<StepIx>>,
    pub(super) downstream: Vec<Vec<StepIx>>,
    /// The upstream steps whose outputs each step's templates read; `None` when a template
    /// reads `steps` as a whole, so every finished step must be visible.
    pub(super) reads: Vec<Option<Vec<StepIx>>>,
}

/// Reports every cycle (as a path `a -> b -> a`); returns whether the graph is acyclic.
pub(super) fn check_cycles(spec: &Pipeline, graph: &Graph, cx: &mut Ctx) -> bool {
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

pub(super) fn is_ancestor(graph: &Graph, candidate: StepIx, of: StepIx) -> bool {
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
