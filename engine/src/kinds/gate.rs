//! `gate:`: a quality gate. A candidate version's metrics against thresholds and against the
//! version an alias points at; the report (each check, its values, pass or fail) is the
//! step's output, and a failed gate fails the step for good with the report as its message.
//! Carried out by the engine itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_worker::{BuiltinSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::registry::gate::Direction;

/// A threshold: a number, or a template that renders to one (`"{{ params.threshold }}"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Threshold {
    Number(f64),
    Template(String),
}

/// One check of a gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    /// The metric's key (`auc`, `val_loss`).
    pub metric: String,
    /// The candidate's value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Threshold>,
    /// The candidate's value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Threshold>,
    /// Which way is better against the alias's version (default: `minimize` for a check
    /// with only `max`, else `maximize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// A `gate:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateBlock {
    /// The model (templated; default: the model registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The candidate version (templated; default: the version registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub checks: Vec<GateCheck>,
    /// Compare with the version this alias points at (`production`): the candidate must be
    /// better by `min_improvement` on each check's metric. An alias that points nowhere yet
    /// passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// How much better than the alias's version, in each check's direction (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_improvement: Option<f64>,
    /// Which way is better for every check that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

impl Kind for GateBlock {
    fn check(&self, cx: &mut Check<'_>) {
        if self.checks.is_empty() {
            cx.at("checks", "a gate needs at least one check");
        }
        for (i, c) in self.checks.iter().enumerate() {
            if c.metric.trim().is_empty() {
                cx.at(&format!("checks/{i}/metric"), "`metric` is empty");
            }
            for (field, t) in [("min", &c.min), ("max", &c.max)] {
                if let Some(Threshold::Number(n)) = t
                    && !n.is_finite()
                {
                    cx.at(&format!("checks/{i}/{field}"), format!("`{field}` must be a finite number"));
                }
            }
            if c.min.is_none() && c.max.is_none() && self.against.is_none() {
                cx.at(&format!("checks/{i}"), "a check needs `min`, `max`, or the gate's `against`");
            }
            if let (Some(Threshold::Number(lo)), Some(Threshold::Number(hi))) = (&c.min, &c.max)
                && lo > hi
            {
                cx.at(&format!("checks/{i}"), format!("`min` {lo} is above `max` {hi}: no value passes"));
            }
        }
        if let Some(m) = self.min_improvement
            && !(m.is_finite() && m >= 0.0)
        {
            cx.at("min_improvement", "`min_improvement` must be a finite number, 0 or more");
        }
        if let Some(a) = &self.against
            && !crate::template::is_template(a)
            && let Err(e) = crate::registry::check_alias(a)
        {
            cx.at("against", e);
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        for (field, v) in [("model", &self.model), ("version", &self.version), ("against", &self.against)] {
            if let Some(v) = v {
                out.text(field, v);
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            for (field, t) in [("min", &c.min), ("max", &c.max)] {
                if let Some(Threshold::Template(s)) = t {
                    out.text(&format!("checks/{i}/{field}"), s);
                }
            }
        }
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a `gate:` step runs inside the engine")
    }

    fn default_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(600))
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let threshold = |t: &Option<Threshold>, what: &str| -> Result<Value, String> {
            match t {
                None => Ok(Value::Null),
                Some(Threshold::Number(n)) => Ok(json!(n)),
                Some(Threshold::Template(s)) => {
                    let text = (cx.text)(s)?;
                    let n: f64 = text
                        .trim()
                        .parse()
                        .map_err(|_| format!("the gate's `{what}` renders to `{text}`, not a number"))?;
                    if !n.is_finite() {
                        return Err(format!("the gate's `{what}` renders to {n}, not a finite number"));
                    }
                    Ok(json!(n))
                }
            }
        };
        let checks = self
            .checks
            .iter()
            .map(|c| {
                Ok(json!({
                    "metric": c.metric,
                    "min": threshold(&c.min, "min")?,
                    "max": threshold(&c.max, "max")?,
                    "direction": c.direction.or(self.direction),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let opt = |v: &Option<String>| v.as_deref().map(cx.text).transpose();
        let args = json!({
            "model": opt(&self.model)?,
            "version": opt(&self.version)?,
            "checks": checks,
            "against": opt(&self.against)?,
            "min_improvement": self.min_improvement.unwrap_or(0.0),
        });
        Ok(ExecSpec::Builtin(BuiltinSpec { op: "gate".into(), args }).into())
    }
}
