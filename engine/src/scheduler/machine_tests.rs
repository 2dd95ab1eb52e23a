//! Unit tests of every transition, and property tests: random event orders (with crashes,
//! stale and duplicate results) never reach an invalid state, and a fair driver always
//! finishes the run.

use super::*;
use crate::scheduler::{ResourceRequest, RetryPolicy};
use crate::spec::Backoff;
use crate::spec::TriggerRule;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn dag(n: usize, edges: &[(u32, u32)]) -> Vec<CoreStep> {
    let mut steps: Vec<CoreStep> = (0..n)
        .map(|_| CoreStep {
            upstream: vec![],
            downstream: vec![],
            rule: TriggerRule::AllSuccess,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            priority: 0,
            resources: ResourceRequest { cpu: 1, memory: 0, gpu: 0 },
            prepare: false,
        })
        .collect();
    for &(a, b) in edges {
        steps[a as usize].downstream.push(b);
        steps[b as usize].upstream.push(a);
    }
    steps
}

fn machine(steps: Vec<CoreStep>) -> RunMachine {
    RunMachine::new(Arc::new(steps), 42)
}

fn ok() -> Outcome {
    Outcome::Succeeded { outputs: Map::new() }
}

fn fail(retryable: bool) -> Outcome {
    Outcome::Failed { retryable, message: "boom".into() }
}

fn fin(step: StepIx, attempt: u32, outcome: Outcome) -> Event {
    Event::Finished { step, item: 0, attempt, outcome }
}

fn has(actions: &[Action], want: &Action) -> bool {
    actions.contains(want)
}

fn enqueued(actions: &[Action]) -> Vec<StepIx> {
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

// ---------------------------------------------------------------------------------------
// Property tests.

#[derive(Debug, Clone)]
struct Shape {
    steps: Vec<CoreStep>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..8)
        .prop_flat_map(|n| {
            let edges = proptest::collection::vec((0..n as u32, 0..n as u32), 0..n * 2);
            let rules = proptest::collection::vec(0u8..5, n);
            let flags = proptest::collection::vec((any::<bool>(), 0u32..3, any::<bool>()), n);
            (Just(n), edges, rules, flags)
        })
        .prop_map(|(n, edges, rules, flags)| {
            let mut e: Vec<(u32, u32)> = edges
                .into_iter()
                .filter(|(a, b)| a < b)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            e.sort();
            let mut steps = dag(n, &e);
            for (i, s) in steps.iter_mut().enumerate() {
                s.rule = match rules[i] {
                    0 => TriggerRule::AllSuccess,
                    1 => TriggerRule::AllDone,
                    2 => TriggerRule::OneSuccess,
                    3 => TriggerRule::OneFailed,
                    _ => TriggerRule::NoneFailed,
                };
                s.prepare = flags[i].0;
                s.retry = RetryPolicy { count: flags[i].1, delay_ms: 10, ..RetryPolicy::default() };
                s.timeout_ms = flags[i].2.then_some(50);
            }
            Shape { steps }
        })
}

/// A simulated driver: it turns actions into events to deliver later, in an order the test
/// chooses, and it can crash (replay the log into a new machine and resume).
struct Sim {
    steps: Arc<Vec<CoreStep>>,
    machine: RunMachine,
    log: Vec<Event>,
    pending: Vec<Event>,
    now: Millis,
    executions: std::collections::HashSet<(StepIx, u32, u32)>,
    successes: std::collections::HashMap<(StepIx, u32), u32>,
}

impl Sim {
    fn new(shape: &Shape) -> Self {
        let steps = Arc::new(shape.steps.clone());
        Self {
            machine: RunMachine::new(steps.clone(), 7),
            steps,
            log: Vec::new(),
            pending: Vec::new(),
            now: 0,
            executions: Default::default(),
            successes: Default::default(),
        }
    }

    /// A run is created with its `Start` event already in the log.
    fn started(shape: &Shape) -> Self {
        let mut sim = Sim::new(shape);
        sim.deliver(Event::Start, 3);
        sim
    }

    fn deliver(&mut self, event: Event, choice: u8) {
        self.now += 1;
        let before_run = self.machine.state();
        let before: Vec<StepState> =
            (0..self.steps.len() as u32).map(|s| self.machine.step_state(s)).collect();
        if let Event::Finished { step, item, attempt, outcome: Outcome::Succeeded { .. } } = &event
            && self
                .machine
                .tasks(*step)
                .get(*item as usize)
                .is_some_and(|t| matches!(t.state, TaskState::Running { attempt: a, .. } if a == *attempt))
            && self.machine.state() == RunState::Running
        {
            *self.successes.entry((*step, *item)).or_default() += 1;
        }
        self.log.push(event.clone());
        let actions = self.machine.apply(&event, self.now);
        for a in actions {
            match a {
                Action::Prepare { step } => self.pending.push(Event::Prepared {
                    step,
                    outcome: match choice % 4 {
                        0 => PrepareOutcome::Skip { reason: "no".into() },
                        1 => PrepareOutcome::Map { items: vec![Value::Null; (choice % 3) as usize] },
                        2 => PrepareOutcome::Error { message: "bad".into() },
                        _ => PrepareOutcome::Run,
                    },
                }),
                Action::Enqueue { step, item, .. } => self.pending.push(Event::Admitted { step, item }),
                Action::Execute { step, item, attempt } => {
                    assert!(self.executions.insert((step, item, attempt)), "attempt executed twice");
                    assert_eq!(self.machine.state(), RunState::Running, "executes only while running");
                    let outcome = match choice % 5 {
                        0 => fail(true),
                        1 => fail(false),
                        2 => Outcome::TimedOut { message: "t".into() },
                        _ => ok(),
                    };
                    self.pending.push(Event::Finished { step, item, attempt, outcome });
                }
                Action::ArmTimer { step, item, attempt, kind, .. } => {
                    self.pending.push(Event::Timer { step, item, attempt, kind })
                }
                Action::Kill { step, item, attempt, .. } => self.pending.push(Event::Finished {
                    step,
                    item,
                    attempt,
                    outcome: Outcome::Cancelled { message: "killed".into() },
                }),
                Action::Withdraw { .. } | Action::Release { .. } => {}
                Action::StepChanged { .. } | Action::RunChanged { .. } => {}
            }
        }
        self.check(before_run, &before);
    }

