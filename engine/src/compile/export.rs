//! `sluice graph`: the DAG as Graphviz DOT or Mermaid.

use super::Plan;

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The DAG in Graphviz DOT.
pub fn to_dot(plan: &Plan) -> String {
    let mut out =
        format!("digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", quote(plan.name()));
    for (ix, id) in plan.ids.iter().enumerate() {
        let step = &plan.steps[ix];
        let mut label = id.clone();
        if step.spec.map.is_some() {
            label.push_str(" [map]");
        }
        out.push_str(&format!("  {} [label={}];\n", quote(id), quote(&label)));
    }
    for (ix, id) in plan.ids.iter().enumerate() {
        for up in &plan.core[ix].upstream {
            let rule = plan.core[ix].rule;
            let attr = if rule == crate::spec::TriggerRule::AllSuccess {
                String::new()
            } else {
                format!(
                    " [label={}]",
                    quote(serde_json::to_string(&rule).unwrap_or_default().trim_matches('"'))
                )
            };
            out.push_str(&format!("  {} -> {}{attr};\n", quote(plan.id(*up)), quote(id)));
        }
    }
    out.push_str("}\n");
    out
}

/// The DAG as a Mermaid flowchart.
pub fn to_mermaid(plan: &Plan) -> String {
    let node = |ix: usize| format!("s{ix}");
    let mut out = String::from("flowchart LR\n");
    for (ix, id) in plan.ids.iter().enumerate() {
        let label = id.replace('"', "'");
        out.push_str(&format!("  {}[\"{label}\"]\n", node(ix)));
    }
    for ix in 0..plan.ids.len() {
        for up in &plan.core[ix].upstream {
            out.push_str(&format!("  {} --> {}\n", node(*up as usize), node(ix)));
        }
    }
    out
}
