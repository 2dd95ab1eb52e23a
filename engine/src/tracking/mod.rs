//! Experiment tracking: experiments, tracking runs and their params, tags and metric series,
//! in MLflow's model (so MLflow's clients work against Sluice), and the rules they keep.
//!
//! A *tracking run* is MLflow's "run": Sluice makes one for every attempt of a step (its
//! `$SLUICE_METRICS` points, a `train:` step's epochs and a plugin's metrics go there, and the
//! step's own `mlflow` calls reach it through `MLFLOW_RUN_ID`), and a client may create others
//! through MLflow's API. Each pipeline has an experiment of its name. A pipeline run's metrics
//! are those of its steps' tracking runs. `search.rs` is the filter grammar over runs.

pub mod search;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the records below.
pub const RECORD_VERSION: u32 = 1;
/// MLflow's default experiment, which always exists.
pub const DEFAULT_EXPERIMENT: u64 = 0;
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";
/// MLflow's limits.
pub const MAX_KEY: usize = 250;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_TAG_VALUE: usize = 8000;
pub const MAX_NAME: usize = 500;
/// The most metrics, params and tags one `log-batch` takes (MLflow's: 1000 in all, at most
/// 100 params and 100 tags).
pub const MAX_BATCH: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;

fn v1() -> u32 {
    RECORD_VERSION
}

/// A tracking run's status, spelled as MLflow spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] =
        [RunStatus::Running, RunStatus::Scheduled, RunStatus::Finished, RunStatus::Failed, RunStatus::Killed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Failed | RunStatus::Killed)
    }
}

/// Whether an experiment or run is deleted (MLflow keeps deleted ones, marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    #[default]
    Active,
    Deleted,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Deleted => "deleted",
        }
    }
}

/// An experiment: a named group of tracking runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: u64,
    pub name: String,
    /// Where its runs' artifacts go (`mlflow-artifacts:/<id>`: the artifact store, through
    /// the server's proxy).
    pub artifact_location: String,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

/// The step attempt a tracking run belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    pub step_ix: u32,
    pub item: u32,
    pub attempt: u32,
}

/// The newest value of a metric (MLflow's rule: the greatest (step, timestamp, value)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    pub value: f64,
    pub step: i64,
    pub timestamp: i64,
}

impl Latest {
    /// Whether `self` replaces `old` as the newest value.
    pub fn supersedes(&self, old: &Latest) -> bool {
        (self.step, self.timestamp).cmp(&(old.step, old.timestamp)).then(self.value.total_cmp(&old.value))
            != std::cmp::Ordering::Less
    }
}

/// A tracking run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingRun {
    #[serde(default = "v1")]
    pub v: u32,
    /// 32 hex digits.
    pub id: String,
    pub experiment: u64,
    pub name: String,
    pub user: String,
    pub status: RunStatus,
    pub start: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    pub artifact_uri: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Each metric's newest value; the series are kept apart.
    #[serde(default)]
    pub metrics: BTreeMap<String, Latest>,
    /// The step attempt it belongs to, for the runs Sluice makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
}

/// One point of a metric's series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// The training step (epoch, iteration) it belongs to; 0 when not given.
    pub step: i64,
    /// When, ms since the epoch.
    pub timestamp: i64,
}

/// A point of a pipeline run's metrics: which step, item and attempt recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The pipeline step (its id).
    pub task: String,
    pub item: u32,
    pub attempt: u32,
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp: i64,
}

/// Checks a metric, param or tag key, an experiment's or a run's name (MLflow's rule: at
/// most 250 characters of letters, digits, `_`, `-`, `.`, ` `, `/` and `:`; never a path
/// that climbs out, since keys name artifact files too).
pub fn check_key(what: &str, key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("a {what} key must not be empty"));
    }
    if key.chars().count() > MAX_KEY {
        return Err(format!("the {what} key `{}…` is longer than {MAX_KEY} characters", short(key)));
    }
    if let Some(c) = key.chars().find(|c| !(c.is_alphanumeric() || "_-. /:".contains(*c))) {
        return Err(format!(
            "the {what} key `{}` holds `{}`; keys may hold only letters, digits, `_`, `-`, `.`, spaces, `/` and `:`",
            short(key),
            c.escape_default()
        ));
    }
    if key.split('/').any(|part| part == "..") || key.starts_with('/') {
        return Err(format!(
            "the {what} key `{}` may not climb out of its folder (`..`, a leading `/`)",
            short(key)
        ));
    }
    Ok(())
}

/// Checks a metric's value: finite numbers only (a gate cannot compare NaN).
pub fn check_value(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(format!("the metric `{}` is {value}; only finite numbers are recorded", short(key)))
    }
}

/// Checks a param's or tag's value length.
pub fn check_text(what: &str, key: &str, value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("the {what} `{}` is longer than {max} characters", short(key)));
    }
    Ok(())
}

/// A new tracking run id: 32 random hex digits, as MLflow's.
pub fn new_run_id() -> Result<String, String> {
    crate::security::random::<16>().map(|b| crate::security::hex(&b))
}

/// A name as messages show it: at most 60 characters.
pub fn short(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A pipeline param's value as text, as `params.x = '...'` compares it: a string as it is,
/// anything else as JSON.
pub fn param_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The attributes a filter may name on tracking runs (MLflow's).
pub const RUN_ATTRIBUTES: &[(&str, search::Kind)] = &[
    ("run_id", search::Kind::Text),
    ("run_name", search::Kind::Text),
    ("status", search::Kind::Text),
    ("user_id", search::Kind::Text),
    ("artifact_uri", search::Kind::Text),
    ("start_time", search::Kind::Number),
    ("end_time", search::Kind::Number),
];

impl search::Searchable for TrackingRun {
    fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).map(|l| l.value)
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, name: &str) -> Option<search::Value<'_>> {
        use search::Value::{Number, Text};
        Some(match name {
            "run_id" => Text(self.id.as_str().into()),
            "run_name" => Text(self.name.as_str().into()),
            "status" => Text(self.status.as_str().into()),
            "user_id" => Text(self.user.as_str().into()),
            "artifact_uri" => Text(self.artifact_uri.as_str().into()),
            "start_time" => Number(self.start as f64),
            "end_time" => Number(self.end? as f64),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflows_rule() {
        assert!(check_key("metric", "val_loss").is_ok());
        assert!(check_key("metric", "eval/auc:test 1.0").is_ok());
        assert!(check_key("metric", "").unwrap_err().contains("empty"));
        assert!(check_key("param", "a\u{7}b").unwrap_err().contains("\\u{7}"));
        assert!(check_key("tag", "../x").unwrap_err().contains("climb"));
        assert!(check_key("tag", "/etc").unwrap_err().contains("climb"));
        assert!(check_key("tag", &"k".repeat(251)).unwrap_err().contains("250"));
        assert!(check_value("loss", f64::NAN).unwrap_err().contains("NaN"));
        assert!(check_value("loss", f64::INFINITY).is_err());
    }

    #[test]
    fn the_latest_value_is_the_greatest_step_then_time() {
        let l = |step, timestamp, value| Latest { value, step, timestamp };
        assert!(l(2, 0, 0.1).supersedes(&l(1, 9, 0.9)));
        assert!(!l(1, 9, 0.9).supersedes(&l(2, 0, 0.1)));
        assert!(l(1, 5, 0.1).supersedes(&l(1, 4, 0.9)));
        assert!(l(1, 5, 0.5).supersedes(&l(1, 5, 0.5)), "a repeat replaces");
        assert!(!l(1, 5, 0.4).supersedes(&l(1, 5, 0.5)));
    }
}
