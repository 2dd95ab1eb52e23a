//! Admission control: which queued tasks may start, given a global limit, per-run limits and
//! the resource pools (cpu slots, memory, gpus). Highest priority first, then first come.
//!
//! Pure like the run machine: the driver enqueues, polls for grants and releases.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::{ResourceRequest, StepIx};

/// The size of the pools and the global limit on running attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub slots: u32,
    pub cpu: u32,
    pub memory: u64,
    pub gpu: u32,
}

impl Capacity {
    /// Whether a request could ever fit in these pools.
    pub fn can_fit(&self, r: &ResourceRequest) -> bool {
        r.cpu <= self.cpu && r.memory <= self.memory && r.gpu <= self.gpu
    }

    /// Why a request can never fit, as a sentence.
    pub fn misfit(&self, r: &ResourceRequest) -> Option<String> {
        if r.cpu > self.cpu {
            Some(format!("the step asks for {} cpu slots but the pool has {}", r.cpu, self.cpu))
        } else if r.memory > self.memory {
            Some(format!("the step asks for {} bytes of memory but the pool has {}", r.memory, self.memory))
        } else if r.gpu > self.gpu {
            Some(format!("the step asks for {} GPUs but the pool has {}", r.gpu, self.gpu))
        } else {
            None
        }
    }
}

/// Permission for one task to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub run: u64,
    pub step: StepIx,
    pub item: u32,
}

type Key = (Reverse<i32>, u64, StepIx, u32);

#[derive(Debug, Default)]
struct RunQueue {
    limit: Option<u32>,
    running: u32,
    queue: BTreeSet<Key>,
    entries: HashMap<(StepIx, u32), (Key, ResourceRequest)>,
    held: HashMap<(StepIx, u32), ResourceRequest>,
}

/// The admission controller shared by every run the driver executes.
#[derive(Debug)]
pub struct Admission {
    capacity: Capacity,
    used: ResourceRequest,
    running: u32,
    seq: u64,
    runs: HashMap<u64, RunQueue>,
    misfits: Vec<(Grant, String)>,
}

impl Admission {
    pub fn new(capacity: Capacity) -> Self {
        Self {
            capacity,
            used: ResourceRequest::default(),
            running: 0,
            seq: 0,
            runs: HashMap::new(),
            misfits: Vec::new(),
        }
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Sets a run's own limit on running attempts (its pipeline's `concurrency`).
    pub fn set_run_limit(&mut self, run: u64, limit: Option<u32>) {
        self.runs.entry(run).or_default().limit = limit;
    }

    pub fn enqueue(&mut self, run: u64, step: StepIx, item: u32, priority: i32, req: ResourceRequest) {
        if let Some(why) = self.capacity.misfit(&req).filter(|_| !req.remote) {
            self.misfits.push((Grant { run, step, item }, why));
            return;
        }
        let q = self.runs.entry(run).or_default();
        if q.entries.contains_key(&(step, item)) || q.held.contains_key(&(step, item)) {
            return;
        }
        self.seq += 1;
        let key = (Reverse(priority), self.seq, step, item);
        q.queue.insert(key);
        q.entries.insert((step, item), (key, req));
    }

    pub fn withdraw(&mut self, run: u64, step: StepIx, item: u32) {
        if let Some(q) = self.runs.get_mut(&run)
            && let Some((key, _)) = q.entries.remove(&(step, item))
        {
            q.queue.remove(&key);
        }
    }

    /// Returns a task's resources to the pools.
    pub fn release(&mut self, run: u64, step: StepIx, item: u32) {
        if let Some(q) = self.runs.get_mut(&run)
            && let Some(r) = q.held.remove(&(step, item))
        {
            q.running -= 1;
            if !r.remote {
                self.running -= 1;
                self.used.cpu -= r.cpu;
                self.used.memory -= r.memory;
                self.used.gpu -= r.gpu;
            }
        }
    }

    /// Forgets a finished run (its tasks must have been released or withdrawn).
    pub fn forget_run(&mut self, run: u64) {
        if self.runs.get(&run).is_some_and(|q| q.held.is_empty()) {
            self.runs.remove(&run);
        }
    }

    /// Tasks enqueued that can never fit the pools: the driver rejects them.
    pub fn take_misfits(&mut self) -> Vec<(Grant, String)> {
        std::mem::take(&mut self.misfits)
    }

