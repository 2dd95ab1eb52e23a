//! The GPU path: the CPU path's algorithm (`net.rs`) as a sequence of device operations,
//! cuBLAS sgemm for the three matrix products and small NVRTC-compiled kernels for the rest
//! (bias and ReLU, the loss and its delta, the ReLU mask, column sums, the optimizer update).
//!
//! `DeviceFit` is written against `Backend`. `cuda::Cuda` implements it with cudarc; the tests
//! also run `DeviceFit` on `host::Host`, a plain-Rust mirror of the same operations that takes
//! sgemm's arguments the way cuBLAS does (column-major, with transposes), so the operation
//! sequence, the shapes and the transposes are checked against the CPU path on machines
//! without a GPU. The kernels themselves run only where CUDA does.
//!
//! The training table goes to the device once; each epoch uploads only its row order, and
//! batches are gathered on the device. Batch losses stay on the device until the epoch ends.

mod cuda;
#[cfg(test)]
mod host;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(test)]
use cuda::device_count;
pub(crate) use cuda::{Gpu, probe};

use super::data::Table;
use super::fit::{Fit, Hyper, stopped};
use super::net::{Head, Layer, Net, Optimizer};
use crate::error::ExecError;

/// Rows the scratch buffers hold at least: batches, and prediction chunks.
const CHUNK_ROWS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trans {
    N,
    T,
}

/// One column-major sgemm as cuBLAS takes it: `C (m x n) = op(A) (m x k) * op(B) (k x n)`,
/// with leading dimensions; beta is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gemm {
    pub ta: Trans,
    pub tb: Trans,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

// A row-major matrix is the column-major matrix of its transpose, so each row-major product
// below is the column-major product of the transposes, operands swapped.
impl Gemm {
    /// Row-major `z (rows x out) = x (rows x inp) * w (inp x out)`; call with A = w, B = x.
    fn forward(rows: usize, inp: usize, out: usize) -> Self {
        Self { ta: Trans::N, tb: Trans::N, m: out, n: rows, k: inp, lda: out, ldb: inp, ldc: out }
    }
    /// Row-major `gw (inp x out) = x^T * delta`, x `rows x inp`, delta `rows x out`; call with
    /// A = delta, B = x.
    fn weight_grad(rows: usize, inp: usize, out: usize) -> Self {
        Self { ta: Trans::N, tb: Trans::T, m: out, n: inp, k: rows, lda: out, ldb: inp, ldc: out }
    }
    /// Row-major `back (rows x inp) = delta (rows x out) * w^T`, w `inp x out`; call with A = w,
    /// B = delta.
    fn backward(rows: usize, inp: usize, out: usize) -> Self {
        Self { ta: Trans::T, tb: Trans::N, m: inp, n: rows, k: out, lda: out, ldb: out, ldc: inp }
    }
}

/// An optimizer step's constants.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rule {
    Sgd {
        lr: f32,
        momentum: f32,
    },
    /// `c1`, `c2`: the bias corrections `1 - beta^step`.
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        c1: f32,
        c2: f32,
    },
}

/// The operations the GPU trainer is made of. Buffers are the device's; every operation is
/// queued in order, and only `download` waits for the queue.
pub(crate) trait Backend {
    type Buf;
    type Idx;
    /// The device, for logs and metadata.
    fn name(&self) -> String;
    fn upload(&mut self, data: &[f32]) -> Result<Self::Buf, ExecError>;
    fn upload_idx(&mut self, data: &[u32]) -> Result<Self::Idx, ExecError>;
    fn zeros(&mut self, len: usize) -> Result<Self::Buf, ExecError>;
    /// Copies `data` to the start of `dst`.
    fn write(&mut self, dst: &mut Self::Buf, data: &[f32]) -> Result<(), ExecError>;
    fn write_idx(&mut self, dst: &mut Self::Idx, data: &[u32]) -> Result<(), ExecError>;
    /// The first `len` values, once the work queued before is done.
    fn download(&mut self, src: &Self::Buf, len: usize) -> Result<Vec<f32>, ExecError>;
    fn gemm(&mut self, g: Gemm, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf) -> Result<(), ExecError>;
    /// Rows `order[start..start + rows]` of `x` (`d` columns) and their labels into `xb`, `yb`.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        x: &Self::Buf,
        y: &Self::Idx,
        order: &Self::Idx,
        start: usize,
        rows: usize,
        d: usize,
        xb: &mut Self::Buf,
        yb: &mut Self::Idx,
    ) -> Result<(), ExecError>;
    /// `z[r][c] += b[c]`, then ReLU when `relu`.
    fn bias_act(
        &mut self,
        z: &mut Self::Buf,
        b: &Self::Buf,
        rows: usize,
        cols: usize,
        relu: bool,
    ) -> Result<(), ExecError>;
    /// From scores (`rows x k`, k = 1 for the sigmoid head) and labels: the delta
    /// `(p - onehot(y)) / rows` and each row's cross-entropy in `loss`.
    #[allow(clippy::too_many_arguments)]
    fn head_loss(
        &mut self,
        head: Head,
        scores: &Self::Buf,
        y: &Self::Idx,
        rows: usize,
        k: usize,
        delta: &mut Self::Buf,
        loss: &mut Self::Buf,
    ) -> Result<(), ExecError>;
    /// `out[slot] += scale * sum(v[..len])`, of squares when `square`.
    fn sum_into(
        &mut self,
        v: &Self::Buf,
        len: usize,
        square: bool,
        scale: f32,
        out: &mut Self::Buf,
        slot: usize,
    ) -> Result<(), ExecError>;
    /// `out[c] = sum over r of m[r][c]`.
    fn col_sum(
        &mut self,
        m: &Self::Buf,
        rows: usize,
        cols: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ExecError>;
    /// `delta[i] = 0` where `act[i] <= 0`.
    fn relu_mask(&mut self, delta: &mut Self::Buf, act: &Self::Buf, len: usize) -> Result<(), ExecError>;
    /// One optimizer step of a tensor; `l2 * w` is added to the gradient first.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        rule: Rule,
        w: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        len: usize,
        l2: f32,
    ) -> Result<(), ExecError>;
    /// Scores to probabilities in place: sigmoid, or softmax over each row of `k`.
    fn probabilities(
        &mut self,
        head: Head,
        s: &mut Self::Buf,
        rows: usize,
        k: usize,
    ) -> Result<(), ExecError>;
}

