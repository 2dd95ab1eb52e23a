//! Trigger rules: whether a step runs, given how its upstream steps have ended so far.
//!
//! Evaluated only when an upstream step finishes (readiness is event-driven), from counters
//! the run machine keeps per step.

use super::state::StepState;
use crate::spec::TriggerRule;

/// How a step's upstream steps have ended so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct UpstreamCounts {
    pub done: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl UpstreamCounts {
    /// Counts one upstream step that reached the terminal `state`.
    pub(super) fn count(&mut self, state: StepState) {
        self.done += 1;
        match state {
            StepState::Succeeded => self.succeeded += 1,
            StepState::Skipped => self.skipped += 1,
            s if s.is_failure() => self.failed += 1,
            _ => {}
        }
    }
}

/// What a trigger rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// The step is ready to run.
    Run,
    /// The step can never run; it ends in this state.
    Finish(StepState),
}

/// The rule's decision for a step with `n` upstream steps, or `None` while it must wait.
pub(super) fn decide(rule: TriggerRule, n: u32, c: &UpstreamCounts) -> Option<Decision> {
    let all_done = c.done == n;
    match rule {
        TriggerRule::AllSuccess if c.failed > 0 => Some(Decision::Finish(StepState::UpstreamFailed)),
        TriggerRule::AllSuccess if all_done && c.skipped > 0 => Some(Decision::Finish(StepState::Skipped)),
        TriggerRule::AllDone | TriggerRule::AllSuccess => all_done.then_some(Decision::Run),
        TriggerRule::OneSuccess if c.succeeded > 0 => Some(Decision::Run),
        TriggerRule::OneSuccess if all_done && c.skipped == n => Some(Decision::Finish(StepState::Skipped)),
        TriggerRule::OneSuccess => all_done.then_some(Decision::Finish(StepState::UpstreamFailed)),
        TriggerRule::OneFailed if c.failed > 0 => Some(Decision::Run),
        TriggerRule::OneFailed => all_done.then_some(Decision::Finish(StepState::Skipped)),
        TriggerRule::NoneFailed if c.failed > 0 => Some(Decision::Finish(StepState::UpstreamFailed)),
        TriggerRule::NoneFailed => all_done.then_some(Decision::Run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepState::*;

    fn counts(ends: &[StepState]) -> UpstreamCounts {
        let mut c = UpstreamCounts::default();
        ends.iter().for_each(|s| c.count(*s));
        c
    }

    #[test]
    fn every_rule_waits_decides_or_gives_up() {
        use TriggerRule::*;
        let run = Some(Decision::Run);
        let fin = |s| Some(Decision::Finish(s));
        // (rule, upstream count, ended so far, expected)
        let cases = [
            (AllSuccess, 2, vec![Succeeded], None),
            (AllSuccess, 2, vec![Succeeded, Succeeded], run),
            (AllSuccess, 2, vec![Failed], fin(UpstreamFailed)),
            (AllSuccess, 2, vec![Skipped, Succeeded], fin(Skipped)),
            (AllSuccess, 2, vec![TimedOut], fin(UpstreamFailed)),
            (AllDone, 2, vec![Failed], None),
            (AllDone, 2, vec![Failed, Skipped], run),
            (OneSuccess, 3, vec![Succeeded], run),
            (OneSuccess, 2, vec![Skipped, Skipped], fin(Skipped)),
            (OneSuccess, 2, vec![Skipped, Failed], fin(UpstreamFailed)),
            (OneSuccess, 2, vec![Failed], None),
            (OneFailed, 3, vec![UpstreamFailed], run),
            (OneFailed, 2, vec![Succeeded, Skipped], fin(Skipped)),
            (OneFailed, 2, vec![Succeeded], None),
            (NoneFailed, 2, vec![Skipped, Succeeded], run),
            (NoneFailed, 2, vec![Cancelled], fin(UpstreamFailed)),
            (NoneFailed, 2, vec![Skipped], None),
        ];
        for (rule, n, ends, want) in cases {
            assert_eq!(decide(rule, n, &counts(&ends)), want, "{rule:?} after {ends:?} of {n}");
        }
    }
}
