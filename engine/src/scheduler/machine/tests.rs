//! Unit tests of every transition, and property tests: random event orders (with crashes,
//! stale and duplicate results) never reach an invalid state, and a fair driver always
//! finishes the run.

use super::*;
use crate::scheduler::{ResourceRequest, RetryPolicy};
use crate::spec::Backoff;
use crate::spec::TriggerRule;
use serde_json::{Map, Value};

pub(super) fn dag(n: usize, edges: &[(u32, u32)]) -> Vec<CoreStep> {
    let mut steps: Vec<CoreStep> = (0..n)
        .map(|_| CoreStep {
            upstream: vec![],
            downstream: vec![],
            rule: TriggerRule::AllSuccess,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            priority: 0,
            resources: ResourceRequest { cpu: 1, memory: 0, gpu: 0, remote: false },
            prepare: false,
            wait: false,
        })
        .collect();
    for &(a, b) in edges {
        steps[a as usize].downstream.push(b);
        steps[b as usize].upstream.push(a);
    }
    steps
}

pub(super) fn machine(steps: Vec<CoreStep>) -> RunMachine {
    RunMachine::new(Arc::new(steps), 42)
}

pub(super) fn ok() -> Outcome {
    Outcome::succeeded(Map::new())
}

pub(super) fn fail(retryable: bool) -> Outcome {
    Outcome::Failed { retryable, message: "boom".into() }
}

pub(super) fn fin(step: StepIx, attempt: u32, outcome: Outcome) -> Event {
    Event::Finished { step, item: 0, attempt, outcome }
}

pub(super) fn has(actions: &[Action], want: &Action) -> bool {
    actions.contains(want)
}

pub(super) fn enqueued(actions: &[Action]) -> Vec<StepIx> {
    actions
        .iter()
        .filter_map(|a| if let Action::Enqueue { step, .. } = a { Some(*step) } else { None })
        .collect()
}

#[test]
fn chain_runs_in_order_and_succeeds() {
    let mut m = machine(dag(3, &[(0, 1), (1, 2)]));
    let a = m.apply(&Event::Start, 0);
    assert_eq!(m.state(), RunState::Running);
    assert_eq!(enqueued(&a), vec![0]);
    assert_eq!(m.step_state(0), StepState::Ready);
    assert_eq!(m.step_state(1), StepState::Pending);
    for s in 0..3 {
        let a = m.apply(&Event::Admitted { step: s, item: 0 }, 10);
        assert!(has(&a, &Action::Execute { step: s, item: 0, attempt: 1 }));
        assert_eq!(m.step_state(s), StepState::Running);
        let a = m.apply(&fin(s, 1, ok()), 20);
        assert!(has(&a, &Action::Release { step: s, item: 0 }));
        assert_eq!(m.step_state(s), StepState::Succeeded);
        if s < 2 {
            assert_eq!(enqueued(&a), vec![s + 1]);
        } else {
            assert!(has(&a, &Action::RunChanged { state: RunState::Succeeded }));
        }
    }
    assert_eq!(m.invalid_transitions(), 0);
}

#[test]
fn retries_back_off_then_succeed() {
    let mut steps = dag(1, &[]);
    steps[0].retry = RetryPolicy {
        count: 2,
        backoff: Backoff::Exponential,
        delay_ms: 100,
        max_delay_ms: 1000,
        jitter: 0.0,
    };
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&fin(0, 1, fail(true)), 50);
    assert!(has(&a, &Action::ArmTimer { step: 0, item: 0, attempt: 1, kind: TimerKind::Retry, at: 150 }));
    assert_eq!(m.step_state(0), StepState::Retrying);
    // A timer for another attempt is stale.
    assert!(m.apply(&Event::Timer { step: 0, item: 0, attempt: 9, kind: TimerKind::Retry }, 150).is_empty());
    let a = m.apply(&Event::Timer { step: 0, item: 0, attempt: 1, kind: TimerKind::Retry }, 150);
    assert_eq!(enqueued(&a), vec![0]);
    assert_eq!(m.step_state(0), StepState::Ready);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 160);
    let a = m.apply(&fin(0, 2, fail(true)), 170);
    assert!(has(&a, &Action::ArmTimer { step: 0, item: 0, attempt: 2, kind: TimerKind::Retry, at: 370 }));
    m.apply(&Event::Timer { step: 0, item: 0, attempt: 2, kind: TimerKind::Retry }, 370);
    let a = m.apply(&Event::Admitted { step: 0, item: 0 }, 380);
    assert!(has(&a, &Action::Execute { step: 0, item: 0, attempt: 3 }));
    m.apply(&fin(0, 3, ok()), 390);
    assert_eq!(m.state(), RunState::Succeeded);
    assert_eq!(m.tasks(0)[0].attempts, 3);
}

