//! How a run stops and goes on: cancel (for good), interrupt (a graceful shutdown: running
//! attempts get their grace, queued ones wait) and resume (a new engine process takes over).

use super::RunMachine;
use crate::scheduler::StepIx;
use crate::scheduler::events::{Action, KillReason, TimerKind};
use crate::scheduler::state::{RunState, StepState, TaskState};

impl RunMachine {
    pub(super) fn on_cancel(&mut self, out: &mut Vec<Action>) {
        if self.state.is_terminal() {
            return;
        }
        for s in 0..self.slots.len() {
            let step = s as StepIx;
            if self.slots[s].state().is_terminal() {
                continue;
            }
            for i in 0..self.slots[s].tasks.len() {
                let item = i as u32;
                let task = self.slots[s].tasks[i];
                match task.state {
                    TaskState::Running { attempt, .. } => {
                        out.push(Action::Kill { step, item, attempt, reason: KillReason::Cancel });
                        out.push(Action::Release { step, item });
                    }
                    TaskState::Queued => out.push(Action::Withdraw { step, item }),
                    _ => {}
                }
                if !task.state.is_terminal() {
                    self.set_task(step, item, TaskState::Cancelled);
                }
            }
            self.slots[s].preparing = false;
            self.set_step(step, StepState::Cancelled, out);
            self.unfinished -= 1;
        }
        self.set_run(RunState::Cancelled, out);
    }

    pub(super) fn on_interrupt(&mut self, out: &mut Vec<Action>) {
        if self.state != RunState::Running {
            return;
        }
        self.set_run(RunState::Interrupting, out);
        for (s, slot) in self.slots.iter().enumerate() {
            for (i, task) in slot.tasks.iter().enumerate() {
                let (step, item) = (s as StepIx, i as u32);
                match task.state {
                    TaskState::Running { attempt, .. } => {
                        out.push(Action::Kill { step, item, attempt, reason: KillReason::Interrupt })
                    }
                    TaskState::Queued => out.push(Action::Withdraw { step, item }),
                    _ => {}
                }
            }
        }
        self.maybe_interrupted(out);
    }

    pub(super) fn maybe_interrupted(&mut self, out: &mut Vec<Action>) {
        if self.state == RunState::Interrupting && self.running == 0 {
            self.set_run(RunState::Interrupted, out);
        }
    }

    pub(super) fn on_resume(&mut self, out: &mut Vec<Action>) {
        if !matches!(self.state, RunState::Running | RunState::Interrupting | RunState::Interrupted) {
            return;
        }
        self.set_run(RunState::Running, out);
        for s in 0..self.slots.len() {
            let step = s as StepIx;
            if self.slots[s].state().is_terminal() {
                continue;
            }
            if self.slots[s].preparing {
                out.push(Action::Prepare { step });
            }
            let cs = &self.steps[s];
            let (priority, resources) = (cs.priority, cs.resources);
            for i in 0..self.slots[s].tasks.len() {
                let item = i as u32;
                let task = self.slots[s].tasks[i];
                match task.state {
                    TaskState::Running { .. } => {
                        // Lost with the previous engine process: run it again, not counted
                        // as a retry.
                        self.set_task(step, item, TaskState::Queued);
                        out.push(Action::Enqueue { step, item, priority, resources });
                    }
                    TaskState::Queued => out.push(Action::Enqueue { step, item, priority, resources }),
                    TaskState::Retrying { attempt, at } => {
                        out.push(Action::ArmTimer { step, item, attempt, kind: TimerKind::Retry, at })
                    }
                    // Still waiting for its decision: its deadline again.
                    TaskState::Waiting { attempt, until, .. } if until > 0 => out.push(Action::ArmTimer {
                        step,
                        item,
                        attempt,
                        kind: TimerKind::Timeout,
                        at: until,
                    }),
                    _ => {}
                }
            }
            self.refresh_step(step, out);
        }
        // A decision taken while the run was interrupted may have finished its last step:
        // with nothing left to run, the run ends now.
        self.maybe_finish(out);
    }
}
