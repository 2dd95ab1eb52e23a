//! The scheduler core: a pure state machine per run plus a pure admission controller.
//!
//! **No I/O, no clock reads, no tokio in here.** Every function takes the current time as an
//! argument and returns the actions a driver must carry out. That keeps the core replayable
//! from the event log and testable with property tests and simulated time.

mod admission;
mod events;
mod machine;
mod rules;
mod state;

pub use admission::{Admission, Capacity, Grant};
pub use events::{Action, CachedFrom, Event, KillReason, Outcome, PrepareOutcome, Produced, TimerKind};
pub(crate) use machine::splitmix;
pub use machine::{RunMachine, TaskView};
pub use state::{InvalidTransition, RunState, StepState, TaskState};

use crate::spec::{Backoff, TriggerRule};

/// Index of a step in its plan.
pub type StepIx = u32;

/// Milliseconds since the Unix epoch; the only notion of time the core has.
pub type Millis = i64;

/// What a step asks of the resource pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ResourceRequest {
    pub cpu: u32,
    pub memory: u64,
    pub gpu: u32,
    /// Runs elsewhere (a Slurm job): takes nothing from the pools nor from the global limit
    /// on running attempts; only the run's own `concurrency` counts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// The retry policy of a step, resolved from the spec.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    pub count: u32,
    pub backoff: Backoff,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { count: 0, backoff: Backoff::Fixed, delay_ms: 1_000, max_delay_ms: 600_000, jitter: 0.0 }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based). Jitter comes from `entropy`, a
    /// deterministic per-attempt number, so that replaying a run reproduces its timers.
    pub fn delay(&self, retry: u32, entropy: u64) -> u64 {
        let base = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Exponential => self.delay_ms.saturating_mul(1u64 << retry.min(40)),
        };
        let capped = base.min(self.max_delay_ms.max(self.delay_ms));
        if self.jitter > 0.0 {
            let unit = (entropy % 10_000) as f64 / 10_000.0;
            (capped as f64 * (1.0 - self.jitter.clamp(0.0, 1.0) * unit)) as u64
        } else {
            capped
        }
    }
}

/// What the core needs to know of one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CoreStep {
    pub upstream: Vec<StepIx>,
    pub downstream: Vec<StepIx>,
    pub rule: TriggerRule,
    pub retry: RetryPolicy,
    pub timeout_ms: Option<u64>,
    pub priority: i32,
    pub resources: ResourceRequest,
    /// The step has `when:` or `map:`, which the driver evaluates before it is queued.
    pub prepare: bool,
    /// The step waits for a decision instead of running (an `approval:` step): its task
    /// holds no slot, and its decision arrives as the result of attempt 1; `timeout_ms` is
    /// how long it waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            count: 5,
            backoff: Backoff::Exponential,
            delay_ms: 100,
            max_delay_ms: 500,
            jitter: 0.0,
        };
        assert_eq!([0, 1, 2, 3].map(|r| p.delay(r, 0)), [100, 200, 400, 500]);
        let f = RetryPolicy { backoff: Backoff::Fixed, ..p };
        assert_eq!(f.delay(3, 0), 100);
        let j = RetryPolicy { jitter: 0.5, ..f };
        assert!((50..=100).contains(&j.delay(0, 9_999)));
    }
}