#[test]
fn fatal_failure_is_not_retried_and_fails_downstream() {
    let mut steps = dag(3, &[(0, 1), (1, 2)]);
    steps[0].retry.count = 5;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, fail(false)), 1);
    assert_eq!(m.step_state(0), StepState::Failed);
    assert_eq!(m.step_state(1), StepState::UpstreamFailed);
    assert_eq!(m.step_state(2), StepState::UpstreamFailed);
    assert_eq!(m.state(), RunState::Failed);
}

#[test]
fn timeout_kills_and_fences_the_late_result() {
    let mut steps = dag(1, &[]);
    steps[0].timeout_ms = Some(500);
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    let a = m.apply(&Event::Admitted { step: 0, item: 0 }, 100);
    assert!(has(&a, &Action::ArmTimer { step: 0, item: 0, attempt: 1, kind: TimerKind::Timeout, at: 600 }));
    let a = m.apply(&Event::Timer { step: 0, item: 0, attempt: 1, kind: TimerKind::Timeout }, 600);
    assert!(has(&a, &Action::Kill { step: 0, item: 0, attempt: 1, reason: KillReason::Timeout }));
    assert!(has(&a, &Action::Release { step: 0, item: 0 }));
    assert_eq!(m.step_state(0), StepState::TimedOut);
    assert_eq!(m.state(), RunState::Failed);
    // The killed attempt reports later: dropped.
    assert!(m.apply(&fin(0, 1, Outcome::Cancelled { message: "x".into() }), 700).is_empty());
    assert_eq!(m.step_state(0), StepState::TimedOut);
}

fn run_rule(rule: TriggerRule, upstream: &[Outcome]) -> StepState {
    let n = upstream.len() as u32;
    let edges: Vec<(u32, u32)> = (0..n).map(|i| (i, n)).collect();
    let mut steps = dag(n as usize + 1, &edges);
    steps[n as usize].rule = rule;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    for (i, o) in upstream.iter().enumerate() {
        m.apply(&Event::Admitted { step: i as u32, item: 0 }, 0);
        m.apply(&fin(i as u32, 1, o.clone()), 1);
    }
    assert_eq!(m.invalid_transitions(), 0);
    m.step_state(n)
}

#[test]
fn trigger_rules() {
    use StepState::*;
    use TriggerRule::*;
    let (s, f) = (ok(), fail(false));
    assert_eq!(run_rule(AllSuccess, &[s.clone(), s.clone()]), Ready);
    assert_eq!(run_rule(AllSuccess, &[s.clone(), f.clone()]), UpstreamFailed);
    assert_eq!(run_rule(AllDone, &[f.clone(), f.clone()]), Ready);
    assert_eq!(run_rule(OneSuccess, &[f.clone(), s.clone()]), Ready);
    assert_eq!(run_rule(OneSuccess, &[f.clone(), f.clone()]), UpstreamFailed);
    assert_eq!(run_rule(OneFailed, &[s.clone(), f.clone()]), Ready);
    assert_eq!(run_rule(OneFailed, &[s.clone(), s.clone()]), Skipped);
    assert_eq!(run_rule(NoneFailed, &[s.clone(), s.clone()]), Ready);
    assert_eq!(run_rule(NoneFailed, &[s.clone(), f.clone()]), UpstreamFailed);
}

#[test]
fn one_success_fires_before_all_upstreams_finish() {
    let mut steps = dag(3, &[(0, 2), (1, 2)]);
    steps[2].rule = TriggerRule::OneSuccess;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&fin(0, 1, ok()), 1);
    assert_eq!(enqueued(&a), vec![2]);
    assert_eq!(m.step_state(1), StepState::Ready);
}

#[test]
fn when_false_skips_and_skips_propagate() {
    let mut steps = dag(4, &[(0, 1), (1, 2), (1, 3)]);
    steps[1].prepare = true;
    steps[3].rule = TriggerRule::NoneFailed;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&fin(0, 1, ok()), 1);
    assert!(has(&a, &Action::Prepare { step: 1 }));
    assert!(enqueued(&a).is_empty());
    let a =
        m.apply(&Event::Prepared { step: 1, outcome: PrepareOutcome::Skip { reason: "false".into() } }, 2);
    assert_eq!(m.step_state(1), StepState::Skipped);
    assert_eq!(m.step_state(2), StepState::Skipped, "all_success after a skip is skipped");
    assert_eq!(enqueued(&a), vec![3], "none_failed runs after a skip");
    m.apply(&Event::Admitted { step: 3, item: 0 }, 3);
    m.apply(&fin(3, 1, ok()), 4);
    assert_eq!(m.state(), RunState::Succeeded);
}

