//! Training throughput on a synthetic table, for benches/train.rs: no CSV, no files, only the
//! epochs of one path, timed one by one.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::data::Table;
use super::fit::{CpuFit, Fit, Hyper};
use super::net::{Head, Net, Optimizer, Rng};
use super::{Device, gpu};
use crate::error::ExecError;

/// What `throughput` measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// `cpu` or `cuda:N (...)`.
    pub device: String,
    /// Seconds per epoch, in order (the first includes warm-up).
    pub epoch_secs: Vec<f64>,
    pub losses: Vec<f64>,
    /// Seconds to put the table and weights on the device (0 on the CPU).
    pub setup_secs: f64,
}

/// Trains an MLP (`features` inputs, `hidden` ReLU layers, 2 softmax outputs) with Adam,
/// `batch` rows per step, for `epochs` epochs over `rows` rows of standard-normal features
/// labelled by the sign of a fixed random projection. `Device::Auto` is not taken: `Cpu` or
/// `Gpu` (an error when none is usable).
pub fn throughput(
    device: Device,
    rows: usize,
    features: usize,
    hidden: &[usize],
    batch: usize,
    epochs: usize,
) -> Result<Throughput, ExecError> {
    let mut rng = Rng::new(1);
    let w: Vec<f32> = (0..features).map(|_| rng.normal() as f32).collect();
    let x: Vec<f32> = (0..rows * features).map(|_| rng.normal() as f32).collect();
    let y = x
        .chunks(features)
        .map(|r| u32::from(r.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() > 0.0))
        .collect();
    let table = Table { x, y, rows };
    let mut sizes = vec![features];
    sizes.extend(hidden);
    sizes.push(2);
    let net = Net::new(&sizes, Head::Softmax, &mut rng);
    let hyper = Hyper {
        batch_size: batch,
        learning_rate: 1e-3,
        l2: 0.0,
        optimizer: Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    };
    let start = Instant::now();
    let mut fit: Box<dyn Fit + '_> = match device {
        Device::Gpu => {
            let g = gpu::probe().map_err(|why| ExecError::fatal(format!("no usable GPU: {why}")))?;
            Box::new(gpu::start(&g, &net, &table, hyper)?)
        }
        _ => Box::new(CpuFit::new(net, &table, hyper)),
    };
    // The device queue drains at the end of each epoch (the losses come back), so wall time
    // per epoch is the device's time.
    let setup_secs = if device == Device::Gpu { start.elapsed().as_secs_f64() } else { 0.0 };
    let mut order: Vec<u32> = (0..rows as u32).collect();
    let (mut epoch_secs, mut losses) = (Vec::new(), Vec::new());
    let stop = AtomicBool::new(false);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        let t = Instant::now();
        losses.push(fit.epoch(&order, &stop)?);
        epoch_secs.push(t.elapsed().as_secs_f64());
    }
    Ok(Throughput { device: fit.device(), epoch_secs, losses, setup_secs })
}
