//! `approval:`: wait for a person's decision. The step holds no slot while it waits (the
//! core's `waiting` state, durable across restarts); someone with the role approves or
//! rejects it (`sluice approve`, `POST /api/v1/runs/{run}/steps/{step}/approve`), never the
//! one who started the run (four eyes); nobody deciding within `timeout` fails it.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::syntax::DurationSpec;

/// How long an approval waits when its block does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// An `approval:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBlock {
    /// The least role that may decide: `approver` (default) or `admin`.
    #[serde(default = "approver")]
    pub role: String,
    /// How long to wait for a decision (default 24h); then the step times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// What the approver is asked (templated; shown with the waiting step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn approver() -> String {
    "approver".into()
}

impl ApprovalBlock {
    /// The role that may decide.
    pub fn role(&self) -> Option<crate::security::Role> {
        crate::security::Role::parse(&self.role).ok()
    }
}

impl Kind for ApprovalBlock {
    fn check(&self, cx: &mut Check<'_>) {
        match self.role() {
            Some(crate::security::Role::Approver | crate::security::Role::Admin) => {}
            _ => cx.at("role", format!("`{}` cannot decide approvals: use `approver` or `admin`", self.role)),
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            cx.at("timeout", "`timeout` must be more than 0");
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        if let Some(m) = &self.message {
            out.text("message", m);
        }
    }

    fn waits(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0))
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("an `approval:` step runs nothing")
    }

    fn render(&self, _: &Render<'_>) -> Result<Rendered, String> {
        Err("an approval step is decided, not run".into())
    }
}
