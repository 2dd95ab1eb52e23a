//! The run state machine: `(state, event, now) -> (state', actions)` for one run.
//!
//! Events are what happened (an attempt finished, a timer fired, a user cancelled); actions
//! are what the driver must do next (queue a task, execute an attempt, arm a timer, kill).
//! The driver persists every event before applying it, so replaying a run's event log into a
//! fresh machine rebuilds exactly the same state.

use std::sync::Arc;

use super::events::{Action, Event, KillReason, Outcome, PrepareOutcome, TimerKind};
use super::rules::{Decision, UpstreamCounts, decide};
use super::state::{RunState, StepState, TaskState};
use super::{CoreStep, Millis, StepIx};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Task {
    state: TaskState,
    /// The number of the latest attempt (attempts count from 1).
    attempts: u32,
    retries_used: u32,
}

/// A read-only view of a task for drivers and reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskView {
    pub state: TaskState,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    state: Option<StepState>,
    preparing: bool,
    /// The step's result comes from an earlier run (a retry from a later step).
    reused: Option<u32>,
    tasks: Vec<Task>,
    upstream: UpstreamCounts,
}

impl Slot {
    fn state(&self) -> StepState {
        self.state.unwrap_or(StepState::Pending)
    }
}

/// The state machine of one run.
#[derive(Debug, Clone)]
pub struct RunMachine {
    steps: Arc<Vec<CoreStep>>,
    seed: u64,
    state: RunState,
    slots: Vec<Slot>,
    unfinished: usize,
    running: usize,
    invalid_transitions: u64,
    /// The time of the event being applied.
    now: Millis,
}