    fn crash(&mut self) {
        let mut fresh = RunMachine::new(self.steps.clone(), 7);
        for (i, e) in self.log.iter().enumerate() {
            fresh.apply(e, i as Millis);
        }
        self.machine = fresh;
        // Everything in flight died with the old process, except that late results of old
        // attempts may still arrive (they must be fenced off).
        self.pending.retain(|e| matches!(e, Event::Finished { .. }));
        self.deliver(Event::Resume, 3);
    }

    fn check(&self, before_run: RunState, before: &[StepState]) {
        let m = &self.machine;
        assert_eq!(m.invalid_transitions(), 0, "an invalid transition was attempted");
        if before_run.is_terminal() {
            assert_eq!(m.state(), before_run, "a finished run changed state");
        }
        let mut running = 0;
        let mut all_terminal = true;
        for s in 0..self.steps.len() as u32 {
            let st = m.step_state(s);
            if before[s as usize].is_terminal() {
                assert_eq!(st, before[s as usize], "a finished step changed state");
            }
            all_terminal &= st.is_terminal();
            let tasks = m.tasks(s);
            running += tasks.iter().filter(|t| matches!(t.state, TaskState::Running { .. })).count();
            if !tasks.is_empty() && st != StepState::Cancelled {
                assert_eq!(st.is_terminal(), tasks.iter().all(|t| t.state.is_terminal()), "step {s} is {st}");
            }
            if matches!(st, StepState::Running | StepState::Retrying | StepState::Succeeded)
                && !tasks.is_empty()
                && !self.steps[s as usize].upstream.is_empty()
            {
                let cs = &self.steps[s as usize];
                let ups: Vec<StepState> = cs.upstream.iter().map(|u| m.step_state(*u)).collect();
                match cs.rule {
                    TriggerRule::AllSuccess => assert!(ups.iter().all(|u| *u == StepState::Succeeded)),
                    TriggerRule::AllDone => assert!(ups.iter().all(|u| u.is_terminal())),
                    TriggerRule::OneSuccess => assert!(ups.contains(&StepState::Succeeded)),
                    TriggerRule::OneFailed => assert!(ups.iter().any(|u| u.is_failure())),
                    TriggerRule::NoneFailed => {
                        assert!(ups.iter().all(|u| u.is_terminal() && !u.is_failure()))
                    }
                }
            }
        }
        assert_eq!(running, m.running_count(), "running count drifted");
        if m.state() == RunState::Interrupted {
            assert_eq!(running, 0, "an interrupted run has nothing running");
        }
        if m.state().is_terminal() {
            assert!(all_terminal, "a finished run has unfinished steps");
        }
        if all_terminal && matches!(m.state(), RunState::Running) {
            panic!("every step finished but the run did not");
        }
        for (k, n) in &self.successes {
            assert!(*n <= 1, "task {k:?} succeeded {n} times");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_event_orders_never_reach_an_invalid_state(
        shape in shape(),
        script in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..120),
    ) {
        let mut sim = Sim::started(&shape);
        for (pick, choice) in script {
            match choice {
                // Faults and user actions, now and then.
                250 => sim.crash(),
                251 => sim.deliver(Event::Interrupt, choice),
                252 => sim.deliver(Event::Resume, choice),
                253 => sim.deliver(Event::Cancel, choice),
                254 => {
                    // A duplicate of something already applied.
                    if let Some(e) = sim.log.get(pick as usize % sim.log.len().max(1)).cloned() {
                        sim.deliver(e, choice);
                    }
                }
                _ => {
                    if sim.pending.is_empty() {
                        continue;
                    }
                    let i = pick as usize % sim.pending.len();
                    let e = sim.pending.swap_remove(i);
                    sim.deliver(e, choice);
                }
            }
        }
        // Liveness: a fair driver with no more faults finishes the run.
        if sim.machine.state() == RunState::Interrupted || sim.machine.state() == RunState::Interrupting {
            sim.crash();
        }
        let mut guard = 0;
        while !sim.machine.state().is_terminal() {
            guard += 1;
            prop_assert!(guard < 10_000, "the run never finished");
            prop_assert!(!sim.pending.is_empty(), "the run is stuck: nothing left to deliver");
            let e = sim.pending.remove(0);
            sim.deliver(e, 3);
        }
    }
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
