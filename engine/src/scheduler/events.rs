//! The run machine's vocabulary: the events it consumes (and the event log stores) and the
//! actions it asks the driver to carry out.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::state::{RunState, StepState};
use super::{Millis, ResourceRequest, StepIx};

/// What `when:`/`map:` evaluation decided for a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum PrepareOutcome {
    /// Run one attempt.
    Run,
    /// Run one attempt per item.
    Map { items: Vec<Value> },
    /// `when:` was false.
    Skip { reason: String },
    /// The condition or the list could not be evaluated.
    Error { message: String },
}

/// A file an attempt produced, placed in the data folder's artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    /// The declared name (`model`).
    pub name: String,
    /// The file's path relative to the step's work folder.
    pub file: String,
    /// `sha256:<hex>` of its content.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// The attempt whose result a cached attempt reused, and the key they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CachedFrom {
    pub run: u64,
    pub item: u32,
    pub attempt: u32,
    /// `sha256:<hex>` of the key document (docs/artifacts.md).
    pub key: String,
}

/// How an attempt ended, as reported by its executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Succeeded {
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        /// The files it declared, as stored (after the executor succeeded).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<Produced>,
        /// Set when the step did not run: its result was taken from the step cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached: Option<CachedFrom>,
    },
    Failed {
        retryable: bool,
        message: String,
    },
    TimedOut {
        message: String,
    },
    Cancelled {
        message: String,
    },
}

impl Outcome {
    /// A success that ran, with its outputs (artifacts are added once they are stored).
    pub fn succeeded(outputs: Map<String, Value>) -> Self {
        Outcome::Succeeded { outputs, artifacts: Vec::new(), cached: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// The backoff delay before the next attempt is over.
    Retry,
    /// The attempt's deadline.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    Timeout,
    Cancel,
    Interrupt,
}

/// An input to the machine. These are what the run's event log stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Event {
    Start,
    Prepared {
        step: StepIx,
        outcome: PrepareOutcome,
    },
    /// The admission controller gave the task its resources: start an attempt.
    Admitted {
        step: StepIx,
        item: u32,
    },
    /// The task can never get its resources here.
    Rejected {
        step: StepIx,
        item: u32,
        reason: String,
    },
    Finished {
        step: StepIx,
        item: u32,
        attempt: u32,
        outcome: Outcome,
    },
    Timer {
        step: StepIx,
        item: u32,
        attempt: u32,
        kind: TimerKind,
    },
    Cancel,
    /// Graceful shutdown: stop starting attempts, let running ones stop, keep the rest.
    Interrupt,
    /// A new engine process takes over: attempts that were running are lost and run again.
    Resume,
    /// Before the start of a retry run: the step's result is taken from an earlier run, so
    /// it succeeds without running when its turn comes. `items` are a mapped step's items;
    /// `outputs` its outputs (a list, one per item, for a mapped step).
    Reused {
        step: StepIx,
        from_run: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<Vec<Value>>,
        #[serde(default)]
        outputs: Value,
        /// Its artifacts, by item.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty", with = "item_keys")]
        artifacts: std::collections::BTreeMap<u32, Vec<Produced>>,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Prepare { step: StepIx },
    Enqueue { step: StepIx, item: u32, priority: i32, resources: ResourceRequest },
    Withdraw { step: StepIx, item: u32 },
    Release { step: StepIx, item: u32 },
    Execute { step: StepIx, item: u32, attempt: u32 },
    ArmTimer { step: StepIx, item: u32, attempt: u32, kind: TimerKind, at: Millis },
    Kill { step: StepIx, item: u32, attempt: u32, reason: KillReason },
    StepChanged { step: StepIx, state: StepState },
    RunChanged { state: RunState },
}

/// A map by item number, written with the numbers as JSON object keys (`"0"`). Read back by
/// hand: inside an internally tagged enum such as [`Event`], serde buffers the map and a
/// number key arrives as text, which `u32` alone does not take.
mod item_keys {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Produced;

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<u32, Vec<Produced>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let by_text: BTreeMap<String, &Vec<Produced>> = m.iter().map(|(k, v)| (k.to_string(), v)).collect();
        by_text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<Produced>>, D::Error> {
        BTreeMap::<String, Vec<Produced>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u32>()
                    .map(|k| (k, v))
                    .map_err(|_| D::Error::custom(format!("`{k}` is not an item number")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_steps_artifacts_by_item_survive_the_event_log() {
        let a = Produced {
            name: "model".into(),
            file: "m.bin".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 3,
            media_type: "application/octet-stream".into(),
        };
        let e = Event::Reused {
            step: 1,
            from_run: 4,
            items: None,
            outputs: Value::Null,
            artifacts: [(0, vec![a.clone()]), (12, vec![a])].into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"12\""), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
    }
}
