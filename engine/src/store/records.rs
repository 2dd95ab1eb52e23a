//! Persisted records. Each carries a format version `v`; decoding accepts every version
//! written so far (tests decode fixtures of each).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::StoredPlan;
use crate::scheduler::{Event, RunState, StepIx};
use sluice_worker::LogStream;

/// The format version this build writes. Version 2 added the checked plan to DAG versions
/// and made the trigger of runs and the status of inbox records closed sets (their text is
/// the same as version 1 wrote).
pub const FORMAT_VERSION: u32 = 2;

fn v1() -> u32 {
    1
}

/// A DAG version: the file's text as it was when a run used it, and its checked plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub hash: String,
    pub name: String,
    pub path: String,
    pub source: String,
    pub stored_at: i64,
    /// The plan as it was compiled (version 2 on): runs of this version are driven, shown and
    /// retried from it, never from the file system. Version 1 kept only the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<StoredPlan>,
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `sluice run`.
    Manual,
    /// `POST /api/v1/pipelines/{name}/runs` (`sluice trigger`).
    Api,
    /// A slot of the pipeline's schedule.
    Cron,
    /// A schedule slot asked for by a backfill.
    Backfill,
    /// An Alertmanager alert matched by `on: - alert`.
    Alert,
    /// A webhook event matched by `on: - webhook`.
    Event,
    /// A retry of an ended run from one of its steps.
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Api => "api",
            Trigger::Cron => "cron",
            Trigger::Backfill => "backfill",
            Trigger::Alert => "alert",
            Trigger::Event => "event",
            Trigger::Retry => "retry",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Trigger, String> {
        serde_json::from_value(Value::String(s.to_string()))
            .map_err(|_| format!("`{s}` is not a trigger (manual, api, cron, backfill, alert, event, retry)"))
    }
}

/// What became of a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored, not yet matched (an event whose handling was cut short stays so).
    Received,
    /// It started at least one run.
    Matched,
    /// Every run it asked for was started earlier by the same alert or key.
    Deduplicated,
    /// A schedule slot skipped or dropped (overlap, catch-up).
    Skipped,
    /// Valid, but no pipeline's `on:` matches it.
    Accepted,
    /// Invalid, or no run could start.
    Rejected,
}

impl InboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Received => "received",
            InboxStatus::Matched => "matched",
            InboxStatus::Deduplicated => "deduplicated",
            InboxStatus::Skipped => "skipped",
            InboxStatus::Accepted => "accepted",
            InboxStatus::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for InboxStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<InboxStatus, String> {
        serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
            format!(
                "`{s}` is not an event status (received, matched, deduplicated, skipped, accepted, rejected)"
            )
        })
    }
}

/// A run's summary; the event log is the source of truth, this is its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: u64,
    pub pipeline: String,
    pub dag: String,
    pub params: Map<String, Value>,
    /// Why it started.
    pub trigger: Trigger,
    /// The details of the trigger: the schedule slot, the event id and alert, the run retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Value>,
    pub state: RunState,
    pub steps: u32,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// How the run uses the step cache (`--no-cache`, `--refresh STEP`).
    #[serde(default, skip_serializing_if = "RunCache::is_default")]
    pub cache: RunCache,
    /// Who started it, as the audit log names them (`token:ci`, `cron:...`, `local:alice`);
    /// none in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Its tags (`sluice run --tag team=fraud`), searched as `tags.team`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// How a run uses the step cache, beyond what its steps' `cache:` say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunCache {
    /// No step of the run reuses a result or stores one (`--no-cache`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
    /// Steps that run even when the cache holds their result, and store their new one
    /// (`--refresh STEP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refresh: Vec<String>,
}

impl RunCache {
    pub fn is_default(&self) -> bool {
        !self.off && self.refresh.is_empty()
    }
}

impl RunRecord {
    pub fn new(
        id: u64,
        pipeline: &str,
        dag: &str,
        params: Map<String, Value>,
        trigger: Trigger,
        steps: u32,
        now: i64,
    ) -> Self {
        Self {
            v: FORMAT_VERSION,
            id,
            pipeline: pipeline.to_string(),
            dag: dag.to_string(),
            params,
            trigger,
            cause: None,
            state: RunState::Pending,
            steps,
            created_at: now,
            started_at: None,
            finished_at: None,
            cache: RunCache::default(),
            actor: None,
            tags: Default::default(),
        }
    }
}