impl RunMachine {
    /// A machine for a new run; `seed` makes retry jitter reproducible for this run.
    pub fn new(steps: Arc<Vec<CoreStep>>, seed: u64) -> Self {
        let n = steps.len();
        Self {
            steps,
            seed,
            state: RunState::Pending,
            slots: vec![Slot::default(); n],
            unfinished: n,
            running: 0,
            invalid_transitions: 0,
            now: 0,
        }
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    pub fn step_state(&self, step: StepIx) -> StepState {
        self.slots.get(step as usize).map_or(StepState::Pending, Slot::state)
    }

    pub fn tasks(&self, step: StepIx) -> Vec<TaskView> {
        self.slots
            .get(step as usize)
            .map(|s| s.tasks.iter().map(|t| TaskView { state: t.state, attempts: t.attempts }).collect())
            .unwrap_or_default()
    }

    /// The attempts currently running, as (step, item, attempt).
    pub fn running_attempts(&self) -> Vec<(StepIx, u32, u32)> {
        let mut out = Vec::new();
        for (s, slot) in self.slots.iter().enumerate() {
            for (i, t) in slot.tasks.iter().enumerate() {
                if let TaskState::Running { attempt, .. } = t.state {
                    out.push((s as StepIx, i as u32, attempt));
                }
            }
        }
        out
    }

    pub fn running_count(&self) -> usize {
        self.running
    }

    /// Transitions the machine refused because they were not in the lifecycle (always 0
    /// unless there is a bug; property tests check it).
    pub fn invalid_transitions(&self) -> u64 {
        self.invalid_transitions
    }

    /// Whether `event` would be taken into account rather than dropped as stale (a result of
    /// an attempt that is not the task's current one, a decision nobody waits for). Lets a
    /// driver keep side data, such as outputs, only for results that counted.
    pub fn accepts(&self, event: &Event) -> bool {
        match event {
            Event::Finished { step, item, attempt, .. } => self.is_current(*step, *item, *attempt),
            Event::Prepared { step, .. } => self.awaits_preparation(*step),
            _ => true,
        }
    }

    /// Whether the step waits for its `when:`/`map:` evaluation.
    fn awaits_preparation(&self, step: StepIx) -> bool {
        self.is_active()
            && self.slots.get(step as usize).is_some_and(|s| s.preparing && s.state() == StepState::Ready)
    }

    /// Whether `attempt` is the running attempt of its task in an active run, or the attempt
    /// a waiting task's decision is (a decision is taken while the run is interrupted too).
    fn is_current(&self, step: StepIx, item: u32, attempt: u32) -> bool {
        match self.task(step, item).map(|t| t.state) {
            Some(TaskState::Running { attempt: a, .. }) => a == attempt && self.is_active(),
            Some(TaskState::Waiting { attempt: a, .. }) => {
                a == attempt
                    && matches!(
                        self.state,
                        RunState::Running | RunState::Interrupting | RunState::Interrupted
                    )
            }
            _ => false,
        }
    }

    /// Whether a task waits for a decision, and as which attempt.
    pub fn waiting(&self, step: StepIx, item: u32) -> Option<u32> {
        match self.task(step, item)?.state {
            TaskState::Waiting { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// Applies one event at time `now` and returns what the driver must do.
    pub fn apply(&mut self, event: &Event, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = now;
        match event {
            Event::Start => self.on_start(&mut out),
            Event::Prepared { step, outcome } => self.on_prepared(*step, outcome, &mut out),
            Event::Admitted { step, item } => self.on_admitted(*step, *item, now, &mut out),
            Event::Rejected { step, item, .. } => self.on_rejected(*step, *item, &mut out),
            Event::Finished { step, item, attempt, outcome } => {
                self.on_finished(*step, *item, *attempt, outcome, now, &mut out)
            }
            Event::Timer { step, item, attempt, kind } => {
                self.on_timer(*step, *item, *attempt, *kind, now, &mut out)
            }
            Event::Cancel => self.on_cancel(&mut out),
            Event::Interrupt => self.on_interrupt(&mut out),
            Event::Resume => self.on_resume(&mut out),
            Event::Reused { step, items, .. } => self.on_reused(*step, items.as_ref().map_or(1, Vec::len)),
        }
        out
    }

    fn set_run(&mut self, next: RunState, out: &mut Vec<Action>) {
        if self.state == next {
            return;
        }
        match self.state.transition(next) {
            Ok(s) => {
                self.state = s;
                out.push(Action::RunChanged { state: s });
            }
            Err(_) => self.invalid_transitions += 1,
        }
    }

    fn set_step(&mut self, step: StepIx, next: StepState, out: &mut Vec<Action>) -> bool {
        let slot = &mut self.slots[step as usize];
        let cur = slot.state();
        if cur == next {
            return false;
        }
        if !cur.can_become(next) {
            self.invalid_transitions += 1;
            return false;
        }
        slot.state = Some(next);
        out.push(Action::StepChanged { step, state: next });
        true
    }

    fn set_task(&mut self, step: StepIx, item: u32, next: TaskState) {
        let task = &mut self.slots[step as usize].tasks[item as usize];
        if task.state.can_become(next) {
            if matches!(task.state, TaskState::Running { .. }) {
                self.running -= 1;
            }
            if matches!(next, TaskState::Running { .. }) {
                self.running += 1;
            }
            task.state = next;
        } else {
            self.invalid_transitions += 1;
        }
    }

    fn task(&self, step: StepIx, item: u32) -> Option<Task> {
        self.slots.get(step as usize)?.tasks.get(item as usize).copied()
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        if self.state != RunState::Pending {
            return;
        }
        self.set_run(RunState::Running, out);
        for ix in 0..self.steps.len() {
            if self.steps[ix].upstream.is_empty() {
                self.become_ready(ix as StepIx, out);
            }
        }
        self.maybe_finish(out);
    }

    /// Marks a step of a run that has not started as reused from an earlier run.
    fn on_reused(&mut self, step: StepIx, items: usize) {
        match self.slots.get_mut(step as usize) {
            Some(slot) if self.state == RunState::Pending => slot.reused = Some(items as u32),
            _ => self.invalid_transitions += 1,
        }
    }

    fn become_ready(&mut self, step: StepIx, out: &mut Vec<Action>) {
        if !self.set_step(step, StepState::Ready, out) {
            return;
        }
        if let Some(n) = self.slots[step as usize].reused {
            // Its result is already known: it succeeds without an attempt.
            let done = Task { state: TaskState::Succeeded, attempts: 0, retries_used: 0 };
            self.slots[step as usize].tasks = vec![done; n as usize];
            self.finish_step(step, StepState::Succeeded, out);
            return;
        }
        if self.steps[step as usize].prepare {
            self.slots[step as usize].preparing = true;
            if self.state == RunState::Running {
                out.push(Action::Prepare { step });
            }
        } else {
            self.create_tasks(step, 1, out);
        }
    }

    fn create_tasks(&mut self, step: StepIx, n: usize, out: &mut Vec<Action>) {
        let slot = &mut self.slots[step as usize];
        slot.preparing = false;
        slot.tasks = vec![Task { state: TaskState::Queued, attempts: 0, retries_used: 0 }; n];
        if n == 0 {
            self.finish_step(step, StepState::Succeeded, out);
            return;
        }
        if self.steps[step as usize].wait {
            self.start_waiting(step, out);
            return;
        }
        if self.state == RunState::Running {
            let cs = &self.steps[step as usize];
            for item in 0..n as u32 {
                out.push(Action::Enqueue { step, item, priority: cs.priority, resources: cs.resources });
            }
        }
    }

    /// A waiting step's tasks wait for their decision from now on, each as attempt 1, with
    /// a timer for its deadline; they hold no slot.
    fn start_waiting(&mut self, step: StepIx, out: &mut Vec<Action>) {
        let until = self.steps[step as usize].timeout_ms.map_or(0, |t| self.now.saturating_add(t as i64));
        for item in 0..self.slots[step as usize].tasks.len() as u32 {
            self.slots[step as usize].tasks[item as usize].attempts = 1;
            self.set_task(step, item, TaskState::Waiting { attempt: 1, since: self.now, until });
            if until > 0 && self.state == RunState::Running {
                out.push(Action::ArmTimer { step, item, attempt: 1, kind: TimerKind::Timeout, at: until });
            }
        }
        self.refresh_step(step, out);
    }

    fn on_prepared(&mut self, step: StepIx, outcome: &PrepareOutcome, out: &mut Vec<Action>) {
        if !self.awaits_preparation(step) {
            return;
        }
        match outcome {
            PrepareOutcome::Run => self.create_tasks(step, 1, out),
            PrepareOutcome::Map { items } => self.create_tasks(step, items.len(), out),
            PrepareOutcome::Skip { .. } => {
                self.slots[step as usize].preparing = false;
                self.finish_step(step, StepState::Skipped, out);
            }
            PrepareOutcome::Error { .. } => {
                self.slots[step as usize].preparing = false;
                self.finish_step(step, StepState::Failed, out);
            }
        }
    }

    fn on_admitted(&mut self, step: StepIx, item: u32, now: Millis, out: &mut Vec<Action>) {
        let ok = self.state == RunState::Running
            && self.task(step, item).is_some_and(|t| t.state == TaskState::Queued);
        if !ok {
            // The admission controller granted a slot this run cannot use: give it back.
            out.push(Action::Release { step, item });
            return;
        }
        let attempt = self.slots[step as usize].tasks[item as usize].attempts + 1;
        self.slots[step as usize].tasks[item as usize].attempts = attempt;
        self.set_task(step, item, TaskState::Running { attempt, since: now });
        out.push(Action::Execute { step, item, attempt });
        if let Some(t) = self.steps[step as usize].timeout_ms {
            let at = now.saturating_add(t as i64);
            out.push(Action::ArmTimer { step, item, attempt, kind: TimerKind::Timeout, at });
        }
        self.refresh_step(step, out);
    }

    fn on_rejected(&mut self, step: StepIx, item: u32, out: &mut Vec<Action>) {
        if !self.is_active() || self.task(step, item).is_none_or(|t| t.state != TaskState::Queued) {
            return;
        }
        self.set_task(step, item, TaskState::Failed);
        self.refresh_step(step, out);
    }

    fn is_active(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Interrupting)
    }

    fn on_finished(
        &mut self,
        step: StepIx,
        item: u32,
        attempt: u32,
        outcome: &Outcome,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_current(step, item, attempt) {
            return; // a stale or duplicate result: fenced off
        }
        let waited = matches!(self.task(step, item).map(|t| t.state), Some(TaskState::Waiting { .. }));
        if waited {
            // A decision: final, never retried; the waiting task held no slot.
            match outcome {
                Outcome::Succeeded { .. } => self.set_task(step, item, TaskState::Succeeded),
                Outcome::TimedOut { .. } => self.set_task(step, item, TaskState::TimedOut),
                Outcome::Cancelled { .. } => self.set_task(step, item, TaskState::Cancelled),
                Outcome::Failed { .. } => self.set_task(step, item, TaskState::Failed),
            }
            self.refresh_step(step, out);
            return;
        }
        out.push(Action::Release { step, item });
        if self.state == RunState::Interrupting && !matches!(outcome, Outcome::Succeeded { .. }) {
            // Stopped by the shutdown: not the step's fault; it runs again on resume.
            self.set_task(step, item, TaskState::Queued);
        } else {
            match outcome {
                Outcome::Succeeded { .. } => self.set_task(step, item, TaskState::Succeeded),
                Outcome::Failed { retryable, .. } => {
                    self.fail_task(step, item, attempt, TaskState::Failed, *retryable, now, out)
                }
                Outcome::TimedOut { .. } => {
                    self.fail_task(step, item, attempt, TaskState::TimedOut, true, now, out)
                }
                Outcome::Cancelled { .. } => {
                    self.fail_task(step, item, attempt, TaskState::Failed, true, now, out)
                }
            }
        }
        self.refresh_step(step, out);
        self.maybe_interrupted(out);
    }

    #[allow(clippy::too_many_arguments)]
    fn fail_task(
        &mut self,
        step: StepIx,
        item: u32,
        attempt: u32,
        terminal: TaskState,
        retryable: bool,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let policy = self.steps[step as usize].retry;
        let task = self.slots[step as usize].tasks[item as usize];
        if retryable && task.retries_used < policy.count {
            let entropy =
                splitmix(self.seed ^ ((step as u64) << 40) ^ ((item as u64) << 20) ^ attempt as u64);
            let at = now.saturating_add(policy.delay(task.retries_used, entropy) as i64);
            self.slots[step as usize].tasks[item as usize].retries_used += 1;
            self.set_task(step, item, TaskState::Retrying { attempt, at });
            out.push(Action::ArmTimer { step, item, attempt, kind: TimerKind::Retry, at });
        } else {
            self.set_task(step, item, terminal);
        }
    }

    fn on_timer(
        &mut self,
        step: StepIx,
        item: u32,
        attempt: u32,
        kind: TimerKind,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(task) = self.task(step, item) else { return };
        match kind {
            TimerKind::Retry => {
                let due = matches!(task.state, TaskState::Retrying { attempt: a, .. } if a == attempt);
                if due && self.state == RunState::Running {
                    self.set_task(step, item, TaskState::Queued);
                    let cs = &self.steps[step as usize];
                    out.push(Action::Enqueue { step, item, priority: cs.priority, resources: cs.resources });
                    self.refresh_step(step, out);
                }
            }
            TimerKind::Timeout if matches!(task.state, TaskState::Waiting { attempt: a, .. } if a == attempt) =>
            {
                // Nobody decided in time.
                if self.state == RunState::Running {
                    self.set_task(step, item, TaskState::TimedOut);
                    self.refresh_step(step, out);
                }
            }
            TimerKind::Timeout => {
                let running = matches!(task.state, TaskState::Running { attempt: a, .. } if a == attempt);
                if running && self.state == RunState::Running {
                    out.push(Action::Kill { step, item, attempt, reason: KillReason::Timeout });
                    out.push(Action::Release { step, item });
                    self.fail_task(step, item, attempt, TaskState::TimedOut, true, now, out);
                    self.refresh_step(step, out);
                }
            }
        }
    }

    /// Recomputes a step's state from its tasks.
    fn refresh_step(&mut self, step: StepIx, out: &mut Vec<Action>) {
        let slot = &self.slots[step as usize];
        if slot.state().is_terminal() || slot.tasks.is_empty() {
            return;
        }
        let mut any = [false; 8];
        for t in &slot.tasks {
            let k = match t.state {
                TaskState::Queued => 0,
                TaskState::Running { .. } => 1,
                TaskState::Retrying { .. } => 2,
                TaskState::Succeeded => 3,
                TaskState::Failed => 4,
                TaskState::TimedOut => 5,
                TaskState::Cancelled => 6,
                TaskState::Waiting { .. } => 7,
            };
            any[k] = true;
        }
        let all_terminal = !any[0] && !any[1] && !any[2] && !any[7];
        if all_terminal {
            let state = if any[4] {
                StepState::Failed
            } else if any[5] {
                StepState::TimedOut
            } else if any[6] {
                StepState::Cancelled
            } else {
                StepState::Succeeded
            };
            self.finish_step(step, state, out);
        } else {
            let state = if any[1] {
                StepState::Running
            } else if any[7] {
                StepState::Waiting
            } else if any[2] {
                StepState::Retrying
            } else {
                StepState::Ready
            };
            self.set_step(step, state, out);
        }
    }

    /// Moves a step to a terminal state and propagates to its downstream steps.
    fn finish_step(&mut self, step: StepIx, state: StepState, out: &mut Vec<Action>) {
        let mut work = vec![(step, state)];
        while let Some((s, state)) = work.pop() {
            if !self.set_step(s, state, out) {
                continue;
            }
            self.unfinished -= 1;
            let steps = self.steps.clone();
            for &d in &steps[s as usize].downstream {
                let slot = &mut self.slots[d as usize];
                slot.upstream.count(state);
                if slot.state() != StepState::Pending {
                    continue;
                }
                match self.rule_decision(d) {
                    Some(Decision::Run) => self.become_ready(d, out),
                    Some(Decision::Finish(st)) => work.push((d, st)),
                    None => {}
                }
            }
        }
        self.maybe_finish(out);
    }

    fn rule_decision(&self, step: StepIx) -> Option<Decision> {
        let n = self.steps[step as usize].upstream.len() as u32;
        decide(self.steps[step as usize].rule, n, &self.slots[step as usize].upstream)
    }

    fn maybe_finish(&mut self, out: &mut Vec<Action>) {
        if self.unfinished == 0 && self.is_active() {
            let failed = self.slots.iter().any(|s| s.state().is_failure());
            self.set_run(if failed { RunState::Failed } else { RunState::Succeeded }, out);
        }
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit value from any input.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

mod stops;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
