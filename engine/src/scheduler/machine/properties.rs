//! Property tests of the run machine: random event orders (with crashes, stale and duplicate
//! results) never reach an invalid state, and a fair driver always finishes the run.

use super::tests::{dag, fail, ok};
use super::*;
use crate::scheduler::RetryPolicy;
use crate::spec::TriggerRule;
use proptest::prelude::*;
use serde_json::Value;

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
            let flags = proptest::collection::vec((any::<bool>(), 0u32..3, any::<bool>(), 0u8..5), n);
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
                // Some steps wait for a decision (approvals) instead of running.
                s.wait = flags[i].3 == 0;
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
            && self.machine.tasks(*step).get(*item as usize).is_some_and(|t| match t.state {
                TaskState::Running { attempt: a, .. } => {
                    a == *attempt && self.machine.state() == RunState::Running
                }
                TaskState::Waiting { attempt: a, .. } => a == *attempt,
                _ => false,
            })
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
                Action::StepChanged { step, state: StepState::Waiting } => {
                    // Someone decides, some time later: approve or reject each item.
                    for item in 0..self.machine.tasks(step).len() as u32 {
                        let outcome = if choice.is_multiple_of(3) { fail(false) } else { ok() };
                        self.pending.push(Event::Finished { step, item, attempt: 1, outcome });
                    }
                }
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
            if matches!(
                st,
                StepState::Running | StepState::Retrying | StepState::Waiting | StepState::Succeeded
            ) && !tasks.is_empty()
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

/// Found by the property test: an approval decided (rejected) while the run was interrupted
/// finished its last step; the resume must end the run, not leave it running with nothing
/// to do.
#[test]
fn a_decision_taken_while_interrupted_lets_the_resume_end_the_run() {
    let mut steps = dag(2, &[(0, 1)]);
    steps[0].retry = RetryPolicy { count: 1, delay_ms: 10, ..RetryPolicy::default() };
    steps[0].timeout_ms = Some(50);
    steps[1].rule = TriggerRule::AllDone;
    steps[1].wait = true;
    let shape = Shape { steps };
    let mut sim = Sim::started(&shape);
    for (pick, choice) in
        [(0u16, 107u8), (2004, 0), (0, 0), (0, 0), (0, 0), (27176, 0), (0, 251), (0, 0), (0, 0)]
    {
        match choice {
            251 => sim.deliver(Event::Interrupt, choice),
            _ => {
                let i = pick as usize % sim.pending.len();
                let e = sim.pending.swap_remove(i);
                sim.deliver(e, choice);
            }
        }
    }
    assert_eq!(sim.machine.state(), RunState::Interrupted);
    assert!((0..2).all(|s| sim.machine.step_state(s).is_terminal()));
    sim.crash();
    assert_eq!(sim.machine.state(), RunState::Failed);
}
