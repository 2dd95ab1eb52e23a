//! Creating runs: plain ones, ones that claim a key (a schedule slot, an alert's
//! fingerprint) so that the same cause never starts two, and retries that reuse the results
//! of an earlier run.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Engine, EngineError, Result};
use crate::compile::Plan;
use crate::scheduler::{Event, StepIx, StepState};
use crate::security::audit::Action;
use crate::store::{Claim, DagRecord, EventRecord, FORMAT_VERSION, RunCache, RunRecord, Trigger};

/// What a new run is made of besides its plan.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub params: Map<String, Value>,
    pub trigger: Trigger,
    /// The trigger's details, kept on the run record.
    pub cause: Option<Value>,
    /// A key the run claims, and for how long (ms) the claim keeps another run with the same
    /// key from starting (`None`: for ever).
    pub key: Option<(String, Option<i64>)>,
    /// Events logged before the run starts (the reused results of a retry).
    pub prelude: Vec<Event>,
    /// How the run uses the step cache.
    pub cache: RunCache,
    /// Who starts it, for the audit log; when not set, the trigger says (`cron:<pipeline>@<slot>`,
    /// `alert:<fingerprint>`, `event:<source>/<id>`, else the local OS user).
    pub actor: Option<String>,
    /// The API request that asked for it.
    pub request: Option<String>,
    /// The run's tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

impl NewRun {
    pub fn new(params: Map<String, Value>, trigger: Trigger) -> Self {
        NewRun {
            params,
            trigger,
            cause: None,
            key: None,
            prelude: Vec::new(),
            cache: RunCache::default(),
            actor: None,
            request: None,
            tags: Default::default(),
        }
    }

    /// The audit actor of the run's start.
    fn actor(&self, pipeline: &str) -> String {
        if let Some(a) = &self.actor {
            return a.clone();
        }
        let cause = self.cause.clone().unwrap_or_default();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "?".to_string(),
            v => v.to_string(),
        };
        match self.trigger {
            Trigger::Cron | Trigger::Backfill => format!("cron:{pipeline}@{}", text(&cause["slot"])),
            Trigger::Alert => format!("alert:{}", text(&cause["fingerprint"])),
            Trigger::Event => format!("event:{}/{}", text(&cause["source"]), text(&cause["event"])),
            _ => crate::security::local_actor(),
        }
    }
}

/// What [`Engine::create_run_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Run(u64),
    /// The key is held by this run; nothing was created.
    Held {
        run: u64,
    },
}

