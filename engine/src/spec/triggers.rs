//! The spec of what starts a pipeline besides a person: a cron `schedule:` and `on:` events
//! (Alertmanager alerts, generic webhooks).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::syntax::DurationSpec;

/// What a schedule does with the slots it missed while no server ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Missed slots are dropped; the schedule goes on from now (the default).
    #[default]
    None,
    /// Only the most recent missed slot runs.
    Latest,
    /// Every missed slot runs, oldest first, up to `catchup_limit` (the newest ones are kept).
    All,
}

/// What a schedule does when its slot comes while an earlier run of the pipeline still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The slot is skipped (recorded as skipped); the default, like Kubernetes' `Forbid`.
    #[default]
    Skip,
    /// The run is created at once and starts when the earlier runs have finished.
    Queue,
    /// The run starts at once, beside the earlier ones.
    Allow,
}

/// A cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields as in crontab and Kubernetes CronJob (`min hour day month weekday`), or
    /// six or seven with seconds first and an optional year (`sec min hour day month weekday
    /// [year]`). Names (`MON`, `JAN`) and the macros `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly` work.
    pub cron: String,
    /// The IANA time zone the fields are read in (default `UTC`), such as `Asia/Dubai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub catchup: Catchup,
    /// With `catchup: all`, the most missed slots that run (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_limit: Option<u32>,
    #[serde(default)]
    pub overlap: Overlap,
    /// Parameter values for scheduled runs (the pipeline's defaults otherwise).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Value>,
    /// Set to false to keep the schedule in the file but stop firing it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Which state of an alert starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Firing alerts only (the default): a resolved alert starts nothing.
    #[default]
    Firing,
    /// Resolved alerts only.
    Resolved,
    /// Both.
    Any,
}

/// Matches alerts of Prometheus Alertmanager's webhook (`POST /api/v1/events/alertmanager`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertMatch {
    /// The alert's `alertname` label.
    pub name: String,
    /// Labels the alert must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub status: AlertStatus,
    /// Notifications of the same alert (same fingerprint) within this window start one run
    /// (default 1h; `0s` starts a run on every notification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationSpec>,
}

/// Matches JSON posted to the generic webhook `POST /api/v1/events/{source}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookMatch {
    /// The `{source}` of the URL (letters, digits, `-`, `_`, `.`).
    pub source: String,
    /// Fields the payload must have with exactly these values; keys are dotted paths into
    /// the payload (`repository.name`).
    #[serde(rename = "match", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

/// One entry of `on:`: an event that starts the pipeline, and how its fields become params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookMatch>,
    /// A rollout of a model that ended (`{model: churn, status: aborted}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutMatch>,
    /// Drift that Sluice's live monitor found in a served model's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMatch>,
    /// Parameter values as templates over the event: `{{ alert.labels.feature }}`,
    /// `{{ alert.annotations.summary }}`, `{{ event.repository.name }}`. For alerts, a
    /// parameter named like one of the alert's labels (or annotations) gets its value without
    /// a template.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, String>,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutEnd {
    /// Aborted: an analysis failed or a person aborted it (the default).
    #[default]
    Aborted,
    Succeeded,
    Any,
}

/// Matches the end of a rollout (event source `sluice.rollout`). Its fields (`model`,
/// `alias`, `version`, `stable`, `status`, `reason`, `rollout`) fill parameters of the same
/// name, and templates read them as `{{ rollout.reason }}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutMatch {
    pub model: String,
    /// Only rollouts of this alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default)]
    pub status: RolloutEnd,
}

/// Matches drift found by a served model's monitor (event source `sluice.drift`). Its fields
/// (`model`, `version`, `share`, `drifted_columns`, `method`) fill parameters of the same
/// name, and templates read them as `{{ drift.drifted_columns }}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftMatch {
    pub model: String,
    /// Drift of the same model within this window starts one run (default 1h, as alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationSpec>,
}
