//! Generated pipelines shared by the benches.
#![allow(dead_code)]

/// A chain of `n` steps, each running `true`.
pub(crate) fn chain(n: usize) -> String {
    let mut s = String::from("name: chain\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  s{i}:\n    process: {{ command: [\"true\"] }}\n"));
        if i > 0 {
            s.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    s
}

/// `n` independent steps, each running `true`, fanning into nothing.
pub(crate) fn wide(n: usize) -> String {
    let mut s = String::from("name: wide\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  s{i}: {{ process: {{ command: [\"true\"] }} }}\n"));
    }
    s
}
