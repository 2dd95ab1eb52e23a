//! Generated pipelines shared by the benches.
#![allow(dead_code)]

pub(crate) mod server;

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

/// A chain of `n` container steps, each running `true` in `image`.
pub(crate) fn container_chain(n: usize, image: &str) -> String {
    let mut s = String::from("name: container-chain\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  s{i}:\n    container: {{ image: \"{image}\", command: [\"true\"] }}\n"));
        if i > 0 {
            s.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    s
}

/// `n` independent steps, each running the WASM plugin `module` (an absolute path).
pub(crate) fn wasm_wide(n: usize, module: &str) -> String {
    let mut s = String::from("name: wasm-wide\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  s{i}: {{ wasm: {{ module: \"{module}\" }} }}\n"));
    }
    s
}
