//! `rollout:`: roll a version out onto an alias under `sluice serve`, by canary steps or
//! blue-green, in Argo Rollouts' vocabulary, with analyses of the live serving metrics and
//! automatic rollback. The step waits for the end: it succeeds when the candidate took the
//! alias and fails (for good) when the rollout was aborted, whose end is also an event
//! `on: - rollout:` matches. Carried out by the server's rollout loop.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_worker::{BuiltinSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::rollout::spec::{RouteBy, Strategy};

/// A `rollout:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutBlock {
    /// The model (templated; default: the model registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The candidate version (templated; default: the version registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The alias it takes over (default `production`, what requests by the model's name are
    /// served by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub strategy: Strategy,
    /// Sticky routing: requests with the same header value, or the same value of a feature,
    /// go to the same version while the weight holds (random without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_by: Option<RouteBy>,
}

impl Kind for RolloutBlock {
    fn check(&self, cx: &mut Check<'_>) {
        // Each canary step's problem at the step; the rest at the strategy.
        match &self.strategy.canary {
            Some(c) if self.strategy.blue_green.is_none() && !c.steps.is_empty() => {
                for (i, step) in c.steps.iter().enumerate() {
                    if let Err(e) = crate::rollout::machine::canary_step(step) {
                        cx.at(&format!("strategy/canary/steps/{i}"), e);
                    }
                }
            }
            _ => {
                if let Err(e) = crate::rollout::plan(&self.strategy) {
                    cx.at("strategy", e);
                }
            }
        }
        if let Some(a) = &self.alias
            && !crate::template::is_template(a)
            && let Err(e) = crate::registry::check_alias(a)
        {
            cx.at("alias", e);
        }
        let alias = self.alias.as_deref().unwrap_or(crate::registry::SERVED_ALIAS);
        if let Err(e) = crate::rollout::machine::check_preview(&self.strategy, alias) {
            cx.at("strategy/blue_green/preview", e);
        }
        if let Some(b) = &self.route_by
            && b.header.is_some() == b.feature.is_some()
        {
            cx.at("route_by", "`route_by` names exactly one of `header` and `feature`");
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        for (field, v) in [("model", &self.model), ("version", &self.version), ("alias", &self.alias)] {
            if let Some(v) = v {
                out.text(field, v);
            }
        }
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a `rollout:` step runs inside the engine")
    }

    /// A rollout takes its pauses and analyses: a day unless the step says.
    fn default_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(24 * 3600))
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let opt = |v: &Option<String>| v.as_deref().map(cx.text).transpose();
        let args = json!({
            "model": opt(&self.model)?,
            "version": opt(&self.version)?,
            "alias": opt(&self.alias)?,
            "strategy": self.strategy,
            "route_by": self.route_by,
        });
        Ok(ExecSpec::Builtin(BuiltinSpec { op: "rollout".into(), args }).into())
    }
}
