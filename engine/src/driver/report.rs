//! A run as one document, [`RunReport`]: its record, and per step its state, tasks, attempts
//! (with how each ended), outputs and why it ended as it did. Rebuilt from the event log in one
//! replay, so it is exact for any run, live or finished. `sluice show` (text and JSON),
//! `sluice status` and `GET /api/v1/runs/{id}` all render this one document.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Engine, Result};
use crate::scheduler::{
    Action, CachedFrom, Event, KillReason, Outcome, PrepareOutcome, RunState, StepIx, StepState, TaskState,
};
use crate::store::Trigger;

/// The version of the report's shape.
pub const REPORT_VERSION: u32 = 2;

/// How an attempt ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    Running,
    Succeeded,
    /// It did not run: the step cache held the result of an attempt with the same key.
    Cached,
    /// The step failed (its exit code, a crash, bad outputs).
    Failed,
    /// It ran past the step's timeout and was stopped.
    TimedOut,
    /// The run was cancelled while it ran.
    Cancelled,
    /// The engine shut down while it ran; the task runs again when the run resumes.
    Interrupted,
    /// Its engine stopped without a word (a crash); it ran again as a new attempt.
    Lost,
}

/// One attempt of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptReport {
    pub item: u32,
    pub attempt: u32,
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub outcome: AttemptEnd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Retrying,
    /// Waits for a decision (an `approval:` step).
    Waiting,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// One task of a step: the step itself, or one item of a mapped step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskReport {
    pub item: u32,
    pub state: TaskStatus,
    /// How many attempts it has had.
    pub attempts: u32,
    /// When its next attempt is queued, while it waits out a retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
    /// Until when it waits for a decision, if it has a deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_by: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    pub id: String,
    /// The step's kind (`process`, `container`, `wasm`, `train`).
    pub kind: String,
    pub state: StepState,
    /// When it first ran and when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The run this step's result was taken from (a retry from a later step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u64>,
    /// The results its tasks took from the step cache: the attempts they came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cached: Vec<CachedFrom>,
    /// How many tasks it has: 1, or a mapped step's items.
    pub items: usize,
    pub tasks: Vec<TaskReport>,
    /// Every attempt of every task, in order.
    pub attempts: Vec<AttemptReport>,
    /// What it wrote to `SLUICE_OUTPUTS` (a list, one per item, for a mapped step).
    pub outputs: Value,
    /// Why it did not succeed: skipped by `when:`, not preparable, not admissible, or its
    /// last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A run: its record and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    pub v: u32,
    pub id: u64,
    pub pipeline: String,
    /// The DAG version it runs.
    pub dag: String,
    pub state: RunState,
    pub trigger: Trigger,
    /// The trigger's details: the schedule slot, the event and alert, the run retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Value>,
    pub params: Map<String, Value>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// How many events its log holds.
    pub events: usize,
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// Whether the run has ended for good.
    pub fn ended(&self) -> bool {
        self.state.is_terminal()
    }
}

/// What one replay gathers per step besides the machine's state.
#[derive(Default)]
struct Facts {
    started_at: Option<i64>,
    finished_at: Option<i64>,
    reused_from: Option<u64>,
    cached: Vec<CachedFrom>,
    /// A reason that wins over attempt messages: skipped, not preparable, not admissible.
    reason: Option<String>,
    /// The last failure's message; a later success clears it.
    failure: Option<String>,
}

/// Ends an attempt that is still open (a later word on it changes nothing).
fn end(
    attempts: &mut BTreeMap<(StepIx, u32, u32), AttemptReport>,
    key: (StepIx, u32, u32),
    at: i64,
    outcome: AttemptEnd,
    message: Option<String>,
) {
    if let Some(a) = attempts.get_mut(&key)
        && a.finished_at.is_none()
    {
        a.finished_at = Some(at);
        a.duration_ms = Some(at - a.started_at);
        a.outcome = outcome;
        a.message = message;
    }
}

fn span(from: Option<i64>, to: Option<i64>) -> Option<i64> {
    Some(to? - from?)
}

