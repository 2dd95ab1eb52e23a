//! What a `rollout:` step (or `POST /api/v1/rollouts`) asks for: a strategy in Argo
//! Rollouts' vocabulary, and the analysis that decides each step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::syntax::DurationSpec;

/// How the candidate takes over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// Shift a share of the traffic at a time: `steps: [{weight: 10}, {pause: 10m},
    /// {analysis: {...}}, {weight: 50}, ...]`; the alias moves when the last step passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Serve the candidate under a preview alias, analyse it, switch the alias at once,
    /// analyse again, and switch back at once on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
}

/// One canary step: exactly one of `weight`, `pause`, `analysis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// The percent of the traffic the candidate gets (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Wait this long (`10m`), or, as `{}`, until a person resumes the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// A pause: a duration, or `{}` (until resumed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Pause {
    For(DurationSpec),
    UntilResumed(std::collections::BTreeMap<String, serde_json::Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueGreen {
    /// The alias the candidate is served under before the switch (default `preview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// Analysis of the candidate (its preview traffic) before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion: Option<Analysis>,
    /// Analysis after the switch; a failure switches back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion: Option<Analysis>,
    /// Switch without waiting for `sluice rollout promote` (default true).
    #[serde(default = "yes")]
    pub auto_promote: bool,
}

fn yes() -> bool {
    true
}

/// Measurements of the serving path, taken `count` times every `interval`; more than
/// `failure_limit` failed ones fail the analysis (the rollout aborts), an inconclusive one
/// pauses it for a person. Shorthand for one metric: `{metric: error_rate, max: 0.01}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Between measurements (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    /// Measurements (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Failed measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
}

/// One metric and what it must be. Metrics: `error_rate`, `latency_p50`, `latency_p99`
/// (ms), `psi` (the candidate's predictions against the stable version's), `accuracy` and
/// `auc` (online, from feedback), `requests`, or `version.<key>` (a metric the version was
/// registered with). `min`/`max` are shorthand for `success` and `failure` conditions;
/// conditions read `<= 0.01`, `> 0.05`; a value neither succeeding nor failing, or no value
/// yet, is inconclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// What sticky routing hashes: a request header, or a named feature of the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}