/// What became of an event the server received (a webhook, an alert notification, a
/// schedule slot): kept so that an operator can see why a run did or did not start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: u64,
    /// `alertmanager`, `schedule`, or the `{source}` of a generic webhook.
    pub source: String,
    pub received_at: i64,
    pub status: InboxStatus,
    /// Why, in a sentence.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<u64>,
    /// Per alert or per matching pipeline: what happened to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
    /// The payload (cut at 64 KiB), or the bytes that could not be read.
    #[serde(default)]
    pub payload: Value,
}

/// A key that a run claims, so that the same schedule slot or the same alert does not
/// start a second run: written in one transaction with the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    #[serde(default = "v1")]
    pub v: u32,
    pub run: u64,
    pub at: i64,
}

/// One entry of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub seq: u64,
    /// When it was applied, in ms since the epoch: the `now` the machine saw.
    pub at: i64,
    pub event: Event,
}

/// The OS process of a running attempt, so a restarted engine can kill what it orphaned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub step: StepIx,
    pub item: u32,
    pub attempt: u32,
    pub pid: u32,
    pub start_time: u64,
}

/// A chunk of a step's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub item: u32,
    pub attempt: u32,
    pub stream: LogStream,
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Outcome;

    /// Records exactly as version 1 wrote them must keep decoding.
    #[test]
    fn decodes_version_1_records() {
        let run: RunRecord = serde_json::from_str(
            r#"{"v":1,"id":7,"pipeline":"demo","dag":"ab12","params":{"n":3},"trigger":"manual",
                "state":"succeeded","steps":4,"created_at":1,"started_at":2,"finished_at":3}"#,
        )
        .unwrap();
        assert_eq!(run.state, RunState::Succeeded);
        let ev: EventRecord = serde_json::from_str(
            r#"{"v":1,"seq":4,"at":99,"event":{"type":"finished","step":2,"item":0,"attempt":1,
                "outcome":{"outcome":"succeeded","outputs":{"rows":10}}}}"#,
        )
        .unwrap();
        match ev.event {
            Event::Finished { outcome: Outcome::Succeeded { outputs, artifacts, .. }, .. } => {
                assert_eq!(outputs["rows"], 10);
                assert!(artifacts.is_empty(), "older records have none");
            }
            other => panic!("decoded {other:?}"),
        }
        let ev: EventRecord = serde_json::from_str(
            r#"{"v":1,"seq":0,"at":1,"event":{"type":"prepared","step":0,"outcome":{"decision":"map","items":["a","b"]}}}"#,
        )
        .unwrap();
        assert!(matches!(ev.event, Event::Prepared { .. }));
        let p: ProcRecord =
            serde_json::from_str(r#"{"v":1,"step":1,"item":0,"attempt":2,"pid":77,"start_time":123}"#)
                .unwrap();
        assert_eq!(p.pid, 77);
        // Version 1 kept a DAG version's text only; version 2 adds its checked plan.
        let dag: DagRecord = serde_json::from_str(
            r#"{"v":1,"hash":"ab12","name":"demo","path":"dags/demo.yaml","source":"name: demo","stored_at":5}"#,
        )
        .unwrap();
        assert!(dag.plan.is_none());
        // Version 1 wrote triggers and inbox statuses as text: the same text decodes to the enums.
        for (text, want) in [
            ("manual", Trigger::Manual),
            ("api", Trigger::Api),
            ("cron", Trigger::Cron),
            ("backfill", Trigger::Backfill),
            ("alert", Trigger::Alert),
            ("event", Trigger::Event),
            ("retry", Trigger::Retry),
        ] {
            let r: RunRecord = serde_json::from_value(serde_json::json!({
                "v": 1, "id": 1, "pipeline": "p", "dag": "h", "params": {}, "trigger": text,
                "state": "pending", "steps": 1, "created_at": 0
            }))
            .unwrap();
            assert_eq!(r.trigger, want);
            assert_eq!(text.parse::<Trigger>().unwrap(), want);
        }
        for text in ["received", "matched", "deduplicated", "skipped", "accepted", "rejected"] {
            let r: InboxRecord = serde_json::from_value(serde_json::json!({
                "v": 1, "id": 3, "source": "alertmanager", "received_at": 9, "status": text,
                "reason": "why", "payload": null
            }))
            .unwrap();
            assert_eq!(r.status.as_str(), text);
        }
        let m: Mark = serde_json::from_str(r#"{"v":1,"run":4,"at":8}"#).unwrap();
        assert_eq!(m.run, 4);
        assert!("bench".parse::<Trigger>().unwrap_err().contains("not a trigger"));
    }
}
