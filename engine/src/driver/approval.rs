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

/// A decision checked (the step waits, the role may, the decider did not start the run):
/// what to apply to the run, and what to record once it is applied.
#[derive(Debug, Clone)]
pub struct Decided {
    pub run: u64,
    pub step: StepIx,
    pub step_id: String,
    pub item: u32,
    pub attempt: u32,
    pub outcome: Outcome,
    pub decision: Decision,
    pub request: Option<String>,
}

impl Decided {
    /// The event that applies it: the waiting attempt's result.
    pub fn event(&self) -> Event {
        Event::Finished {
            step: self.step,
            item: self.item,
            attempt: self.attempt,
            outcome: self.outcome.clone(),
        }
    }
}

fn refused(kind: Refusal, message: String) -> EngineError {
    EngineError::Store(StoreError::Refused(kind, message))
}

impl Engine {
    /// Checks a decision on a waiting approval step; nothing is written. Refused for a step
    /// that is not an approval, is not waiting (decided already, timed out), for a role below
    /// the step's, and for the one who started the run. It is recorded (with its audit entry)
    /// only in the batch that applies it ([`Engine::record_decision`]), so a decision on
    /// record is always one the run took.
    pub fn decide(
        &self,
        run: u64,
        step: &str,
        approved: bool,
        comment: &str,
        who: &Decider,
    ) -> Result<Decided> {
        crate::registry::check_reason("a decision's comment", comment)
            .map_err(|m| refused(Refusal::Invalid, m))?;
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
        Ok(Decided {
            run,
            step: ix,
            step_id: step.to_string(),
            item: 0,
            attempt,
            outcome,
            decision,
            request: who.request.clone(),
        })
    }

    /// Writes a decision the run takes, and its audit entry (durable with the caller's flush,
    /// the one that logs the event applying it).
    pub(crate) fn record_decision(&self, d: &Decided) -> Result<()> {
        self.store.put_decision(d.run, &d.step_id, &d.decision)?;
        self.store.audit(
            Action::new(
                &d.decision.by,
                if d.decision.approved { "approval.approve" } else { "approval.reject" },
                format!("run:{}/{}", d.run, d.step_id),
            )
            .after(json!({ "comment": d.decision.comment }))
            .request(d.request.as_deref()),
            self.now_ms(),
        )?;
        Ok(())
    }

    /// Applies a decision to a run no engine drives (interrupted, or this command's own
    /// folder): the event into its log with the decision and its audit entry, one flush; the
    /// run goes on from it when it is resumed.
    pub fn apply_decision_idle(&self, d: &Decided) -> Result<()> {
        let r = self.replay(d.run, |_, _, _, _| {})?;
        let event = d.event();
        if !r.machine.accepts(&event) {
            return Err(refused(
                Refusal::Invalid,
                format!("step `{}` of run {} no longer waits for a decision", d.step_id, d.run),
            ));
        }
        self.record_decision(d)?;
        self.store.append_event(
            d.run,
            &EventRecord { v: FORMAT_VERSION, seq: r.next_seq, at: self.now_ms(), event },
        )?;
        self.store.flush()?;
        Ok(())
    }
}
