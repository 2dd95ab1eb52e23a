//! Hands runs to the driver, keeping `overlap: queue` pipelines to one run at a time, and
//! knows which runs of each pipeline are going (for `overlap: skip`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use tokio::sync::mpsc;

use crate::driver::Control;

/// Which runs are going, per pipeline; which wait their turn.
pub struct Launcher {
    controls: mpsc::UnboundedSender<Control>,
    active: HashMap<String, BTreeSet<u64>>,
    queued: HashMap<String, VecDeque<u64>>,
    pipeline_of: HashMap<u64, String>,
}

impl Launcher {
    pub fn new(controls: mpsc::UnboundedSender<Control>) -> Self {
        Launcher { controls, active: HashMap::new(), queued: HashMap::new(), pipeline_of: HashMap::new() }
    }

    /// Starts `run` now, or when the pipeline's going runs have ended if `queue`.
    pub fn submit(&mut self, pipeline: &str, run: u64, queue: bool) {
        self.pipeline_of.insert(run, pipeline.to_string());
        let waiting = self.queued.get(pipeline).is_some_and(|q| !q.is_empty());
        if queue && (self.going(pipeline) > 0 || waiting) {
            self.queued.entry(pipeline.to_string()).or_default().push_back(run);
            tracing::info!(run, pipeline, "queued behind the pipeline's running run");
            return;
        }
        self.start(pipeline, run);
    }

    /// Notes a run the driver resumes by itself (it was running when the last server
    /// stopped).
    pub fn resumed(&mut self, pipeline: &str, run: u64) {
        self.pipeline_of.insert(run, pipeline.to_string());
        self.active.entry(pipeline.to_string()).or_default().insert(run);
    }

    fn start(&mut self, pipeline: &str, run: u64) {
        self.active.entry(pipeline.to_string()).or_default().insert(run);
        let _ = self.controls.send(Control::Start(run));
    }

    /// How many runs of the pipeline are going or waiting.
    pub fn going(&self, pipeline: &str) -> usize {
        self.active.get(pipeline).map_or(0, BTreeSet::len)
            + self.queued.get(pipeline).map_or(0, VecDeque::len)
    }

    /// The runs of the pipeline that are going or waiting.
    pub fn runs_of(&self, pipeline: &str) -> Vec<u64> {
        let mut out: Vec<u64> =
            self.active.get(pipeline).map(|s| s.iter().copied().collect()).unwrap_or_default();
        out.extend(self.queued.get(pipeline).into_iter().flatten());
        out
    }

    /// Takes a waiting run out of its queue (it is being cancelled); true if it was waiting.
    pub fn unqueue(&mut self, run: u64) -> bool {
        let Some(p) = self.pipeline_of.get(&run).cloned() else { return false };
        let Some(q) = self.queued.get_mut(&p) else { return false };
        let before = q.len();
        q.retain(|r| *r != run);
        let was = q.len() != before;
        if was {
            self.pipeline_of.remove(&run);
        }
        was
    }

    /// A run has ended (or stopped with the server): the next waiting run of its pipeline
    /// starts when none is going.
    pub fn ended(&mut self, run: u64) {
        let Some(p) = self.pipeline_of.remove(&run) else { return };
        if let Some(set) = self.active.get_mut(&p) {
            set.remove(&run);
            if !set.is_empty() {
                return;
            }
        }
        if let Some(next) = self.queued.get_mut(&p).and_then(VecDeque::pop_front) {
            self.start(&p, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_runs_start_one_after_another() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut l = Launcher::new(tx);
        l.submit("p", 1, true);
        l.submit("p", 2, true);
        l.submit("p", 3, true);
        l.submit("q", 4, false);
        l.submit("q", 5, false);
        let started = |rx: &mut mpsc::UnboundedReceiver<Control>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|c| match c {
                    Control::Start(run) => run,
                    other => panic!("not a start: {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(started(&mut rx), [1, 4, 5]);
        assert_eq!(l.going("p"), 3);
        assert!(l.unqueue(3));
        assert!(!l.unqueue(1), "a going run is not waiting");
        l.ended(1);
        assert_eq!(started(&mut rx), [2]);
        l.ended(2);
        assert_eq!(l.going("p"), 0);
        assert!(started(&mut rx).is_empty());
    }
}
