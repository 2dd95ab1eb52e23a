//! Decisions on `approval:` steps: who may decide (the step's role, never the one who started
//! the run), one decision per step, recorded with its audit entry in one flush, then applied
//! as the waiting task's result: through the driver that holds the run, or straight into the
//! run's event log when none does (the next `resume` goes on from it).

use serde_json::json;

use super::{Engine, EngineError, Result};
use crate::scheduler::{Event, Outcome, StepIx};
use crate::security::Role;
use crate::security::audit::Action;
use crate::store::{Decision, EventRecord, FORMAT_VERSION, Refusal, StoreError};

/// Who decides: as the audit log names them, and their role (`None`: the data folder's owner,
/// acting locally, who holds every role).
#[derive(Debug, Clone)]
pub struct Decider {
    pub actor: String,
    pub role: Option<Role>,
    pub request: Option<String>,
}

/// A decision taken: what to apply to the run.
#[derive(Debug, Clone)]
pub struct Decided {
    pub run: u64,
    pub step: StepIx,
    pub item: u32,
    pub attempt: u32,
    pub outcome: Outcome,
    pub decision: Decision,
}

fn refused(kind: Refusal, message: String) -> EngineError {
    EngineError::Store(StoreError::Refused(kind, message))
}

impl Engine {
    /// Records a decision on a waiting approval step. Refused for a step that is not an
    /// approval, is not waiting (or was decided), for a role below the step's, and for the one
    /// who started the run.
    pub fn decide(
        &self,
        run: u64,
        step: &str,
        approved: bool,
        comment: &str,
        who: &Decider,
    ) -> Result<Decided> {
        let r = self.replay(run, |_, _, _, _| {})?;
        let ix = *r.plan.index.get(step).ok_or_else(|| {
            EngineError::NotFound(format!("run {run} ({}) has no step `{step}`", r.plan.name()))
        })?;
        let crate::kinds::StepKind::Approval(block) = &r.plan.steps[ix as usize].kind else {
            return Err(refused(
                Refusal::Invalid,
                format!("step `{step}` of run {run} is not an approval step"),
            ));
        };
        let Some(attempt) = r.machine.waiting(ix, 0) else {
            return Err(refused(
                Refusal::Invalid,
                format!(
                    "step `{step}` of run {run} is not waiting for a decision (it is {})",
                    r.machine.step_state(ix)
                ),
            ));
        };
        let required = block.role().unwrap_or(Role::Approver);
        if let Some(role) = who.role
            && !role.at_least(required)
        {
            return Err(EngineError::Forbidden(format!(
                "deciding step `{step}` needs the role {required} or above; {} has {role}",
                who.actor
            )));
        }
        if r.record.actor.as_deref() == Some(who.actor.as_str()) {
            return Err(EngineError::Forbidden(format!(
                "{} started run {run}, so another person must decide its approvals (four eyes)",
                who.actor
            )));
        }
        let now = self.now_ms();
        let decision =
            Decision { v: 1, approved, by: who.actor.clone(), at: now, comment: comment.to_string() };
        {
            let _guard = self.store.registry_lock();
            if let Some((_, d)) = self.store.decisions(run)?.into_iter().find(|(s, _)| s == step) {
                return Err(refused(
                    Refusal::Invalid,
                    format!(
                        "step `{step}` of run {run} was {} by {} already",
                        if d.approved { "approved" } else { "rejected" },
                        d.by
                    ),
                ));
            }
            self.store.put_decision(run, step, &decision)?;
            self.store.audit(
                Action::new(
                    &who.actor,
                    if approved { "approval.approve" } else { "approval.reject" },
                    format!("run:{run}/{step}"),
                )
                .after(json!({ "comment": comment }))
                .request(who.request.as_deref()),
                now,
            )?;
            self.store.flush()?;
        }
        let outcome = if approved {
            let mut outputs = serde_json::Map::new();
            outputs.insert("approved".into(), json!(true));
            outputs.insert("approved_by".into(), json!(who.actor));
            outputs.insert("comment".into(), json!(comment));
            outputs.insert("decided_at".into(), json!(now));
            Outcome::succeeded(outputs)
        } else {
            let why = if comment.is_empty() { String::new() } else { format!(": {comment}") };
            Outcome::Failed { retryable: false, message: format!("rejected by {}{why}", who.actor) }
        };
        Ok(Decided { run, step: ix, item: 0, attempt, outcome, decision })
    }

    /// Appends a decision to the log of a run no engine drives (interrupted, or this
    /// command's own folder): the run goes on from it when it is resumed.
    pub fn log_decision(
        &self,
        run: u64,
        step: StepIx,
        item: u32,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<()> {
        let r = self.replay(run, |_, _, _, _| {})?;
        let event = Event::Finished { step, item, attempt, outcome };
        if !r.machine.accepts(&event) {
            return Err(refused(Refusal::Invalid, format!("run {run} no longer waits for that decision")));
        }
        self.store.append_event(
            run,
            &EventRecord { v: FORMAT_VERSION, seq: r.next_seq, at: self.now_ms(), event },
        )?;
        self.store.flush()?;
        Ok(())
    }
}
