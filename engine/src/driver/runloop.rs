//! The driver loop: persist a batch of events, apply them, flush once, then act.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sluice_worker::{ExecutorSet, LogStream};
use tokio::sync::{mpsc, watch};

use super::attempt::{self, Done, Running, Start};
use super::control::{Control, Notice, crash};
use super::render::{self, RunView};
use super::replay::Notes;
use super::{Engine, EngineError, Result};
use crate::compile::Plan;
use crate::scheduler::{
    Action, Admission, Event, KillReason, Outcome, RunMachine, RunState, StepIx, TimerKind,
};
use crate::store::{EventRecord, FORMAT_VERSION, ProducedBy, RunRecord};

/// What a driver does with the runs it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Start or resume them.
    Drive,
    /// Cancel them without running anything more.
    Cancel,
}

struct Active {
    plan: Arc<Plan>,
    machine: RunMachine,
    record: RunRecord,
    next_seq: u64,
    notes: Notes,
    kills: HashMap<(StepIx, u32, u32), Running>,
    /// Slurm attempts an earlier engine left running, by task: the next attempt of the task
    /// looks for their job and adopts it.
    lost: HashMap<(StepIx, u32), u32>,
    run_dir_made: bool,
    /// The run's tracing span: every attempt's span is a child of it.
    span: tracing::Span,
}

impl Active {
    /// What templates of this run can see.
    fn view<'a>(&'a self, id: u64, store: &'a crate::store::Store) -> RunView<'a> {
        RunView {
            id,
            plan: &self.plan,
            params: &self.record.params,
            outputs: &self.notes.outputs,
            artifacts: &self.notes.artifacts,
            data_dir: store.dir(),
            blobs: store.blobs(),
            machine: &self.machine,
            trigger: self.record.trigger,
            cause: self.record.cause.as_ref(),
            cache: &self.record.cache,
        }
    }

    fn done(&self) -> bool {
        let s = self.machine.state();
        (s.is_terminal() || s == RunState::Interrupted) && self.kills.is_empty()
    }
}

/// An armed timer: what fires, for which attempt.
struct Timer {
    run: u64,
    step: StepIx,
    item: u32,
    attempt: u32,
    kind: TimerKind,
}

struct Driver<'e> {
    engine: &'e Engine,
    executors: ExecutorSet,
    runs: HashMap<u64, Active>,
    admission: Admission,
    timers: BTreeMap<(i64, u64), Timer>,
    timer_seq: u64,
    backlog: VecDeque<(u64, Event)>,
    tx: mpsc::UnboundedSender<Done>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
    commits: u64,
    grace: Duration,
    /// Step cache entries of results in the backlog, stored in the batch that logs them.
    cache: HashMap<(u64, StepIx, u32, u32), crate::store::CacheEntry>,
    /// Decisions in the backlog, recorded in the batch that logs them (if the run takes
    /// them), with whom to tell.
    deciding: HashMap<(u64, StepIx, u32, u32), Deciding>,
    /// Answers sent once the batch they wait for is durable.
    replies: Vec<(Reply, std::result::Result<(), String>)>,
    /// When each queued task entered the queue, and each attempt started in this process
    /// (for the admission wait and step duration metrics).
    queued_at: HashMap<(u64, StepIx, u32), std::time::Instant>,
    started_at: HashMap<(u64, StepIx, u32, u32), std::time::Instant>,
}

/// Whom to tell whether a run took a decision.
type Reply = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// A decision on its way into a batch, and whom to tell.
type Deciding = (Box<super::Decided>, Reply);

impl Engine {
    /// Drives runs until each has finished or been interrupted. `runs` are loaded from the
    /// store: a run that never started is started, one left running by a dead engine
    /// resumes (its orphaned processes are killed and its running attempts retried), and an
    /// interrupted one resumes. Each change to `shutdown` asks for a graceful stop; the
    /// second one kills at once. Returns each run's final state.
    pub async fn drive(
        &self,
        runs: &[u64],
        notices: Option<mpsc::UnboundedSender<Notice>>,
        shutdown: watch::Receiver<u32>,
    ) -> Result<HashMap<u64, RunState>> {
        let (_keep, controls) = mpsc::unbounded_channel();
        self.drive_with(runs, notices, shutdown, controls).await
    }