/// A parameter tensor with its gradient and optimizer moments.
struct Param<B: Backend> {
    val: B::Buf,
    grad: B::Buf,
    m: B::Buf,
    v: B::Buf,
    len: usize,
}

impl<B: Backend> Param<B> {
    fn new(be: &mut B, init: &[f32]) -> Result<Self, ExecError> {
        let len = init.len();
        Ok(Self { val: be.upload(init)?, grad: be.zeros(len)?, m: be.zeros(len)?, v: be.zeros(len)?, len })
    }
}

struct DeviceLayer<B: Backend> {
    w: Param<B>,
    b: Param<B>,
    inputs: usize,
    outputs: usize,
}

/// The trainer on a device: weights, moments, the training table and scratch buffers live
/// there for the whole run.
pub(crate) struct DeviceFit<B: Backend> {
    be: B,
    hyper: Hyper,
    head: Head,
    layers: Vec<DeviceLayer<B>>,
    /// Each layer's output (post-ReLU for hidden layers), `cap` rows.
    acts: Vec<B::Buf>,
    /// d(loss)/d(layer output before the activation), `cap` rows.
    deltas: Vec<B::Buf>,
    row_loss: B::Buf,
    x: B::Buf,
    y: B::Idx,
    order: B::Idx,
    xb: B::Buf,
    yb: B::Idx,
    rows: usize,
    d: usize,
    cap: usize,
    step: i32,
}

impl<B: Backend> DeviceFit<B> {
    /// Puts `net`'s weights and the training table on the device.
    pub(crate) fn new(mut be: B, net: &Net, train: &Table, hyper: Hyper) -> Result<Self, ExecError> {
        let d = net.layers.first().map_or(0, |l| l.inputs);
        let cap = hyper.batch_size.max(CHUNK_ROWS);
        let mut layers = Vec::with_capacity(net.layers.len());
        let (mut acts, mut deltas) = (Vec::new(), Vec::new());
        for l in &net.layers {
            layers.push(DeviceLayer {
                w: Param::new(&mut be, &l.w)?,
                b: Param::new(&mut be, &l.b)?,
                inputs: l.inputs,
                outputs: l.outputs,
            });
            acts.push(be.zeros(cap * l.outputs)?);
            deltas.push(be.zeros(cap * l.outputs)?);
        }
        let order: Vec<u32> = (0..train.rows as u32).collect();
        Ok(Self {
            row_loss: be.zeros(cap)?,
            x: be.upload(&train.x)?,
            y: be.upload_idx(&train.y)?,
            order: be.upload_idx(&order)?,
            xb: be.zeros(cap * d)?,
            yb: be.upload_idx(&vec![0; cap])?,
            be,
            hyper,
            head: net.head,
            layers,
            acts,
            deltas,
            rows: train.rows,
            d,
            cap,
            step: 0,
        })
    }

