//! Replaying a run's event log into a fresh machine: the run's state as of its last event,
//! with what templates need of its history (map items, the outputs of accepted results).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Engine, Result};
use crate::compile::Plan;
use crate::scheduler::{Action, Event, Outcome, PrepareOutcome, Produced, RunMachine, StepIx};
use crate::store::{EventRecord, RunRecord};

/// What templates need of a run's history: map items and the outputs of accepted results.
#[derive(Default)]
pub struct Notes {
    pub items: HashMap<StepIx, Vec<Value>>,
    pub outputs: HashMap<StepIx, Value>,
    /// The artifacts of accepted results, by task.
    pub artifacts: HashMap<(StepIx, u32), Vec<Produced>>,
}

impl Notes {
    /// Folds an event the machine accepted into the notes.
    pub(crate) fn note(&mut self, event: &Event) {
        match event {
            Event::Prepared { step, outcome: PrepareOutcome::Map { items } } => {
                self.items.insert(*step, items.clone());
                self.outputs.insert(*step, Value::Array(vec![Value::Null; items.len()]));
            }
            Event::Reused { step, items, outputs, artifacts, .. } => {
                if let Some(items) = items {
                    self.items.insert(*step, items.clone());
                }
                self.outputs.insert(*step, outputs.clone());
                for (item, list) in artifacts {
                    self.artifacts.insert((*step, *item), list.clone());
                }
            }
            Event::Finished {
                step, item, outcome: Outcome::Succeeded { outputs, artifacts, .. }, ..
            } => {
                if !artifacts.is_empty() {
                    self.artifacts.insert((*step, *item), artifacts.clone());
                }
                let value = Value::Object(outputs.clone());
                match self.outputs.get_mut(step) {
                    Some(Value::Array(list)) if self.items.contains_key(step) => {
                        if let Some(slot) = list.get_mut(*item as usize) {
                            *slot = value;
                        }
                    }
                    _ => {
                        self.outputs.insert(*step, value);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A run rebuilt from its event log.
pub struct Replayed {
    pub record: RunRecord,
    pub plan: Arc<Plan>,
    pub machine: RunMachine,
    /// Map items and the outputs of the results the machine accepted.
    pub notes: Notes,
    /// How many events the log holds.
    pub events: usize,
    /// The sequence number the next event gets.
    pub next_seq: u64,
}

impl Engine {
    /// Replays a run's event log into a fresh machine. `visit` sees the run's plan and each
    /// event, whether the machine took it into account (results of stale attempts are
    /// dropped) and the actions it produced.
    pub fn replay(
        &self,
        run: u64,
        mut visit: impl FnMut(&Plan, &EventRecord, bool, &[Action]),
    ) -> Result<Replayed> {
        let record = self.store.run(run)?;
        let plan = self.plan_of(&record)?;
        let events = self.store.events(run)?;
        let mut machine = RunMachine::new(plan.core.clone(), run);
        let mut notes = Notes::default();
        for e in &events {
            let accepted = machine.accepts(&e.event);
            if accepted {
                notes.note(&e.event);
            }
            let actions = machine.apply(&e.event, e.at);
            visit(&plan, e, accepted, &actions);
        }
        let next_seq = events.last().map_or(0, |e| e.seq + 1);
        Ok(Replayed { record, plan, machine, notes, events: events.len(), next_seq })
    }
}
