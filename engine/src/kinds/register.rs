//! `register:`: register a version of a model in the registry from what an upstream step
//! made (by default, the `model` of the upstream `train:` step, with its metadata), signed,
//! with its run's metrics. Carried out by the engine itself; a retry or a crash never makes
//! two versions for one task.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_worker::{BuiltinSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};

/// A `register:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBlock {
    /// The registered model's name (templated); it is made on first use.
    pub model: String,
    /// What to register (templated): `STEP` (every artifact of that step), or `STEP.NAME`
    /// (one of them). Default: the upstream step that made an artifact named `model` (a
    /// `train:` step), with its other artifacts (its metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// The version's tags (values templated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The version's description (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Kind for RegisterBlock {
    fn check(&self, cx: &mut Check<'_>) {
        if self.model.trim().is_empty() {
            cx.at("model", "`model` is empty");
        } else if !crate::template::is_template(&self.model)
            && let Err(e) = crate::registry::check_model_name(&self.model)
        {
            cx.at("model", e);
        }
        for k in self.tags.keys() {
            if let Err(e) = crate::tracking::check_key("tag", k) {
                cx.at(&format!("tags/{k}"), e);
            }
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.text("model", &self.model);
        if let Some(a) = &self.artifact {
            out.text("artifact", a);
        }
        if let Some(d) = &self.description {
            out.text("description", d);
        }
        for (k, v) in &self.tags {
            out.text(&format!("tags/{k}"), v);
        }
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a `register:` step runs inside the engine")
    }

    fn default_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(600))
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let tags: BTreeMap<String, String> =
            self.tags.iter().map(|(k, v)| Ok((k.clone(), (cx.text)(v)?))).collect::<Result<_, String>>()?;
        let upstream: Vec<String> = (cx.upstream)().keys().cloned().collect();
        let args = json!({
            "model": (cx.text)(&self.model)?,
            "artifact": self.artifact.as_deref().map(cx.text).transpose()?,
            "tags": tags,
            "description": self.description.as_deref().map(cx.text).transpose()?.unwrap_or_default(),
            "upstream": upstream,
        });
        Ok(ExecSpec::Builtin(BuiltinSpec { op: "register".into(), args }).into())
    }
}
