//! A run as a document: its record, and per step its state, attempts (with how each ended)
//! and outputs. Rebuilt from the event log, so it is exact for any run, live or finished.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Engine, Result};
use crate::scheduler::{Action, Event, Outcome, StepIx, StepState, TimerKind};
use crate::store::RunRecord;

/// One attempt of one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptReport {
    pub item: u32,
    pub attempt: u32,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// `running`, `succeeded`, `failed`, `timed_out`, `cancelled`, or `lost` (its engine
    /// stopped; it ran again as a new attempt).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub id: String,
    pub state: StepState,
    /// The run this step's result was taken from (a retry from a later step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u64>,
    pub attempts: Vec<AttemptReport>,
    pub outputs: Value,
    /// Why it was skipped or could not run, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub v: u32,
    #[serde(flatten)]
    pub record: RunRecord,
    pub steps: Vec<StepReport>,
}

impl Engine {
    /// The report of run `id`.
    pub fn report(&self, id: u64) -> Result<RunReport> {
        let mut attempts: BTreeMap<(StepIx, u32, u32), AttemptReport> = BTreeMap::new();
        let mut reasons: BTreeMap<StepIx, String> = BTreeMap::new();
        let mut reused: BTreeMap<StepIx, u64> = BTreeMap::new();
        let replayed = self.replay(id, |plan, e, _, actions| {
            for a in actions {
                if let Action::Execute { step, item, attempt } = *a {
                    attempts.insert(
                        (step, item, attempt),
                        AttemptReport {
                            item,
                            attempt,
                            started_at: e.at,
                            finished_at: None,
                            outcome: "running".into(),
                            message: None,
                        },
                    );
                }
            }
            match &e.event {
                Event::Reused { step, from_run, .. } => {
                    reused.insert(*step, *from_run);
                }
                Event::Finished { step, item, attempt, outcome } => {
                    if let Some(a) = attempts.get_mut(&(*step, *item, *attempt))
                        && a.finished_at.is_none()
                    {
                        a.finished_at = Some(e.at);
                        let (what, message) = match outcome {
                            Outcome::Succeeded { .. } => ("succeeded", None),
                            Outcome::Failed { message, .. } => ("failed", Some(message)),
                            Outcome::TimedOut { message } => ("timed_out", Some(message)),
                            Outcome::Cancelled { message } => ("cancelled", Some(message)),
                        };
                        a.outcome = what.to_string();
                        a.message = message.cloned();
                    }
                }
                Event::Timer { step, item, attempt, kind: TimerKind::Timeout } => {
                    if let Some(a) = attempts.get_mut(&(*step, *item, *attempt))
                        && a.finished_at.is_none()
                    {
                        let limit = plan.core[*step as usize].timeout_ms.unwrap_or_default();
                        a.finished_at = Some(e.at);
                        a.outcome = "timed_out".into();
                        a.message = Some(format!("ran past its timeout of {limit}ms"));
                    }
                }
                Event::Resume => {
                    for a in attempts.values_mut().filter(|a| a.finished_at.is_none()) {
                        a.finished_at = Some(e.at);
                        a.outcome = "lost".into();
                        a.message = Some("the engine stopped while it ran; it ran again".into());
                    }
                }
                Event::Prepared { step, outcome } => {
                    use crate::scheduler::PrepareOutcome::{Error, Skip};
                    if let Skip { reason: m } | Error { message: m } = outcome {
                        reasons.insert(*step, m.clone());
                    }
                }
                Event::Rejected { step, reason, .. } => {
                    reasons.insert(*step, reason.clone());
                }
                _ => {}
            }
        })?;
        let (record, plan, machine) = (replayed.record.clone(), replayed.plan.clone(), &replayed.machine);
        let steps = plan
            .ids
            .iter()
            .enumerate()
            .map(|(ix, id)| {
                let ix = ix as StepIx;
                StepReport {
                    id: id.clone(),
                    state: machine.step_state(ix),
                    reused_from: reused.get(&ix).copied(),
                    attempts: attempts.range((ix, 0, 0)..(ix + 1, 0, 0)).map(|(_, a)| a.clone()).collect(),
                    outputs: replayed.notes.outputs.get(&ix).cloned().unwrap_or(Value::Null),
                    reason: reasons.remove(&ix),
                }
            })
            .collect();
        Ok(RunReport { v: 1, record, steps })
    }
}
