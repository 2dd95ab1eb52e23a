//! What the training loop asks of a device: run an epoch, predict, hand back the weights. The
//! loop itself (split, shuffle, metrics, files) is shared, so the CPU and GPU paths differ
//! only behind this trait.

use std::sync::atomic::{AtomicBool, Ordering};

use super::data::Table;
use super::net::{Net, Optimizer, OptimizerState};
use crate::error::ExecError;

/// The hyperparameters an epoch needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hyper {
    pub batch_size: usize,
    pub learning_rate: f32,
    pub l2: f32,
    pub optimizer: Optimizer,
}

pub(super) trait Fit {
    /// One pass over the training rows in `order`, `batch_size` at a time, each batch one
    /// optimizer step. Returns the mean loss (data loss plus the L2 penalty, weighted by batch
    /// rows). `stop` is looked at between batches.
    fn epoch(&mut self, order: &[u32], stop: &AtomicBool) -> Result<f64, ExecError>;
    /// Class probabilities of `rows` rows of `x` (for the sigmoid head, P(class 1) only).
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ExecError>;
    /// The current weights, on the host.
    fn weights(&mut self) -> Result<Net, ExecError>;
    /// Where it runs, for the log, the metadata and the outputs (`cpu`, `cuda:0 (NVIDIA H100 ...)`).
    fn device(&self) -> String;
}

pub(super) fn stopped() -> ExecError {
    ExecError::cancelled("the step was stopped")
}

pub(super) fn diverged(loss: f64) -> ExecError {
    ExecError::fatal(format!("the loss diverged to {loss}; lower the learning rate"))
}

/// The CPU path: `Net`'s multi-threaded products.
pub(super) struct CpuFit<'a> {
    net: Net,
    opt: OptimizerState,
    train: &'a Table,
    d: usize,
    hyper: Hyper,
    bx: Vec<f32>,
    by: Vec<u32>,
}

impl<'a> CpuFit<'a> {
    pub(super) fn new(net: Net, train: &'a Table, hyper: Hyper) -> Self {
        let d = net.layers.first().map_or(0, |l| l.inputs);
        Self {
            opt: OptimizerState::new(hyper.optimizer, &net),
            net,
            train,
            d,
            hyper,
            bx: Vec::new(),
            by: Vec::new(),
        }
    }
}

impl Fit for CpuFit<'_> {
    fn epoch(&mut self, order: &[u32], stop: &AtomicBool) -> Result<f64, ExecError> {
        let d = self.d;
        let (mut sum, mut seen) = (0.0, 0usize);
        for batch in order.chunks(self.hyper.batch_size) {
            if stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            self.bx.clear();
            self.by.clear();
            for &r in batch {
                let r = r as usize;
                self.bx.extend_from_slice(&self.train.x[r * d..(r + 1) * d]);
                self.by.push(self.train.y[r]);
            }
            let (loss, grads) = self.net.gradients(&self.bx, &self.by, self.hyper.l2);
            if !loss.is_finite() {
                return Err(diverged(loss));
            }
            self.opt.apply(&mut self.net, &grads, self.hyper.learning_rate);
            sum += loss * batch.len() as f64;
            seen += batch.len();
        }
        Ok(sum / seen.max(1) as f64)
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ExecError> {
        Ok(self.net.predict(x, rows))
    }

    fn weights(&mut self) -> Result<Net, ExecError> {
        Ok(self.net.clone())
    }

    fn device(&self) -> String {
        "cpu".to_string()
    }
}
