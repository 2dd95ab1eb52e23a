//! Typed pipeline parameters: their spec, and the one rule that turns given values into typed
//! ones, whether they come as command-line text (`--param n=3`), as JSON (an API body, an
//! event, `schedule.params`) or as a default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Pipeline;

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
    List,
    Object,
}

/// A typed pipeline parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when a run does not give one; without it the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ParamType {
    /// The name the spec uses for the type.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::List => "list",
            ParamType::Object => "object",
        }
    }

    /// Whether a JSON value has this type.
    pub fn check(self, v: &Value) -> Result<(), String> {
        let ok = match self {
            ParamType::String => v.is_string(),
            ParamType::Number => v.is_number(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::List => v.is_array(),
            ParamType::Object => v.is_object(),
        };
        if ok { Ok(()) } else { Err(format!("must be of type {}, but it is {v}", self.name())) }
    }

    /// A JSON value checked against the type; text is parsed by the type as on the command
    /// line (an alert label `"0.3"` for a `number`).
    pub fn coerce(self, v: &Value) -> Result<Value, String> {
        match v {
            Value::String(text) if self != ParamType::String => self.parse(text),
            v => self.check(v).map(|_| v.clone()).map_err(|e| format!("the value {e}")),
        }
    }

    /// Parses command-line text by the type; lists and objects are JSON.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        match self {
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
                self.check(&v).map(|_| v).map_err(|e| format!("the value {e}"))
            }
        }
    }
}

/// A parameter value as given: command-line text, or JSON from an API body or an event.
enum Given<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Pipeline {
    /// A run's parameters from command-line text: given values parsed by type, defaults for
    /// the rest. Returns every problem at once.
    pub fn resolve_params(&self, given: &[(String, String)]) -> Result<Map<String, Value>, Vec<String>> {
        self.resolve(given.iter().map(|(n, t)| (n.as_str(), Given::Text(t))))
    }

    /// A run's parameters given as JSON values (an API body, an event): each is checked
    /// against its type, and text is parsed by type as on the command line (an alert label
    /// `"0.3"` becomes the number 0.3 for a `number` parameter); defaults fill the rest.
    pub fn resolve_values(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<String>> {
        self.resolve(given.iter().map(|(n, v)| (n.as_str(), Given::Json(v))))
    }

    fn resolve<'a>(
        &self,
        given: impl Iterator<Item = (&'a str, Given<'a>)>,
    ) -> Result<Map<String, Value>, Vec<String>> {
        let mut out = Map::new();
        let mut errors = Vec::new();
        let mut given_names = std::collections::HashSet::new();
        for (name, value) in given {
            let Some(spec) = self.params.get(name) else {
                let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
                errors.push(if known.is_empty() {
                    format!("the pipeline `{}` takes no parameters, but `{name}` was given", self.name)
                } else {
                    format!(
                        "the pipeline `{}` has no parameter `{name}` (it has {})",
                        self.name,
                        known.join(", ")
                    )
                });
                continue;
            };
            let parsed = match value {
                Given::Text(text) => spec.kind.parse(text),
                Given::Json(v) => spec.kind.coerce(v),
            };
            given_names.insert(name);
            match parsed {
                Ok(v) => {
                    out.insert(name.to_string(), v);
                }
                Err(why) => errors.push(format!("parameter `{name}`: {why}")),
            }
        }
        for (name, spec) in &self.params {
            // A given value, good or bad, is never replaced by the default.
            if given_names.contains(name.as_str()) {
                continue;
            }
            match &spec.default {
                Some(d) => {
                    out.insert(name.clone(), d.clone());
                }
                None => {
                    errors.push(format!("parameter `{name}` is required: give it with --param {name}=VALUE"))
                }
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_and_defaulted() {
        let p: Pipeline = serde_json::from_value(serde_json::json!({
            "name": "p",
            "params": {
                "n": {"type": "integer", "default": 2},
                "r": {"type": "list"},
                "f": {"type": "boolean", "default": false}
            },
            "steps": {"a": {"process": {"command": ["true"]}}}
        }))
        .unwrap();
        let v = p.resolve_params(&[("r".into(), "[1,2]".into()), ("f".into(), "yes".into())]).unwrap();
        assert_eq!(v["n"], 2);
        assert_eq!(v["r"], serde_json::json!([1, 2]));
        assert_eq!(v["f"], true);
        let errs = p.resolve_params(&[("n".into(), "two".into()), ("zz".into(), "1".into())]).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("not a whole number"));
        assert!(errs[1].contains("no parameter `zz`"));
        assert!(errs[2].contains("`r` is required"));
        assert_eq!(ParamType::Number.coerce(&Value::from("0.3")).unwrap(), 0.3);
        assert!(ParamType::Integer.coerce(&Value::from(1.5)).unwrap_err().contains("of type integer"));
    }
}