#[test]
fn prepare_error_fails_the_step() {
    let mut steps = dag(1, &[]);
    steps[0].prepare = true;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Prepared { step: 0, outcome: PrepareOutcome::Error { message: "bad".into() } }, 1);
    assert_eq!(m.step_state(0), StepState::Failed);
    assert_eq!(m.state(), RunState::Failed);
}

#[test]
fn map_fans_out_and_fans_in() {
    let mut steps = dag(2, &[(0, 1)]);
    steps[0].prepare = true;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    let items = vec![Value::from(1), Value::from(2), Value::from(3)];
    let a = m.apply(&Event::Prepared { step: 0, outcome: PrepareOutcome::Map { items } }, 0);
    assert_eq!(enqueued(&a), vec![0, 0, 0]);
    for item in 0..3 {
        m.apply(&Event::Admitted { step: 0, item }, 1);
    }
    assert_eq!(m.running_count(), 3);
    for item in 0..2 {
        let a = m.apply(&Event::Finished { step: 0, item, attempt: 1, outcome: ok() }, 2);
        assert!(enqueued(&a).is_empty(), "fan-in waits for every item");
        assert_eq!(m.step_state(0), StepState::Running);
    }
    let a = m.apply(&Event::Finished { step: 0, item: 2, attempt: 1, outcome: ok() }, 2);
    assert_eq!(m.step_state(0), StepState::Succeeded);
    assert_eq!(enqueued(&a), vec![1]);
}

#[test]
fn map_item_failure_fails_the_step_after_all_items() {
    let mut steps = dag(1, &[]);
    steps[0].prepare = true;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    let items = vec![Value::from(1), Value::from(2)];
    m.apply(&Event::Prepared { step: 0, outcome: PrepareOutcome::Map { items } }, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 1);
    m.apply(&Event::Admitted { step: 0, item: 1 }, 1);
    m.apply(&Event::Finished { step: 0, item: 0, attempt: 1, outcome: fail(false) }, 2);
    assert_eq!(m.step_state(0), StepState::Running);
    m.apply(&Event::Finished { step: 0, item: 1, attempt: 1, outcome: ok() }, 3);
    assert_eq!(m.step_state(0), StepState::Failed);
}

#[test]
fn empty_map_succeeds() {
    let mut steps = dag(2, &[(0, 1)]);
    steps[0].prepare = true;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    let a = m.apply(&Event::Prepared { step: 0, outcome: PrepareOutcome::Map { items: vec![] } }, 0);
    assert_eq!(m.step_state(0), StepState::Succeeded);
    assert_eq!(enqueued(&a), vec![1]);
}

#[test]
fn cancel_kills_withdraws_and_cancels_everything() {
    let mut m = machine(dag(3, &[(0, 2)]));
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&Event::Cancel, 1);
    assert!(has(&a, &Action::Kill { step: 0, item: 0, attempt: 1, reason: KillReason::Cancel }));
    assert!(has(&a, &Action::Withdraw { step: 1, item: 0 }));
    for s in 0..3 {
        assert_eq!(m.step_state(s), StepState::Cancelled);
    }
    assert_eq!(m.state(), RunState::Cancelled);
    assert!(m.apply(&fin(0, 1, ok()), 2).is_empty());
    assert!(m.apply(&Event::Cancel, 3).is_empty());
}

#[test]
fn interrupt_keeps_successes_and_requeues_the_rest_on_resume() {
    let mut steps = dag(3, &[]);
    steps[1].retry.count = 0;
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&Event::Admitted { step: 1, item: 0 }, 0);
    let a = m.apply(&Event::Interrupt, 1);
    assert_eq!(m.state(), RunState::Interrupting);
    assert!(has(&a, &Action::Kill { step: 0, item: 0, attempt: 1, reason: KillReason::Interrupt }));
    assert!(has(&a, &Action::Withdraw { step: 2, item: 0 }));
    m.apply(&fin(0, 1, ok()), 2);
    assert_eq!(m.step_state(0), StepState::Succeeded, "finished within the grace period");
    m.apply(&fin(1, 1, Outcome::Cancelled { message: "SIGTERM".into() }), 3);
    assert_eq!(m.state(), RunState::Interrupted);
    assert_eq!(m.step_state(1), StepState::Ready, "not failed: it runs again on resume");
    let a = m.apply(&Event::Resume, 10);
    assert_eq!(m.state(), RunState::Running);
    let mut q = enqueued(&a);
    q.sort();
    assert_eq!(q, vec![1, 2]);
    let a = m.apply(&Event::Admitted { step: 1, item: 0 }, 11);
    assert!(has(&a, &Action::Execute { step: 1, item: 0, attempt: 2 }));
    assert_eq!(m.invalid_transitions(), 0);
}