    fn fits(&self, r: &ResourceRequest) -> bool {
        self.used.cpu + r.cpu <= self.capacity.cpu
            && self.used.memory + r.memory <= self.capacity.memory
            && self.used.gpu + r.gpu <= self.capacity.gpu
    }

    /// Grants as many queued tasks as the limits and pools allow, best first.
    pub fn poll(&mut self) -> Vec<Grant> {
        let mut grants = Vec::new();
        // Runs whose best remaining task does not fit are passed over for this poll, so a
        // big task waits without blocking smaller ones of other runs.
        let mut blocked: Vec<u64> = Vec::new();
        loop {
            let local_full = self.running >= self.capacity.slots;
            let mut best: Option<(Key, u64)> = None;
            for (run, q) in &self.runs {
                if blocked.contains(run) || q.limit.is_some_and(|l| q.running >= l) {
                    continue;
                }
                if let Some(head) = q.queue.first()
                    && best.is_none_or(|(b, _)| *head < b)
                {
                    best = Some((*head, *run));
                }
            }
            let Some((key, run)) = best else { break };
            let (_, _, step, item) = key;
            let req = self.runs[&run].entries[&(step, item)].1;
            // A remote task (a Slurm job) needs nothing from this machine.
            if !req.remote && (local_full || !self.fits(&req)) {
                blocked.push(run);
                continue;
            }
            let q = self.runs.get_mut(&run).expect("run queue exists");
            q.queue.remove(&key);
            q.entries.remove(&(step, item));
            q.held.insert((step, item), req);
            q.running += 1;
            if !req.remote {
                self.running += 1;
                self.used.cpu += req.cpu;
                self.used.memory += req.memory;
                self.used.gpu += req.gpu;
            }
            grants.push(Grant { run, step, item });
        }
        grants
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    pub fn queued(&self) -> usize {
        self.runs.values().map(|q| q.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cpu: u32, gpu: u32) -> ResourceRequest {
        ResourceRequest { cpu, memory: 0, gpu, remote: false }
    }

    #[test]
    fn remote_tasks_take_nothing_from_the_pools_but_count_for_their_run() {
        let mut a = Admission::new(Capacity { slots: 1, cpu: 1, memory: 100, gpu: 0 });
        let slurm = ResourceRequest { cpu: 4, memory: 0, gpu: 2, remote: true };
        a.set_run_limit(2, Some(3));
        a.enqueue(1, 0, 0, 0, req(1, 0));
        for item in 0..5 {
            a.enqueue(2, 1, item, 0, slurm);
        }
        assert!(a.take_misfits().is_empty(), "GPUs on the cluster are not this machine's");
        let g = a.poll();
        assert_eq!(g.len(), 4, "the local task and three remote ones (the run's limit): {g:?}");
        assert_eq!(a.running(), 1, "remote tasks do not hold local slots");
        a.release(2, 1, 0);
        assert_eq!(a.poll(), vec![Grant { run: 2, step: 1, item: 3 }]);
        a.release(1, 0, 0);
        assert_eq!(a.running(), 0);
    }

    #[test]
    fn priority_then_fifo_within_limits() {
        let mut a = Admission::new(Capacity { slots: 2, cpu: 10, memory: 100, gpu: 0 });
        a.enqueue(1, 0, 0, 0, req(1, 0));
        a.enqueue(1, 1, 0, 5, req(1, 0));
        a.enqueue(1, 2, 0, 0, req(1, 0));
        let g = a.poll();
        assert_eq!(g.iter().map(|g| g.step).collect::<Vec<_>>(), vec![1, 0]);
        assert!(a.poll().is_empty(), "global limit of 2");
        a.release(1, 1, 0);
        assert_eq!(a.poll()[0].step, 2);
    }

    #[test]
    fn pools_and_run_limits() {
        let mut a = Admission::new(Capacity { slots: 10, cpu: 2, memory: 100, gpu: 1 });
        a.set_run_limit(7, Some(1));
        a.enqueue(7, 0, 0, 0, req(1, 0));
        a.enqueue(7, 1, 0, 0, req(1, 0));
        a.enqueue(8, 0, 0, 0, req(1, 1));
        a.enqueue(8, 1, 0, 0, req(1, 1));
        let g = a.poll();
        assert_eq!(g.len(), 2, "run 7 limited to 1, run 8 gets the only gpu: {g:?}");
        assert_eq!(a.poll().len(), 0);
        a.release(8, 0, 0);
        let g = a.poll();
        assert_eq!(g, vec![Grant { run: 8, step: 1, item: 0 }]);
    }

    #[test]
    fn misfits_and_withdraw() {
        let mut a = Admission::new(Capacity { slots: 10, cpu: 2, memory: 100, gpu: 0 });
        a.enqueue(1, 0, 0, 0, req(1, 1));
        a.enqueue(1, 1, 0, 0, req(1, 0));
        a.withdraw(1, 1, 0);
        let m = a.take_misfits();
        assert_eq!(m.len(), 1);
        assert!(m[0].1.contains("GPUs"));
        assert_eq!(a.queued(), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue { run: u64, step: StepIx, priority: i32, cpu: u32, gpu: u32 },
        Withdraw { run: u64, step: StepIx },
        ReleaseOne(usize),
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..3, 0u32..12, -2i32..3, 0u32..4, 0u32..2)
                .prop_map(|(run, step, priority, cpu, gpu)| Op::Enqueue { run, step, priority, cpu, gpu }),
            (0u64..3, 0u32..12).prop_map(|(run, step)| Op::Withdraw { run, step }),
            any::<usize>().prop_map(Op::ReleaseOne),
            Just(Op::Poll),
        ]
    }

    proptest! {
        /// Pools and limits are never exceeded, grants go best-first within a run, every
        /// task is granted at most once, and once everything is released every queued task
        /// that fits is granted.
        #[test]
        fn admission_respects_limits_and_drains(ops in proptest::collection::vec(op(), 0..200)) {
            let cap = Capacity { slots: 4, cpu: 5, memory: 100, gpu: 1 };
            let mut a = Admission::new(cap);
            a.set_run_limit(1, Some(2));
            let mut held: Vec<(u64, StepIx, ResourceRequest)> = Vec::new();
            let mut queued: std::collections::HashMap<(u64, StepIx), (i32, ResourceRequest)> = Default::default();
            let check = |a: &Admission, held: &[(u64, StepIx, ResourceRequest)]| {
                let cpu: u32 = held.iter().map(|h| h.2.cpu).sum();
                let gpu: u32 = held.iter().map(|h| h.2.gpu).sum();
                assert!(held.len() as u32 <= cap.slots && cpu <= cap.cpu && gpu <= cap.gpu);
                assert!(held.iter().filter(|h| h.0 == 1).count() <= 2, "run 1's own limit");
                assert_eq!(a.running(), held.len() as u32);
            };
            for op in ops {
                match op {
                    Op::Enqueue { run, step, priority, cpu, gpu } => {
                        let req = ResourceRequest { cpu, memory: 0, gpu, remote: false };
                        let busy = held.iter().any(|h| h.0 == run && h.1 == step);
                        a.enqueue(run, step, 0, priority, req);
                        if !busy && cap.can_fit(&req) {
                            queued.entry((run, step)).or_insert((priority, req));
                        }
                    }
                    Op::Withdraw { run, step } => {
                        a.withdraw(run, step, 0);
                        queued.remove(&(run, step));
                    }
                    Op::ReleaseOne(i) if !held.is_empty() => {
                        let (run, step, _) = held.swap_remove(i % held.len());
                        a.release(run, step, 0);
                    }
                    Op::ReleaseOne(_) => {}
                    Op::Poll => {
                        let grants = a.poll();
                        let mut last: std::collections::HashMap<u64, i32> = Default::default();
                        for g in grants {
                            let (priority, req) = queued.remove(&(g.run, g.step)).expect("granted only what is queued");
                            if let Some(p) = last.get(&g.run) {
                                prop_assert!(*p >= priority, "best first within a run");
                            }
                            last.insert(g.run, priority);
                            held.push((g.run, g.step, req));
                        }
                    }
                }
                let _ = a.take_misfits();
                check(&a, &held);
            }
            // Drain: release everything, poll until quiet; nothing that fits stays queued.
            for _ in 0..100 {
                for (run, step, _) in held.drain(..) {
                    a.release(run, step, 0);
                }
                for g in a.poll() {
                    let (_, req) = queued.remove(&(g.run, g.step)).expect("queued");
                    held.push((g.run, g.step, req));
                }
                check(&a, &held);
            }
            prop_assert!(queued.is_empty(), "left waiting: {queued:?}");
            prop_assert_eq!(a.queued(), 0);
        }
    }
}