    /// [`Engine::drive`], also taking requests about single runs (cancel) while it drives.
    pub async fn drive_with(
        &self,
        runs: &[u64],
        notices: Option<mpsc::UnboundedSender<Notice>>,
        shutdown: watch::Receiver<u32>,
        controls: mpsc::UnboundedReceiver<Control>,
    ) -> Result<HashMap<u64, RunState>> {
        self.run_loop(runs, Intent::Drive, notices, shutdown, controls, false).await
    }

    /// The driver of a server: drives `runs`, then every run sent as [`Control::Start`],
    /// until `shutdown` changes and the runs it drives have stopped (interrupted runs go on
    /// when the next server starts). Runs that end are let go, so memory stays flat.
    pub async fn serve(
        &self,
        runs: &[u64],
        notices: Option<mpsc::UnboundedSender<Notice>>,
        shutdown: watch::Receiver<u32>,
        controls: mpsc::UnboundedReceiver<Control>,
    ) -> Result<HashMap<u64, RunState>> {
        self.run_loop(runs, Intent::Drive, notices, shutdown, controls, true).await
    }

    /// Cancels runs no engine is driving (interrupted, or left by a dead engine): what is
    /// left of their attempts is killed and removed, and nothing more runs.
    pub async fn cancel_idle(&self, runs: &[u64]) -> Result<HashMap<u64, RunState>> {
        let (_keep, controls) = mpsc::unbounded_channel();
        self.run_loop(runs, Intent::Cancel, None, watch::channel(0).1, controls, false).await
    }

    async fn run_loop(
        &self,
        runs: &[u64],
        intent: Intent,
        notices: Option<mpsc::UnboundedSender<Notice>>,
        mut shutdown: watch::Receiver<u32>,
        mut controls: mpsc::UnboundedReceiver<Control>,
        serving: bool,
    ) -> Result<HashMap<u64, RunState>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Driver {
            engine: self,
            executors: self.executors.clone(),
            runs: HashMap::new(),
            admission: Admission::new(self.opts.capacity),
            timers: BTreeMap::new(),
            timer_seq: 0,
            backlog: VecDeque::new(),
            tx,
            notices,
            commits: 0,
            grace: self.opts.grace,
            cache: HashMap::new(),
            deciding: HashMap::new(),
            replies: Vec::new(),
            queued_at: HashMap::new(),
            started_at: HashMap::new(),
        };
        for &id in runs {
            match d.load(id, intent) {
                Ok(()) => {}
                // A server keeps serving the other runs.
                Err(e) if serving => tracing::error!(run = id, error = %e, "cannot resume the run"),
                Err(e) => return Err(e),
            }
        }
        d.reap_containers().await;
        let store = self.store().clone();
        let mut stops = 0u32;
        let mut stop_open = true;
        let mut controls_open = true;
        while !d.backlog.is_empty()
            || !d.runs.values().all(Active::done)
            || (serving && stops == 0 && controls_open)
        {
            if d.backlog.is_empty() {
                let next_timer = d.timers.keys().next().map(|(at, _)| *at);
                let now = self.now_ms();
                let sleep = async {
                    match next_timer {
                        Some(at) => tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    Some(done) = rx.recv() => d.finished(done),
                    _ = sleep => {}
                    // A step's log could not be stored: the disk is full, most often.
                    why = store.failure() => return Err(d.abandon(why, &mut rx).await),
                    control = controls.recv(), if controls_open => match control {
                        Some(Control::Cancel(run)) if d.runs.contains_key(&run) => d.backlog.push_back((run, Event::Cancel)),
                        Some(Control::Cancel(run)) if serving => {
                            // A run waiting in the server's queue: cancel it from the store.
                            if let Err(e) = d.load(run, Intent::Cancel) {
                                tracing::error!(run, error = %e, "cannot cancel the run");
                            }
                        }
                        Some(Control::Cancel(run)) => tracing::warn!(run, "asked to cancel a run this engine does not drive"),
                        Some(Control::Start(run)) if serving && stops == 0 && !d.runs.contains_key(&run) => {
                            if let Err(e) = d.load(run, Intent::Drive) {
                                tracing::error!(run, error = %e, "cannot start the run");
                            }
                        }
                        Some(Control::Start(run)) => tracing::warn!(run, "not starting the run: the engine is stopping or already drives it"),
                        Some(Control::Decide(decided, reply)) if d.runs.contains_key(&decided.run) => {
                            let key = (decided.run, decided.step, decided.item, decided.attempt);
                            d.backlog.push_back((decided.run, decided.event()));
                            d.deciding.insert(key, (decided, reply));
                        }
                        Some(Control::Decide(decided, reply)) => {
                            // A run this driver does not hold (interrupted): into its log.
                            let _ = reply.send(self.apply_decision_idle(&decided).map_err(|e| e.to_string()));
                        }
                        None => controls_open = false,
                    },
                    changed = shutdown.changed(), if stop_open => {
                        if changed.is_ok() {
                            stops += 1;
                            d.stop(stops > 1);
                        } else {
                            // Nobody can ask for a stop any more; keep driving.
                            stop_open = false;
                        }
                    }
                }
            }
            while let Ok(done) = rx.try_recv() {
                d.finished(done);
            }
            d.fire_timers();
            if let Err(e) = d.step() {
                return Err(d.abandon(e.to_string(), &mut rx).await);
            }
            if serving {
                // A server lets go of runs that have ended.
                let gone: Vec<u64> = d.runs.iter().filter(|(_, a)| a.done()).map(|(id, _)| *id).collect();
                for id in gone {
                    d.runs.remove(&id);
                    d.admission.forget_run(id);
                }
            }
        }
        Ok(d.runs.iter().map(|(id, a)| (*id, a.machine.state())).collect())
    }
}

