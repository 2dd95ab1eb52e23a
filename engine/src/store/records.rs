//! Persisted records. Each carries a format version `v`; decoding accepts every version
//! written so far (tests decode fixtures of each).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::scheduler::{Event, RunState, StepIx};
use sluice_worker::LogStream;

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 1;

fn v1() -> u32 {
    1
}

/// A DAG version: the file's text as it was when a run used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub hash: String,
    pub name: String,
    pub path: String,
    pub source: String,
    pub stored_at: i64,
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
    /// Why it started: `manual`, `api`, `cron`, `backfill`, `event`, `retry`.
    pub trigger: String,
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
}

impl RunRecord {
    pub fn new(
        id: u64,
        pipeline: &str,
        dag: &str,
        params: Map<String, Value>,
        trigger: &str,
        steps: u32,
        now: i64,
    ) -> Self {
        Self {
            v: FORMAT_VERSION,
            id,
            pipeline: pipeline.to_string(),
            dag: dag.to_string(),
            params,
            trigger: trigger.to_string(),
            cause: None,
            state: RunState::Pending,
            steps,
            created_at: now,
            started_at: None,
            finished_at: None,
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
    /// `matched` (a run started), `deduplicated`, `skipped`, `accepted` (valid, nothing
    /// matched) or `rejected` (invalid).
    pub status: String,
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
            Event::Finished { outcome: Outcome::Succeeded { outputs }, .. } => {
                assert_eq!(outputs["rows"], 10)
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
    }
}
