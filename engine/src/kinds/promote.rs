//! `promote:`: move an alias to a version. Only a version whose files, signed registration and
//! provenance check; a protected alias only after a gate on that version passed and an
//! approval was given in the same run. The move is kept with the run, gate and approval that
//! caused it, and audited. Carried out by the engine itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_worker::{BuiltinSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};

/// A `promote:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBlock {
    /// The model (templated; default: the model registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version (templated; default: the version registered in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The alias to move (`production`; templated).
    pub alias: String,
    /// Why, kept with the move (templated; default: the run and step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Kind for PromoteBlock {
    fn check(&self, cx: &mut Check<'_>) {
        if !crate::template::is_template(&self.alias)
            && let Err(e) = crate::registry::check_alias(&self.alias)
        {
            cx.at("alias", e);
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.text("alias", &self.alias);
        for (field, v) in [("model", &self.model), ("version", &self.version), ("reason", &self.reason)] {
            if let Some(v) = v {
                out.text(field, v);
            }
        }
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a `promote:` step runs inside the engine")
    }

    fn default_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(600))
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let opt = |v: &Option<String>| v.as_deref().map(cx.text).transpose();
        let args = json!({
            "model": opt(&self.model)?,
            "version": opt(&self.version)?,
            "alias": (cx.text)(&self.alias)?,
            "reason": opt(&self.reason)?,
        });
        Ok(ExecSpec::Builtin(BuiltinSpec { op: "promote".into(), args }).into())
    }
}