impl Engine {
    /// The report of run `id`.
    pub fn report(&self, id: u64) -> Result<RunReport> {
        let mut attempts: BTreeMap<(StepIx, u32, u32), AttemptReport> = BTreeMap::new();
        let mut facts: BTreeMap<StepIx, Facts> = BTreeMap::new();
        // The run's state before each event, as the machine saw it.
        let mut run_state = RunState::Pending;
        let replayed = self.replay(id, |plan, e, accepted, actions| {
            match &e.event {
                Event::Finished { step, item, attempt, outcome } if accepted => {
                    let f = facts.entry(*step).or_default();
                    let key = (*step, *item, *attempt);
                    match outcome {
                        Outcome::Succeeded { cached: Some(from), .. } => {
                            f.failure = None;
                            let message = format!(
                                "the step cache held the result of run {} (attempt {})",
                                from.run, from.attempt
                            );
                            f.cached.push(from.clone());
                            end(&mut attempts, key, e.at, AttemptEnd::Cached, Some(message));
                        }
                        Outcome::Succeeded { .. } => {
                            f.failure = None;
                            end(&mut attempts, key, e.at, AttemptEnd::Succeeded, None);
                        }
                        // A shutdown stopped it: not the step's failure; it runs again.
                        Outcome::Failed { message, .. }
                        | Outcome::TimedOut { message }
                        | Outcome::Cancelled { message }
                            if run_state == RunState::Interrupting =>
                        {
                            end(&mut attempts, key, e.at, AttemptEnd::Interrupted, Some(message.clone()))
                        }
                        Outcome::Failed { message, .. } => {
                            f.failure = Some(message.clone());
                            end(&mut attempts, key, e.at, AttemptEnd::Failed, Some(message.clone()));
                        }
                        Outcome::TimedOut { message } => {
                            f.failure = Some(message.clone());
                            end(&mut attempts, key, e.at, AttemptEnd::TimedOut, Some(message.clone()));
                        }
                        Outcome::Cancelled { message } => {
                            f.failure = Some(message.clone());
                            end(&mut attempts, key, e.at, AttemptEnd::Cancelled, Some(message.clone()));
                        }
                    }
                }
                Event::Resume => {
                    for a in attempts.values_mut().filter(|a| a.finished_at.is_none()) {
                        a.finished_at = Some(e.at);
                        a.duration_ms = Some(e.at - a.started_at);
                        a.outcome = AttemptEnd::Lost;
                        a.message = Some("the engine stopped while it ran; it ran again".into());
                    }
                }
                Event::Reused { step, from_run, .. } => {
                    facts.entry(*step).or_default().reused_from = Some(*from_run)
                }
                Event::Prepared {
                    step,
                    outcome: PrepareOutcome::Skip { reason: m } | PrepareOutcome::Error { message: m },
                } if accepted => facts.entry(*step).or_default().reason = Some(m.clone()),
                Event::Rejected { step, reason, .. } if accepted => {
                    facts.entry(*step).or_default().reason = Some(reason.clone())
                }
                _ => {}
            }
            for action in actions {
                match *action {
                    Action::Execute { step, item, attempt } => {
                        attempts.insert(
                            (step, item, attempt),
                            AttemptReport {
                                item,
                                attempt,
                                started_at: e.at,
                                finished_at: None,
                                duration_ms: None,
                                outcome: AttemptEnd::Running,
                                message: None,
                            },
                        );
                    }
                    // The machine stopped it: its late result, if any, is fenced off.
                    Action::Kill { step, item, attempt, reason: KillReason::Timeout } => {
                        let limit = plan.core[step as usize].timeout_ms.unwrap_or_default();
                        let message = format!(
                            "ran past its timeout of {}",
                            humantime::format_duration(std::time::Duration::from_millis(limit))
                        );
                        facts.entry(step).or_default().failure = Some(message.clone());
                        end(&mut attempts, (step, item, attempt), e.at, AttemptEnd::TimedOut, Some(message));
                    }
                    Action::Kill { step, item, attempt, reason: KillReason::Cancel } => {
                        end(
                            &mut attempts,
                            (step, item, attempt),
                            e.at,
                            AttemptEnd::Cancelled,
                            Some("the run was cancelled".into()),
                        );
                    }
                    Action::StepChanged { step, state } => {
                        let f = facts.entry(step).or_default();
                        if state == StepState::Running {
                            f.started_at.get_or_insert(e.at);
                        }
                        if state.is_terminal() {
                            f.finished_at = Some(e.at);
                        }
                    }
                    Action::RunChanged { state } => run_state = state,
                    _ => {}
                }
            }
        })?;
        let (record, plan, machine) = (&replayed.record, &replayed.plan, &replayed.machine);
        let steps = plan
            .ids
            .iter()
            .enumerate()
            .map(|(ix, id)| {
                let ix = ix as StepIx;
                let f = facts.remove(&ix).unwrap_or_default();
                let state = machine.step_state(ix);
                let tasks: Vec<TaskReport> = machine
                    .tasks(ix)
                    .iter()
                    .enumerate()
                    .map(|(item, t)| TaskReport {
                        item: item as u32,
                        state: TaskStatus::of(t.state),
                        attempts: t.attempts,
                        retry_at: match t.state {
                            TaskState::Retrying { at, .. } => Some(at),
                            _ => None,
                        },
                        decide_by: match t.state {
                            TaskState::Waiting { until, .. } if until > 0 => Some(until),
                            _ => None,
                        },
                    })
                    .collect();
                let message = if state == StepState::Succeeded { None } else { f.reason.or(f.failure) };
                StepReport {
                    id: id.clone(),
                    kind: plan.steps[ix as usize].kind.key().to_string(),
                    state,
                    started_at: f.started_at,
                    finished_at: f.finished_at,
                    duration_ms: span(f.started_at, f.finished_at),
                    reused_from: f.reused_from,
                    cached: f.cached,
                    items: tasks.len(),
                    tasks,
                    attempts: attempts.range((ix, 0, 0)..(ix + 1, 0, 0)).map(|(_, a)| a.clone()).collect(),
                    outputs: replayed.notes.outputs.get(&ix).cloned().unwrap_or(Value::Null),
                    message,
                }
            })
            .collect();
        Ok(RunReport {
            v: REPORT_VERSION,
            id: record.id,
            pipeline: record.pipeline.clone(),
            dag: record.dag.clone(),
            state: machine.state(),
            trigger: record.trigger,
            cause: record.cause.clone(),
            params: record.params.clone(),
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            duration_ms: span(record.started_at, record.finished_at),
            events: replayed.events,
            steps,
        })
    }
}

impl TaskStatus {
    fn of(state: TaskState) -> TaskStatus {
        match state {
            TaskState::Queued => TaskStatus::Queued,
            TaskState::Running { .. } => TaskStatus::Running,
            TaskState::Retrying { .. } => TaskStatus::Retrying,
            TaskState::Waiting { .. } => TaskStatus::Waiting,
            TaskState::Succeeded => TaskStatus::Succeeded,
            TaskState::Failed => TaskStatus::Failed,
            TaskState::TimedOut => TaskStatus::TimedOut,
            TaskState::Cancelled => TaskStatus::Cancelled,
        }
    }
}
