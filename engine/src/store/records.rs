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
    /// Why it started: `manual`, later `cron`, `event`.
    pub trigger: String,
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
            state: RunState::Pending,
            steps,
            created_at: now,
            started_at: None,
            finished_at: None,
        }
    }
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