#[test]
fn replay_then_resume_retries_running_attempts() {
    let mut steps = dag(2, &[(0, 1)]);
    steps[0].retry.count = 1;
    steps[1].retry = RetryPolicy { count: 1, delay_ms: 1000, ..RetryPolicy::default() };
    let log = vec![
        Event::Start,
        Event::Admitted { step: 0, item: 0 },
        fin(0, 1, ok()),
        Event::Admitted { step: 1, item: 0 },
    ];
    let mut m = machine(steps.clone());
    for e in &log {
        m.apply(e, 5);
    }
    // The engine died here. A new one replays the log and resumes.
    let mut r = machine(steps);
    for e in &log {
        r.apply(e, 5);
    }
    assert_eq!(r.running_attempts(), vec![(1, 0, 1)]);
    let a = r.apply(&Event::Resume, 100);
    assert_eq!(enqueued(&a), vec![1]);
    assert_eq!(r.step_state(0), StepState::Succeeded);
    let a = r.apply(&Event::Admitted { step: 1, item: 0 }, 101);
    assert!(has(&a, &Action::Execute { step: 1, item: 0, attempt: 2 }));
    // The lost attempt's late result is fenced off.
    assert!(r.apply(&fin(1, 1, ok()), 102).is_empty());
    r.apply(&fin(1, 2, ok()), 103);
    assert_eq!(r.state(), RunState::Succeeded);
}

#[test]
fn resume_rearms_retry_timers() {
    let mut steps = dag(1, &[]);
    steps[0].retry = RetryPolicy { count: 1, delay_ms: 1000, ..RetryPolicy::default() };
    let mut m = machine(steps);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, fail(true)), 10);
    let a = m.apply(&Event::Resume, 20);
    assert!(has(&a, &Action::ArmTimer { step: 0, item: 0, attempt: 1, kind: TimerKind::Retry, at: 1010 }));
}

#[test]
fn rejected_tasks_fail() {
    let mut m = machine(dag(1, &[]));
    m.apply(&Event::Start, 0);
    m.apply(&Event::Rejected { step: 0, item: 0, reason: "no gpu".into() }, 1);
    assert_eq!(m.step_state(0), StepState::Failed);
    assert_eq!(m.state(), RunState::Failed);
}

#[test]
fn admitted_for_a_task_not_queued_gives_the_slot_back() {
    let mut m = machine(dag(1, &[]));
    let a = m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    assert_eq!(a, vec![Action::Release { step: 0, item: 0 }]);
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    assert_eq!(a, vec![Action::Release { step: 0, item: 0 }]);
    // Events naming steps or items that do not exist are ignored, not panics.
    assert!(m.apply(&Event::Admitted { step: 99, item: 0 }, 0).len() == 1);
    assert!(m.apply(&Event::Finished { step: 99, item: 7, attempt: 1, outcome: ok() }, 0).is_empty());
    assert!(m.apply(&Event::Prepared { step: 99, outcome: PrepareOutcome::Run }, 0).is_empty());
    assert!(m.apply(&Event::Timer { step: 99, item: 0, attempt: 1, kind: TimerKind::Timeout }, 0).is_empty());
}

#[test]
fn accepts_only_current_results_and_awaited_decisions() {
    let mut steps = dag(2, &[]);
    steps[1].prepare = true;
    steps[0].timeout_ms = Some(10);
    let mut m = machine(steps);
    let prepared = Event::Prepared { step: 1, outcome: PrepareOutcome::Run };
    assert!(!m.accepts(&prepared), "not awaited before the run starts");
    m.apply(&Event::Start, 0);
    assert!(m.accepts(&prepared));
    m.apply(&prepared, 0);
    assert!(!m.accepts(&prepared), "a second decision is stale");
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    assert!(m.accepts(&fin(0, 1, ok())));
    assert!(!m.accepts(&fin(0, 2, ok())), "no such attempt yet");
    m.apply(&Event::Timer { step: 0, item: 0, attempt: 1, kind: TimerKind::Timeout }, 10);
    assert!(!m.accepts(&fin(0, 1, ok())), "the attempt timed out; its late success is stale");
}

