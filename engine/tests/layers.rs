//! The engine's module order, kept: each top-level module uses only modules below it (the
//! order docs/ARCHITECTURE.md writes down), and no two modules of one folder use each other.
//! Read from the source itself, without the tests in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first: a module may use the ones before it.
const ORDER: &[&str] = &[
    "syntax",
    "template",
    "clock",
    "metrics",
    "security",
    "artifacts",
    "tracking",
    "registry",
    "drift",
    "rollout",
    "kinds",
    "spec",
    "scheduler",
    "trigger",
    "compile",
    "store",
    "driver",
    "serving",
    "server",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file with its top-level module and its module within that (its first folder
/// or file under the top one; `mod` for the top module's own file).
fn files() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap();
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if rel == Path::new("lib.rs") || path.extension().is_none_or(|e| e != "rs") {
                continue; // the crate root declares every module; kernels are not Rust
            }
            let name = parts.last().unwrap().trim_end_matches(".rs").to_string();
            let top = if parts.len() == 1 { name.clone() } else { parts[0].clone() };
            if ["tests", "properties"].contains(&name.as_str()) || name.ends_with("_tests") {
                continue;
            }
            // A top-level file (`clock.rs`) is its module's own file, as a folder's `mod.rs` is.
            let sub = match parts.len() {
                1 => "mod".to_string(),
                2 => name.clone(),
                _ => parts[1].clone(),
            };
            let text = std::fs::read_to_string(&path).unwrap();
            // Inline test modules are the tests', not the module's.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap().to_string();
            out.push((top, sub, code));
        }
    }
    out
}

/// The first path segments after each `prefix` in `code` (`prefix{a, b::c}` gives a and b).
fn segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let first = item.trim().split("::").next().unwrap_or("").trim().to_string();
                        if !first.is_empty() {
                            out.insert(first);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn top_level_modules_use_only_the_modules_below_them() {
    let mut bad = Vec::new();
    for (top, sub, code) in files() {
        let Some(me) = ORDER.iter().position(|m| *m == top) else {
            panic!("`{top}` is not in the module order; add it to ORDER and to docs/ARCHITECTURE.md");
        };
        for used in segments(&code, "crate::") {
            match ORDER.iter().position(|m| *m == used) {
                Some(at) if at > me => bad.push(format!("{top}/{sub} uses {used}, which is above it")),
                _ => {}
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md"))
        .unwrap();
    assert!(
        doc.contains(&ORDER.join(" < ")),
        "docs/ARCHITECTURE.md must write the order as `{}`",
        ORDER.join(" < ")
    );
}

#[test]
fn modules_of_one_folder_do_not_use_each_other_both_ways() {
    let all = files();
    // top -> sub -> the sibling modules it uses
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let subs: BTreeMap<String, BTreeSet<String>> = all.iter().fold(BTreeMap::new(), |mut m, (t, s, _)| {
        m.entry(t.clone()).or_default().insert(s.clone());
        m
    });
    for (top, sub, code) in &all {
        if sub == "mod" {
            continue; // a folder's own file declares and re-exports its modules
        }
        let siblings = &subs[top];
        let mut found = segments(code, "super::");
        found.extend(segments(code, &format!("crate::{top}::")));
        let entry = uses.entry(top.clone()).or_default().entry(sub.clone()).or_default();
        entry.extend(found.into_iter().filter(|u| u != sub && siblings.contains(u)));
    }
    let mut cycles = Vec::new();
    for (top, graph) in &uses {
        // Depth-first search for a path back to the start.
        for start in graph.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in graph.get(&at).into_iter().flatten() {
                    if next == start {
                        cycles.push(format!("{top}: {} -> {start}", path.join(" -> ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    assert!(cycles.is_empty(), "{cycles:#?}");
}
