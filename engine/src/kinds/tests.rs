//! The registry: every kind is a field of the step spec, a variant of `StepKind`, and part of
//! the JSON Schema; a block is found by its key.

use serde_json::json;

use super::*;
use crate::spec::Step;

fn one_of_each() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("process", json!({"command": ["true"]})),
        ("container", json!({"image": "busybox:1"})),
        ("wasm", json!({"module": "p.wat"})),
        ("train", json!({"model": "logistic", "data": "d.csv", "label": "y"})),
        ("register", json!({"model": "churn"})),
        ("gate", json!({"checks": [{"metric": "auc", "min": 0.8}], "against": "production"})),
        ("approval", json!({"timeout": "1h"})),
        ("promote", json!({"alias": "production"})),
        ("drift", json!({"reference": "r.csv", "current": "c.csv"})),
        ("rollout", json!({"strategy": {"canary": {"steps": [{"weight": 10}]}}})),
    ]
}

#[test]
fn every_registered_kind_is_a_step_field_and_a_variant() {
    let cases = one_of_each();
    assert_eq!(cases.iter().map(|(k, _)| *k).collect::<Vec<_>>(), KEYS, "a test case per registered kind");
    for (key, block) in cases {
        let mut step: Step = serde_json::from_value(json!({ key: block })).unwrap();
        assert_eq!(step.blocks().iter().map(|(k, _)| *k).collect::<Vec<_>>(), [key]);
        let kinds = step.take_kinds();
        assert_eq!(kinds.len(), 1);
        assert_eq!(kinds[0].key(), key);
        assert!(step.blocks().is_empty(), "taking the kind leaves the step's settings only");
        // Stored plans hold the kind: it round-trips under its key.
        let stored = serde_json::to_value(&kinds[0]).unwrap();
        assert!(stored.get(key).is_some(), "{stored}");
        assert_eq!(serde_json::from_value::<StepKind>(stored).unwrap(), kinds[0]);
    }
}

#[test]
fn the_schema_offers_every_kind() {
    let schema = serde_json::to_value(schemars::schema_for!(Step)).unwrap();
    for key in KEYS {
        assert!(schema["properties"][key].is_object(), "no `{key}` in {schema:#}");
        assert!(schema["properties"][key]["description"].is_string(), "`{key}` has no description");
    }
}

#[test]
fn problems_are_located_under_the_block() {
    let mut problems = Vec::new();
    let block = process::ProcessBlock { command: Some(vec![]), shell: None };
    block.check(&mut Check::new("a", "process", Path::new("."), &mut problems));
    assert_eq!(
        problems,
        [Problem {
            pointer: "/steps/a/process/command".into(),
            message: "step `a`: `command:` is empty".into()
        }]
    );
}
