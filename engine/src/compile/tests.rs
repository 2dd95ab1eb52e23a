//! Compiler tests: plans, defaults, every-error-at-once, cycles, and the malformed-spec corpus.

use std::path::Path;

use super::*;
use crate::syntax::Format;

fn compile(text: &str) -> Result<Plan, Vec<Diagnostic>> {
    compile_source(Path::new("t.yaml"), Path::new("."), text, Format::Yaml)
}

#[test]
fn compiles_a_pipeline_with_defaults() {
    let plan = compile(
        r#"
name: demo
params:
  n: { type: integer, default: 3 }
defaults:
  retries: { count: 2, backoff: exponential, initial: 5s, max: 2m }
  timeout: 30m
  env: { A: "1" }
steps:
  a:
    process: { command: [echo, "{{ params.n }}"] }
    outputs: [x]
  b:
    process: { shell: "echo {{ steps.a.outputs.x }}" }
    needs: [a]
    env: { B: "2" }
    retries: 0
"#,
    )
    .unwrap();
    assert_eq!(plan.ids, vec!["a", "b"]);
    assert_eq!(plan.core[1].upstream, vec![0]);
    assert_eq!(plan.core[0].downstream, vec![1]);
    assert_eq!(plan.core[0].retry.count, 2);
    assert_eq!(plan.core[0].retry.delay_ms, 5_000);
    assert_eq!(plan.core[0].retry.max_delay_ms, 120_000);
    assert_eq!(plan.core[1].retry.count, 0);
    assert_eq!(plan.core[0].timeout_ms, Some(1_800_000));
    assert_eq!(plan.steps[1].spec.env.len(), 2);
    assert_eq!(plan.hash.len(), 64);
}

#[test]
fn yaml_and_json_give_the_same_dag_version() {
    let y = compile("name: x\nsteps:\n  a: { process: { command: [\"true\"] } }\n").unwrap();
    let j = compile_source(
        Path::new("t.json"),
        Path::new("."),
        r#"{"name": "x", "steps": {"a": {"process": {"command": ["true"]}}}}"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(y.hash, j.hash);
}

#[test]
fn reports_every_error_at_once() {
    let errs = compile(
        r#"
name: x
steps:
  a:
    process: { command: ["true"] }
    retries: { count: "lots" }
    colour: blue
  b:
    process: { command: ["true"] }
    needs: [nope]
    timeout: soon
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(errs.len(), 4, "{text:#?}");
    assert!(text[0].starts_with("t.yaml:6:23: steps.a.retries.count: wrong type"), "{text:#?}");
    assert!(text[1].starts_with("t.yaml:7:5: unknown field `colour`"), "{text:#?}");
    assert!(text[2].starts_with("t.yaml:10:13: step `b` needs `nope`"), "{text:#?}");
    assert!(text[3].starts_with("t.yaml:11:14: steps.b.timeout: `soon` is not a duration"), "{text:#?}");
}

#[test]
fn cycles_print_their_path() {
    let errs = compile(
        r#"
name: x
steps:
  a: { process: { command: ["true"] }, needs: [c] }
  b: { process: { command: ["true"] }, needs: [a] }
  c: { process: { command: ["true"] }, needs: [b] }
  d: { process: { command: ["true"] }, needs: [d] }
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|d| d.message.clone()).collect();
    assert_eq!(text, vec!["steps form a cycle: a -> b -> c -> a", "steps form a cycle: d -> d"]);
}

/// Every file in `tests/specs/invalid` fails with the errors its `.expected` file lists
/// (`line:column: text`, one per line, in order).
#[test]
fn malformed_spec_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/specs/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expected") {
            continue;
        }
        let errs = compile_file(&path).expect_err(&format!("{} should not compile", path.display()));
        let got: Vec<String> = errs
            .iter()
            .map(|d| format!("{}:{}: {}", d.location.line, d.location.column, d.message))
            .collect();
        if std::env::var_os("SLUICE_BLESS").is_some() {
            // Rewrites the expectations from what the compiler says now; review the diff.
            std::fs::write(path.with_extension("expected"), got.join("\n") + "\n").unwrap();
        }
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(got.len(), want.len(), "{}: got {got:#?}", path.display());
        for (g, w) in got.iter().zip(&want) {
            assert!(g.starts_with(w), "{}:\n  got  {g}\n  want {w}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 15, "the corpus has only {checked} specs");
}

#[test]
fn the_dag_version_covers_the_code_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("p.wat");
    std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"_start\")))").unwrap();
    let spec =
        "name: x\nsteps:\n  a: { wasm: { module: p.wat } }\n  b: { wasm: { module: p.wat }, needs: [a] }\n";
    let at = |d: &Path| compile_source(&d.join("x.yaml"), d, spec, Format::Yaml).unwrap();
    let first = at(dir.path());
    assert_eq!(first.code.len(), 1, "a file two steps run is one code file");
    assert_eq!(first.code[0].path, "p.wat");
    assert_eq!(at(dir.path()).hash, first.hash, "the same content is the same version");
    std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"_start\") nop))")
        .unwrap();
    let edited = at(dir.path());
    assert_ne!(edited.hash, first.hash, "an edited module is a new version");
    assert_ne!(edited.code[0].sha256, first.code[0].sha256);
    // And a stored plan comes back as it was compiled.
    let back = Plan::from_stored(
        serde_json::from_value(serde_json::to_value(edited.to_stored()).unwrap()).unwrap(),
        edited.source.clone(),
    );
    assert_eq!(back, edited);
}
