//! Turning `--param name=value` text into typed parameter values.

use serde_json::{Map, Value};

use crate::compile::Plan;
use crate::spec::ParamType;

/// A parameter value as given: command-line text, or JSON from an API body or an event.
enum Given<'a> {
    Text(&'a str),
    Json(&'a Value),
}

/// Resolves a run's parameters: given values parsed by type, defaults for the rest.
/// Returns every problem at once.
pub fn resolve_params(plan: &Plan, given: &[(String, String)]) -> Result<Map<String, Value>, Vec<String>> {
    resolve(plan, given.iter().map(|(n, t)| (n.as_str(), Given::Text(t))))
}

/// Resolves a run's parameters given as JSON values (an API body, an event): each is checked
/// against its type, and text is parsed by type as on the command line (an alert label
/// `"0.3"` becomes the number 0.3 for a `number` parameter); defaults fill the rest.
pub fn resolve_values(plan: &Plan, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<String>> {
    resolve(plan, given.iter().map(|(n, v)| (n.as_str(), Given::Json(v))))
}

fn resolve<'a>(
    plan: &Plan,
    given: impl Iterator<Item = (&'a str, Given<'a>)>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    let mut given_names = std::collections::HashSet::new();
    for (name, value) in given {
        let Some(spec) = plan.spec.params.get(name) else {
            let known: Vec<&str> = plan.spec.params.keys().map(String::as_str).collect();
            errors.push(if known.is_empty() {
                format!("the pipeline `{}` takes no parameters, but `{name}` was given", plan.name())
            } else {
                format!(
                    "the pipeline `{}` has no parameter `{name}` (it has {})",
                    plan.name(),
                    known.join(", ")
                )
            });
            continue;
        };
        let parsed = match value {
            Given::Text(text) => parse_value(spec.kind, text),
            Given::Json(v) => json_value(spec.kind, v),
        };
        given_names.insert(name);
        match parsed {
            Ok(v) => {
                out.insert(name.to_string(), v);
            }
            Err(why) => errors.push(format!("parameter `{name}`: {why}")),
        }
    }
    for (name, spec) in &plan.spec.params {
        // A given value, good or bad, is never replaced by the default.
        if given_names.contains(name.as_str()) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                out.insert(name.clone(), d.clone());
            }
            None => errors.push(format!("parameter `{name}` is required: give it with --param {name}=VALUE")),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Checks a JSON value against a parameter's type; text is parsed by the type as on the
/// command line (an alert label `"0.3"` for a `number`).
pub(crate) fn json_value(kind: ParamType, v: &Value) -> Result<Value, String> {
    match v {
        Value::String(text) if kind != ParamType::String => parse_value(kind, text),
        v => crate::compile::check_param_value(kind, v)
            .map(|_| v.clone())
            .map_err(|e| format!("the value {e}")),
    }
}

/// Parses one value by type; lists and objects are JSON.
fn parse_value(kind: ParamType, text: &str) -> Result<Value, String> {
    let t = text.trim();
    match kind {
        ParamType::String => Ok(Value::String(text.to_string())),
        ParamType::Integer => {
            t.parse::<i64>().map(Value::from).map_err(|_| format!("`{text}` is not a whole number"))
        }
        ParamType::Number => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{text}` is not a number")),
        ParamType::Boolean => match t {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        ParamType::List | ParamType::Object => {
            let v: Value = serde_json::from_str(t).map_err(|e| format!("`{text}` is not JSON: {e}"))?;
            crate::compile::check_param_value(kind, &v).map(|_| v).map_err(|e| format!("the value {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::Format;
    use std::path::Path;

    #[test]
    fn params_are_typed_and_defaulted() {
        let plan = crate::compile::compile_source(
            Path::new("p.yaml"),
            Path::new("."),
            "name: p\nparams:\n  n: {type: integer, default: 2}\n  r: {type: list}\n  f: {type: boolean, default: false}\nsteps:\n  a: {process: {command: [\"true\"]}}\n",
            Format::Yaml,
        )
        .unwrap();
        let p = resolve_params(&plan, &[("r".into(), "[1,2]".into()), ("f".into(), "yes".into())]).unwrap();
        assert_eq!(p["n"], 2);
        assert_eq!(p["r"], serde_json::json!([1, 2]));
        assert_eq!(p["f"], true);
        let errs =
            resolve_params(&plan, &[("n".into(), "two".into()), ("zz".into(), "1".into())]).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("not a whole number"));
        assert!(errs[1].contains("no parameter `zz`"));
        assert!(errs[2].contains("`r` is required"));
    }
}