/// A chain whose middle step waits for a decision (an approval) for at most 1000 ms.
fn approval_chain() -> RunMachine {
    let mut steps = dag(3, &[(0, 1), (1, 2)]);
    steps[1].wait = true;
    steps[1].timeout_ms = Some(1000);
    steps[1].retry.count = 3;
    machine(steps)
}

#[test]
fn a_waiting_step_holds_no_slot_and_its_decision_moves_the_run() {
    let mut m = approval_chain();
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    let a = m.apply(&fin(0, 1, ok()), 10);
    assert_eq!(m.step_state(1), StepState::Waiting);
    assert!(enqueued(&a).is_empty(), "it is never queued: {a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::Execute { .. })));
    assert!(has(&a, &Action::ArmTimer { step: 1, item: 0, attempt: 1, kind: TimerKind::Timeout, at: 1010 }));
    assert_eq!(m.running_count(), 0);
    assert_eq!(m.waiting(1, 0), Some(1));
    // Another attempt's result is fenced off; the decision is attempt 1's.
    assert!(m.apply(&fin(1, 2, ok()), 20).is_empty());
    let a = m.apply(&fin(1, 1, ok()), 30);
    assert!(!has(&a, &Action::Release { step: 1, item: 0 }), "it held no slot");
    assert_eq!(m.step_state(1), StepState::Succeeded);
    assert_eq!(enqueued(&a), vec![2]);
    // A second decision, and its late deadline, change nothing.
    assert!(m.apply(&fin(1, 1, fail(false)), 40).is_empty());
    m.apply(&Event::Timer { step: 1, item: 0, attempt: 1, kind: TimerKind::Timeout }, 1010);
    assert_eq!(m.step_state(1), StepState::Succeeded);
    m.apply(&Event::Admitted { step: 2, item: 0 }, 50);
    m.apply(&fin(2, 1, ok()), 60);
    assert_eq!(m.state(), RunState::Succeeded);
    assert_eq!(m.invalid_transitions(), 0);
}

#[test]
fn a_rejection_fails_without_retries_and_a_deadline_times_out() {
    let mut m = approval_chain();
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, ok()), 10);
    m.apply(&fin(1, 1, fail(true)), 20);
    assert_eq!(m.step_state(1), StepState::Failed, "a rejection is final, whatever the retry policy");
    assert_eq!(m.step_state(2), StepState::UpstreamFailed);
    assert_eq!(m.state(), RunState::Failed);

    let mut m = approval_chain();
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, ok()), 10);
    let a = m.apply(&Event::Timer { step: 1, item: 0, attempt: 1, kind: TimerKind::Timeout }, 1010);
    assert!(!a.iter().any(|x| matches!(x, Action::Kill { .. } | Action::Release { .. })), "{a:?}");
    assert_eq!(m.step_state(1), StepState::TimedOut);
    assert_eq!(m.state(), RunState::Failed);
    assert_eq!(m.invalid_transitions(), 0);
}

#[test]
fn a_wait_survives_interrupt_and_resume_and_may_be_decided_meanwhile() {
    let mut m = approval_chain();
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, ok()), 10);
    m.apply(&Event::Interrupt, 20);
    assert_eq!(m.state(), RunState::Interrupted, "a wait holds nothing that must stop");
    assert_eq!(m.step_state(1), StepState::Waiting);
    // Decided while no engine drives the run: the next step is queued on resume.
    let a = m.apply(&fin(1, 1, ok()), 30);
    assert!(enqueued(&a).is_empty(), "not while interrupted");
    assert_eq!(m.step_state(1), StepState::Succeeded);
    let a = m.apply(&Event::Resume, 40);
    assert_eq!(enqueued(&a), vec![2]);

    // Still waiting when a new engine takes over: its deadline is armed again.
    let mut m = approval_chain();
    m.apply(&Event::Start, 0);
    m.apply(&Event::Admitted { step: 0, item: 0 }, 0);
    m.apply(&fin(0, 1, ok()), 10);
    let a = m.apply(&Event::Resume, 500);
    assert!(
        has(&a, &Action::ArmTimer { step: 1, item: 0, attempt: 1, kind: TimerKind::Timeout, at: 1010 }),
        "{a:?}"
    );
    assert_eq!(m.step_state(1), StepState::Waiting);
    // Cancel ends the wait.
    m.apply(&Event::Cancel, 600);
    assert_eq!(m.step_state(1), StepState::Cancelled);
    assert_eq!(m.state(), RunState::Cancelled);
    assert_eq!(m.invalid_transitions(), 0);
}