impl Driver<'_> {
    fn load(&mut self, id: u64, intent: Intent) -> Result<()> {
        let r = self.engine.replay(id, |_, _, _, _| {})?;
        let plan = r.plan.clone();
        let active = Active {
            plan: r.plan,
            machine: r.machine,
            record: r.record,
            next_seq: r.next_seq,
            notes: r.notes,
            kills: HashMap::new(),
            lost: HashMap::new(),
            run_dir_made: false,
            span: tracing::info_span!("run", run = id, pipeline = plan.name()),
        };
        self.admission.set_run_limit(id, plan.spec.concurrency);
        let state = active.machine.state();
        self.runs.insert(id, active);
        match state {
            RunState::Pending if intent == Intent::Drive => self.backlog.push_back((id, Event::Start)),
            RunState::Pending => self.backlog.push_back((id, Event::Cancel)),
            RunState::Running | RunState::Interrupting | RunState::Interrupted => {
                let a = self.runs.get_mut(&id).expect("just inserted");
                for (step, item, attempt) in a.machine.running_attempts() {
                    let dir = self.engine.store().dir();
                    if attempt::on_slurm(self.engine, &a.plan, step)
                        || attempt::went_to_slurm(dir, id, &a.plan, step, item, attempt)
                    {
                        if intent == Intent::Drive {
                            // A batch job outlives the engine: the next attempt adopts it.
                            a.lost.insert((step, item), attempt);
                        } else if let Err(e) =
                            self.executors.slurm().cancel_left(id, a.plan.id(step), item, attempt)
                        {
                            tracing::warn!(run = id, error = %e, "cannot cancel the Slurm job an earlier engine left; cancel it with scancel");
                        }
                        continue;
                    }
                    let file =
                        attempt::process_file(self.engine.store().dir(), id, &a.plan, step, item, attempt);
                    match super::sink::reap(&file) {
                        Ok(Some(pid)) => {
                            tracing::warn!(
                                run = id,
                                pid,
                                "killed a step process left over from an earlier engine"
                            )
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            run = id,
                            error = %e,
                            "cannot tell whether a step process of an earlier engine is still running; if one is, stop it by hand"
                        ),
                    }
                }
                let event = if intent == Intent::Drive { Event::Resume } else { Event::Cancel };
                self.backlog.push_back((id, event));
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes containers a dead engine left behind; they belong to attempts that are about
    /// to run again. Only asks Docker when a run here has container steps.
    async fn reap_containers(&self) {
        let any = self.runs.values().any(|a| a.plan.steps.iter().any(|s| s.kind.hooks().uses_docker()));
        if !any {
            return;
        }
        match self.executors.container().reap().await {
            Ok(names) if !names.is_empty() => {
                tracing::warn!(containers = ?names, "removed containers left over from an earlier engine")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for leftover containers"),
        }
    }

    fn finished(&mut self, done: Done) {
        if let Some(a) = self.runs.get_mut(&done.run) {
            a.kills.remove(&(done.step, done.item, done.attempt));
        }
        if let Some(entry) = done.cache {
            self.cache.insert((done.run, done.step, done.item, done.attempt), entry);
        }
        let event = Event::Finished {
            step: done.step,
            item: done.item,
            attempt: done.attempt,
            outcome: done.outcome,
        };
        self.backlog.push_back((done.run, event));
    }

    fn fire_timers(&mut self) {
        let now = self.engine.now_ms();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let Timer { run, step, item, attempt, kind } = entry.remove();
            self.backlog.push_back((run, Event::Timer { step, item, attempt, kind }));
        }
    }

    /// The store refused a write (a full disk, most often): nothing more can be recorded, so
    /// nothing more may run. Every attempt is stopped and waited for (so that no process
    /// outlives the engine unrecorded), and the error names the runs left for `resume`: their
    /// logs end at the last write that worked, which is what a restarted engine replays.
    async fn abandon(&mut self, reason: String, rx: &mut mpsc::UnboundedReceiver<Done>) -> EngineError {
        let runs: Vec<u64> = self.runs.iter().filter(|(_, a)| !a.done()).map(|(id, _)| *id).collect();
        tracing::error!(error = %reason, ?runs, "the store cannot be written; stopping every attempt and the engine");
        let grace = self.grace.min(Duration::from_secs(5));
        let mut running = 0usize;
        for a in self.runs.values() {
            for (k, _) in a.kills.values() {
                k.kill(grace);
                running += 1;
            }
        }
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(5);
        while running > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(_)) => running -= 1,
                _ => break,
            }
        }
        if running > 0 {
            tracing::error!(running, "attempts did not stop in time; a restarted engine stops them");
        }
        let _ = self.engine.store().flush();
        EngineError::Abandoned { reason, dir: self.engine.store().dir().to_path_buf(), runs }
    }

    fn stop(&mut self, hard: bool) {
        if hard {
            self.grace = Duration::ZERO;
            for a in self.runs.values() {
                for (k, _) in a.kills.values() {
                    k.kill(Duration::ZERO);
                }
            }
            return;
        }
        for (id, a) in &self.runs {
            if a.machine.state() == RunState::Running {
                self.backlog.push_back((*id, Event::Interrupt));
            }
        }
    }

    /// One batch: persist and apply every queued event (and the admissions they allow),
    /// make it durable with one flush, then act.
    fn step(&mut self) -> Result<()> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let now = self.engine.now_ms();
        let store = self.engine.store().clone();
        let mut external: Vec<(u64, Action)> = Vec::new();
        loop {
            while let Some((run, event)) = self.backlog.pop_front() {
                let Some(a) = self.runs.get_mut(&run) else { continue };
                store.append_event(
                    run,
                    &EventRecord { v: FORMAT_VERSION, seq: a.next_seq, at: now, event: event.clone() },
                )?;
                a.next_seq += 1;
                let entry = match &event {
                    Event::Finished { step, item, attempt, .. } => {
                        self.cache.remove(&(run, *step, *item, *attempt))
                    }
                    _ => None,
                };
                let decided = match &event {
                    Event::Finished { step, item, attempt, .. } => {
                        self.deciding.remove(&(run, *step, *item, *attempt))
                    }
                    _ => None,
                };
                if let Some((d, reply)) = decided {
                    // A decision is on record only if the run takes it, in the batch that logs it.
                    let answer = if a.machine.accepts(&event) {
                        self.engine.record_decision(&d)?;
                        Ok(())
                    } else {
                        Err(format!("step `{}` of run {run} no longer waits for a decision", d.step_id))
                    };
                    self.replies.push((reply, answer));
                }
                if a.machine.accepts(&event) {
                    match &event {
                        Event::Finished { step, item, attempt, outcome } => {
                            let took = self.started_at.remove(&(run, *step, *item, *attempt));
                            let kind = a.plan.steps[*step as usize].kind.key();
                            let outcome = match outcome {
                                Outcome::Succeeded { cached: Some(_), .. } => "cached",
                                Outcome::Succeeded { .. } => "succeeded",
                                Outcome::Failed { retryable: true, .. } => "failed_retryable",
                                Outcome::Failed { .. } => "failed",
                                Outcome::TimedOut { .. } => "timed_out",
                                Outcome::Cancelled { .. } => "cancelled",
                            };
                            crate::metrics::attempt_finished(kind, outcome, took.map(|t| t.elapsed()));
                        }
                        Event::Admitted { step, item } => {
                            if let Some(at) = self.queued_at.remove(&(run, *step, *item)) {
                                crate::metrics::admitted(at.elapsed());
                            }
                        }
                        _ => {}
                    }
                    // A result the cache may reuse is stored in the batch that logs it.
                    if let Some(entry) = entry {
                        store.put_cache_entry(&entry)?;
                    }
                    a.notes.note(&event);
                    // What the attempt produced is indexed in the same batch as its result.
                    if let Event::Finished {
                        step,
                        item,
                        attempt,
                        outcome: Outcome::Succeeded { artifacts, .. },
                    } = &event
                        && !artifacts.is_empty()
                    {
                        let by = ProducedBy {
                            run,
                            pipeline: a.plan.name(),
                            step_ix: *step,
                            step: a.plan.id(*step),
                            item: *item,
                            attempt: *attempt,
                            at: now,
                        };
                        store.put_artifacts(by, artifacts)?;
                    }
                }
                let actions = a.machine.apply(&event, now);
                for action in actions {
                    self.internal(run, action, now, &mut external)?;
                }
            }
            for (grant, why) in self.admission.take_misfits() {
                self.backlog.push_back((
                    grant.run,
                    Event::Rejected { step: grant.step, item: grant.item, reason: why },
                ));
            }
            for g in self.admission.poll() {
                self.backlog.push_back((g.run, Event::Admitted { step: g.step, item: g.item }));
            }
            if self.backlog.is_empty() {
                break;
            }
        }
        crate::metrics::tasks(self.admission.queued(), self.admission.running());
        self.commits += 1;
        if self.engine.opts.fault == Some(super::Fault::BeforeCommit(self.commits)) {
            crash();
        }
        store.flush()?;
        if self.engine.opts.fault == Some(super::Fault::AfterCommit(self.commits)) {
            crash();
        }
        for (reply, answer) in self.replies.drain(..) {
            let _ = reply.send(answer);
        }
        for (run, action) in external {
            self.external(run, action);
        }
        Ok(())
    }

    /// Actions that only change the driver's own state; they ride in the current batch.
    fn internal(
        &mut self,
        run: u64,
        action: Action,
        now: i64,
        external: &mut Vec<(u64, Action)>,
    ) -> Result<()> {
        match action {
            Action::Prepare { step } => {
                let a = &self.runs[&run];
                let view = a.view(run, self.engine.store());
                let outcome = render::prepare(&view, step);
                self.backlog.push_back((run, Event::Prepared { step, outcome }));
            }
            Action::Enqueue { step, item, priority, mut resources } => {
                self.queued_at.insert((run, step, item), std::time::Instant::now());
                // Where a step runs is the driver's to say (`--slurm` is the engine's): the
                // plan's core leaves `remote` unset.
                resources.remote = attempt::on_slurm(self.engine, &self.runs[&run].plan, step);
                self.admission.enqueue(run, step, item, priority, resources)
            }
            Action::Withdraw { step, item } => {
                self.queued_at.remove(&(run, step, item));
                self.admission.withdraw(run, step, item)
            }
            Action::Release { step, item } => self.admission.release(run, step, item),
            Action::StepChanged { step, state } => {
                let a = &self.runs[&run];
                let attempt = a.machine.tasks(step).iter().map(|t| t.attempts).max().unwrap_or(0);
                self.notify(Notice::Step { run, step: a.plan.id(step).to_string(), state, attempt });
            }
            Action::RunChanged { state } => {
                let a = self.runs.get_mut(&run).expect("active run");
                a.record.state = state;
                let lineage = self.engine.lineage().map(|e| {
                    (
                        e,
                        super::openlineage::dag_run_id(self.engine.store().dir(), run),
                        a.plan.name().to_string(),
                    )
                });
                if state == RunState::Running && a.record.started_at.is_none() {
                    a.record.started_at = Some(now);
                    crate::metrics::run_started(a.plan.name());
                    if let Some((e, id, job)) = &lineage {
                        e.run_event(super::openlineage::LineageState::Start, now, id, job, None);
                    }
                }
                let end = match state {
                    RunState::Succeeded => Some(super::openlineage::LineageState::Complete),
                    RunState::Failed => Some(super::openlineage::LineageState::Fail),
                    RunState::Cancelled => Some(super::openlineage::LineageState::Abort),
                    _ => None,
                };
                if let (Some(end), Some((e, id, job))) = (end, &lineage) {
                    let why = (end == super::openlineage::LineageState::Fail).then_some("a step failed");
                    e.run_event(end, now, id, job, why);
                }
                if state.is_terminal() || state == RunState::Interrupted {
                    a.record.finished_at = Some(now);
                } else {
                    a.record.finished_at = None;
                }
                self.engine.store().put_run(&a.record)?;
                tracing::info!(parent: &a.span, state = state.as_str(), "the run is {state}");
                if state.is_terminal() {
                    self.admission.forget_run(run);
                    self.queued_at.retain(|k, _| k.0 != run);
                    self.started_at.retain(|k, _| k.0 != run);
                    let took = a.record.started_at.map(|s| Duration::from_millis((now - s).max(0) as u64));
                    crate::metrics::run_finished(a.plan.name(), state.as_str(), took);
                }
                self.notify(Notice::Run { run, state });
            }
            Action::Execute { .. } | Action::ArmTimer { .. } | Action::Kill { .. } => {
                external.push((run, action))
            }
        }
        Ok(())
    }

    fn notify(&self, notice: Notice) {
        if let Some(n) = &self.notices {
            let _ = n.send(notice);
        }
    }

    /// Actions with effects outside the driver; carried out only once the batch is durable.
    fn external(&mut self, run: u64, action: Action) {
        match action {
            Action::Execute { step, item, attempt } => {
                let Some(a) = self.runs.get_mut(&run) else {
                    tracing::error!(
                        run,
                        step,
                        item,
                        attempt,
                        "asked to start an attempt of a run this driver does not hold; it is not started"
                    );
                    return;
                };
                let folders = attempt::run_folders(self.engine.store().dir(), run, &mut a.run_dir_made);
                let adopt = a.lost.remove(&(step, item));
                let start = Start {
                    engine: self.engine,
                    executors: &self.executors,
                    results: &self.tx,
                    view: a.view(run, self.engine.store()),
                    item: a.notes.items.get(&step).and_then(|v| v.get(item as usize)),
                    span: &a.span,
                    folders,
                    adopt,
                };
                self.started_at.insert((run, step, item, attempt), std::time::Instant::now());
                if let Some(running) = attempt::start(start, step, item, attempt) {
                    a.kills.insert((step, item, attempt), running);
                }
            }
            Action::ArmTimer { step, item, attempt, kind, at } => {
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), Timer { run, step, item, attempt, kind });
            }
            Action::Kill { step, item, attempt, reason } => {
                let Some(a) = self.runs.get(&run) else { return };
                if let Some((k, sink)) = a.kills.get(&(step, item, attempt)) {
                    let note = match reason {
                        KillReason::Timeout => {
                            let limit = a.plan.core[step as usize].timeout_ms.unwrap_or_default();
                            format!("sluice: the attempt ran past its timeout of {limit}ms; stopping it\n")
                        }
                        KillReason::Cancel => {
                            "sluice: the run was cancelled; stopping the attempt\n".to_string()
                        }
                        KillReason::Interrupt => {
                            "sluice: the engine is shutting down; stopping the attempt\n".to_string()
                        }
                    };
                    use sluice_worker::AttemptSink;
                    sink.log(LogStream::System, note.as_bytes());
                    k.kill(self.grace);
                }
            }
            _ => {}
        }
    }
}