impl Engine {
    /// Records a new run (its DAG version, run record, claimed key and prelude), durably:
    /// one flush for all of it.
    pub fn create_run_with(&self, plan: &Arc<Plan>, new: NewRun) -> Result<Created> {
        let now = self.now_ms();
        if let Some(free) = self.store.free_bytes()
            && free < self.opts.min_free_bytes
        {
            return Err(EngineError::LowSpace(format!(
                "the data folder {} has {} free, less than the {} a run needs to start (--min-free-space); free some space",
                self.store.dir().display(),
                crate::syntax::ByteSize(free),
                crate::syntax::ByteSize(self.opts.min_free_bytes),
            )));
        }
        for (ix, step) in plan.core.iter().enumerate() {
            // A step placed on Slurm asks the cluster, not this machine's pools.
            let remote = super::attempt::on_slurm(self, plan, ix as StepIx);
            if let Some(why) = self.opts.capacity.misfit(&step.resources).filter(|_| !remote) {
                return Err(EngineError::Invalid(format!("this run can never start: {why}")));
            }
        }
        // A held key is common (alert repeats): answer it before a run id is spent. The
        // transaction below decides for real.
        if let Some((key, window)) = &new.key
            && let Some(mark) = self.store.mark(key)?
            && window.is_none_or(|w| now.saturating_sub(mark.at) < w)
        {
            return Ok(Created::Held { run: mark.run });
        }
        // A new DAG version: its code files are kept first (durably), then the version with
        // its checked plan, which every later look at its runs reads instead of the files.
        if !self.store.has_dag(&plan.hash)? {
            self.keep_code(plan)?;
            self.store.put_dag(&DagRecord {
                v: FORMAT_VERSION,
                hash: plan.hash.clone(),
                name: plan.name().to_string(),
                path: plan.path.display().to_string(),
                source: plan.source.clone(),
                stored_at: now,
                plan: Some(plan.to_stored()),
            })?;
        }
        let id = self.store.next_run_id()?;
        let actor = new.actor(plan.name());
        let mut record =
            RunRecord::new(id, plan.name(), &plan.hash, new.params, new.trigger, plan.ids.len() as u32, now);
        record.cause = new.cause;
        record.cache = new.cache;
        record.actor = Some(actor.clone());
        record.tags = new.tags;
        match &new.key {
            Some((key, window)) => {
                if let Claim::Held { run } = self.store.claim_run(&record, key, *window, now)? {
                    return Ok(Created::Held { run });
                }
            }
            None => self.store.put_run(&record)?,
        }
        for (seq, event) in new.prelude.into_iter().enumerate() {
            // The artifacts of a step whose result the run reuses are the run's too (attempt
            // 0: none of its own), so that `sluice artifacts --run` and `gc` see them.
            if let Event::Reused { step, artifacts, .. } = &event {
                for (item, list) in artifacts {
                    let by = crate::store::ProducedBy {
                        run: id,
                        pipeline: plan.name(),
                        step_ix: *step,
                        step: plan.id(*step),
                        item: *item,
                        attempt: 0,
                        at: now,
                    };
                    self.store.put_artifacts(by, list)?;
                }
            }
            self.store
                .append_event(id, &EventRecord { v: FORMAT_VERSION, seq: seq as u64, at: now, event })?;
        }
        let mut after = serde_json::json!({
            "pipeline": plan.name(),
            "dag": plan.hash,
            "trigger": record.trigger.as_str(),
        });
        if let Some(cause) = &record.cause {
            after["cause"] = cause.clone();
        }
        self.store.audit(
            Action::new(actor, "run.start", format!("run:{id}")).after(after).request(new.request.as_deref()),
            now,
        )?;
        self.store.flush()?;
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).insert(plan.hash.clone(), plan.clone());
        Ok(Created::Run(id))
    }

    /// What a retry of run `original` from step `from` needs: the original's plan, its
    /// record, and `Reused` events for every step whose result it keeps. The step `from`,
    /// every step after it, and every step that did not succeed (with the steps after them)
    /// run again; the others keep their outputs.
    pub fn retry_prelude(&self, original: u64, from: &str) -> Result<(Arc<Plan>, RunRecord, Vec<Event>)> {
        let replayed = self.replay(original, |_, _, _, _| {})?;
        let notes = &replayed.notes;
        let plan = replayed.plan.clone();
        let state = replayed.machine.state();
        if !state.is_terminal() {
            return Err(EngineError::Invalid(format!(
                "run {original} is {state}; only a run that has ended can be retried"
            )));
        }
        let Some(start) = plan.step_ix(from) else {
            return Err(EngineError::Invalid(format!(
                "run {original}'s pipeline `{}` has no step `{from}` (it has {})",
                plan.name(),
                plan.ids.join(", ")
            )));
        };
        let mut again: HashSet<StepIx> = HashSet::new();
        let mut work = vec![start];
        work.extend(
            (0..plan.ids.len() as StepIx).filter(|s| replayed.machine.step_state(*s) != StepState::Succeeded),
        );
        while let Some(s) = work.pop() {
            if again.insert(s) {
                work.extend(plan.core[s as usize].downstream.iter().copied());
            }
        }
        let prelude = (0..plan.ids.len() as StepIx)
            .filter(|s| !again.contains(s))
            .map(|step| Event::Reused {
                step,
                from_run: original,
                items: notes.items.get(&step).cloned(),
                outputs: notes.outputs.get(&step).cloned().unwrap_or(Value::Null),
                artifacts: notes
                    .artifacts
                    .iter()
                    .filter(|((s, _), _)| *s == step)
                    .map(|((_, item), list)| (*item, list.clone()))
                    .collect(),
            })
            .collect();
        Ok((plan, replayed.record, prelude))
    }
}
