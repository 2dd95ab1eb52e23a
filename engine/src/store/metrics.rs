//! Metrics: time series `{key, value, step, timestamp}` per run, step, item and attempt, kept
//! in the `metrics` tree under `run | step | item | attempt | sequence` (all big-endian), so a
//! run's or a step's series are one prefix scan, in the order they were recorded.

use serde::{Deserialize, Serialize};

use super::{Result, Store, decode, encode, task_prefix};
use crate::scheduler::StepIx;

/// One recorded value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The pipeline step that recorded it (its id) and which of its items and attempts.
    pub task: String,
    pub item: u32,
    pub attempt: u32,
    pub key: String,
    pub value: f64,
    /// The training step (epoch, iteration) it belongs to; 0 when not given.
    pub step: i64,
    /// When, ms since the epoch.
    pub timestamp: i64,
}

impl Store {
    /// Appends points an attempt recorded; `first` is the sequence number of the first one
    /// (the attempt counts its points, so a point read twice is written over, not added).
    pub fn put_metrics(
        &self,
        (run, step, item, attempt): (u64, StepIx, u32, u32),
        first: u32,
        points: &[MetricPoint],
    ) -> Result<()> {
        self.writable()?;
        let mut batch = sled::Batch::default();
        for (i, p) in points.iter().enumerate() {
            let mut k = task_prefix(run, step, item);
            k.extend_from_slice(&attempt.to_be_bytes());
            k.extend_from_slice(&(first + i as u32).to_be_bytes());
            batch.insert(k, encode(p));
        }
        self.metrics.apply_batch(batch).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The points of a run, or of one of its steps, in the order they were recorded (by step,
    /// item, attempt).
    pub fn metrics(&self, run: u64, step: Option<StepIx>) -> Result<Vec<MetricPoint>> {
        let mut prefix = run.to_be_bytes().to_vec();
        if let Some(s) = step {
            prefix.extend_from_slice(&s.to_be_bytes());
        }
        self.metrics.scan_prefix(prefix).map(|kv| decode("metric point", &kv?.1)).collect()
    }
}