    /// The layers' outputs for the `n` rows in `xb`.
    fn forward(&mut self, n: usize) -> Result<(), ExecError> {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let (done, rest) = self.acts.split_at_mut(i);
            let input = if i == 0 { &self.xb } else { &done[i - 1] };
            let z = &mut rest[0];
            self.be.gemm(Gemm::forward(n, l.inputs, l.outputs), &l.w.val, input, z)?;
            self.be.bias_act(z, &l.b.val, n, l.outputs, i < last)?;
        }
        Ok(())
    }

    /// Gradients of the batch in `xb`/`yb` (`n` rows) into each parameter's `grad`; the batch's
    /// mean loss plus the L2 penalty is added to `slots[slot]`.
    fn gradients(&mut self, n: usize, slots: &mut B::Buf, slot: usize) -> Result<(), ExecError> {
        self.forward(n)?;
        let last = self.layers.len() - 1;
        let k = self.layers[last].outputs;
        self.be.head_loss(
            self.head,
            &self.acts[last],
            &self.yb,
            n,
            k,
            &mut self.deltas[last],
            &mut self.row_loss,
        )?;
        self.be.sum_into(&self.row_loss, n, false, 1.0 / n as f32, slots, slot)?;
        if self.hyper.l2 != 0.0 {
            for l in &self.layers {
                self.be.sum_into(&l.w.val, l.w.len, true, 0.5 * self.hyper.l2, slots, slot)?;
            }
        }
        for i in (0..self.layers.len()).rev() {
            let l = &mut self.layers[i];
            let input = if i == 0 { &self.xb } else { &self.acts[i - 1] };
            let (below, here) = self.deltas.split_at_mut(i);
            let delta = &here[0];
            self.be.gemm(Gemm::weight_grad(n, l.inputs, l.outputs), delta, input, &mut l.w.grad)?;
            self.be.col_sum(delta, n, l.outputs, &mut l.b.grad)?;
            if i > 0 {
                let back = &mut below[i - 1];
                self.be.gemm(Gemm::backward(n, l.inputs, l.outputs), &l.w.val, delta, back)?;
                self.be.relu_mask(back, &self.acts[i - 1], n * l.inputs)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<(), ExecError> {
        self.step += 1;
        let lr = self.hyper.learning_rate;
        let rule = match self.hyper.optimizer {
            Optimizer::Sgd { momentum } => Rule::Sgd { lr, momentum },
            Optimizer::Adam { beta1, beta2, eps } => Rule::Adam {
                lr,
                beta1,
                beta2,
                eps,
                c1: 1.0 - beta1.powi(self.step),
                c2: 1.0 - beta2.powi(self.step),
            },
        };
        for l in &mut self.layers {
            for (p, l2) in [(&mut l.w, self.hyper.l2), (&mut l.b, 0.0)] {
                self.be.update(rule, &mut p.val, &p.grad, &mut p.m, &mut p.v, p.len, l2)?;
            }
        }
        Ok(())
    }
}

impl<B: Backend> Fit for DeviceFit<B> {
    fn epoch(&mut self, order: &[u32], stop: &AtomicBool) -> Result<f64, ExecError> {
        let bs = self.hyper.batch_size;
        self.be.write_idx(&mut self.order, order)?;
        let batches = self.rows.div_ceil(bs);
        let mut slots = self.be.zeros(batches)?;
        for (bi, start) in (0..self.rows).step_by(bs).enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            let n = bs.min(self.rows - start);
            self.be.gather(&self.x, &self.y, &self.order, start, n, self.d, &mut self.xb, &mut self.yb)?;
            self.gradients(n, &mut slots, bi)?;
            self.apply()?;
        }
        let losses = self.be.download(&slots, batches)?;
        let sum: f64 =
            losses.iter().enumerate().map(|(bi, &l)| l as f64 * bs.min(self.rows - bi * bs) as f64).sum();
        Ok(sum / self.rows.max(1) as f64)
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, ExecError> {
        let last = self.layers.len() - 1;
        let k = self.layers[last].outputs;
        let mut out = Vec::with_capacity(rows * k);
        for start in (0..rows).step_by(self.cap) {
            let n = self.cap.min(rows - start);
            self.be.write(&mut self.xb, &x[start * self.d..(start + n) * self.d])?;
            self.forward(n)?;
            self.be.probabilities(self.head, &mut self.acts[last], n, k)?;
            out.extend(self.be.download(&self.acts[last], n * k)?);
        }
        Ok(out)
    }

    fn weights(&mut self) -> Result<Net, ExecError> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(Layer {
                w: self.be.download(&l.w.val, l.w.len)?,
                b: self.be.download(&l.b.val, l.b.len)?,
                inputs: l.inputs,
                outputs: l.outputs,
            });
        }
        Ok(Net { layers, head: self.head })
    }

    fn device(&self) -> String {
        self.be.name()
    }
}

/// The CUDA trainer for `net` on `gpu`, with the training table uploaded.
pub(crate) fn start(
    gpu: &Gpu,
    net: &Net,
    train: &Table,
    hyper: Hyper,
) -> Result<DeviceFit<cuda::Cuda>, ExecError> {
    DeviceFit::new(cuda::Cuda::new(gpu)?, net, train, hyper)
}
