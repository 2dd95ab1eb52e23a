//! A host mirror of the device operations, for tests: each operation does what its kernel
//! (or cuBLAS call) does, element by element, with cuBLAS's column-major sgemm conventions.
// The loops index like the kernels' threads do, on purpose.
#![allow(clippy::needless_range_loop)]

use super::{Backend, Gemm, Rule, Trans};
use crate::error::ExecError;
use crate::train::net::Head;

#[derive(Default)]
pub(crate) struct Host {
    /// Operations run, by name: what the tests read to check the work per batch.
    pub ops: std::collections::BTreeMap<&'static str, usize>,
}

impl Host {
    fn count(&mut self, op: &'static str) {
        *self.ops.entry(op).or_default() += 1;
    }
}

impl Backend for Host {
    type Buf = Vec<f32>;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        "host mirror".into()
    }
    fn upload(&mut self, data: &[f32]) -> Result<Vec<f32>, ExecError> {
        self.count("upload");
        Ok(data.to_vec())
    }
    fn upload_idx(&mut self, data: &[u32]) -> Result<Vec<u32>, ExecError> {
        self.count("upload");
        Ok(data.to_vec())
    }
    fn zeros(&mut self, len: usize) -> Result<Vec<f32>, ExecError> {
        Ok(vec![0.0; len])
    }
    fn write(&mut self, dst: &mut Vec<f32>, data: &[f32]) -> Result<(), ExecError> {
        self.count("write");
        dst[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn write_idx(&mut self, dst: &mut Vec<u32>, data: &[u32]) -> Result<(), ExecError> {
        self.count("write");
        dst[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn download(&mut self, src: &Vec<f32>, len: usize) -> Result<Vec<f32>, ExecError> {
        self.count("download");
        Ok(src[..len].to_vec())
    }

    fn gemm(&mut self, g: Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<(), ExecError> {
        self.count("gemm");
        // Column-major: element (i, j) of a matrix with leading dimension ld is at i + j * ld.
        let op_a = |i: usize, l: usize| if g.ta == Trans::N { a[i + l * g.lda] } else { a[l + i * g.lda] };
        let op_b = |l: usize, j: usize| if g.tb == Trans::N { b[l + j * g.ldb] } else { b[j + l * g.ldb] };
        for j in 0..g.n {
            for i in 0..g.m {
                c[i + j * g.ldc] = (0..g.k).map(|l| op_a(i, l) * op_b(l, j)).sum();
            }
        }
        Ok(())
    }

    fn gather(
        &mut self,
        x: &Vec<f32>,
        y: &Vec<u32>,
        order: &Vec<u32>,
        start: usize,
        rows: usize,
        d: usize,
        xb: &mut Vec<f32>,
        yb: &mut Vec<u32>,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        for i in 0..rows * d {
            let (r, c) = (i / d, i % d);
            let src = order[start + r] as usize;
            xb[i] = x[src * d + c];
            if c == 0 {
                yb[r] = y[src];
            }
        }
        Ok(())
    }

    fn bias_act(
        &mut self,
        z: &mut Vec<f32>,
        b: &Vec<f32>,
        rows: usize,
        cols: usize,
        relu: bool,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        for i in 0..rows * cols {
            let v = z[i] + b[i % cols];
            z[i] = if relu { v.max(0.0) } else { v };
        }
        Ok(())
    }

    fn head_loss(
        &mut self,
        head: Head,
        scores: &Vec<f32>,
        y: &Vec<u32>,
        rows: usize,
        k: usize,
        delta: &mut Vec<f32>,
        loss: &mut Vec<f32>,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        let inv = 1.0 / rows as f32;
        for r in 0..rows {
            let label = y[r] as usize;
            match head {
                Head::Sigmoid => {
                    let p = 1.0 / (1.0 + (-scores[r]).exp());
                    let q = p.clamp(1e-7, 1.0 - 1e-7);
                    loss[r] = if label == 1 { -q.ln() } else { -(1.0 - q).ln() };
                    delta[r] = (p - label as f32) * inv;
                }
                Head::Softmax => {
                    let s = &scores[r * k..(r + 1) * k];
                    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = s.iter().map(|v| (v - max).exp()).sum();
                    for j in 0..k {
                        let p = (s[j] - max).exp() / sum;
                        if j == label {
                            loss[r] = -p.max(1e-7).ln();
                        }
                        delta[r * k + j] = (p - f32::from(u8::from(j == label))) * inv;
                    }
                }
            }
        }
        Ok(())
    }

    fn sum_into(
        &mut self,
        v: &Vec<f32>,
        len: usize,
        square: bool,
        scale: f32,
        out: &mut Vec<f32>,
        slot: usize,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        let sum: f32 = v[..len].iter().map(|x| if square { x * x } else { *x }).sum();
        out[slot] += scale * sum;
        Ok(())
    }

    fn col_sum(
        &mut self,
        m: &Vec<f32>,
        rows: usize,
        cols: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        for c in 0..cols {
            out[c] = (0..rows).map(|r| m[r * cols + c]).sum();
        }
        Ok(())
    }

    fn relu_mask(&mut self, delta: &mut Vec<f32>, act: &Vec<f32>, len: usize) -> Result<(), ExecError> {
        self.count("kernel");
        for i in 0..len {
            if act[i] <= 0.0 {
                delta[i] = 0.0;
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        rule: Rule,
        w: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
        l2: f32,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        for i in 0..len {
            let gi = g[i] + l2 * w[i];
            match rule {
                Rule::Sgd { lr, momentum } => {
                    m[i] = momentum * m[i] + gi;
                    w[i] -= lr * m[i];
                }
                Rule::Adam { lr, beta1, beta2, eps, c1, c2 } => {
                    m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
                    w[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                }
            }
        }
        Ok(())
    }

    fn probabilities(
        &mut self,
        head: Head,
        s: &mut Vec<f32>,
        rows: usize,
        k: usize,
    ) -> Result<(), ExecError> {
        self.count("kernel");
        for r in 0..rows {
            match head {
                Head::Sigmoid => s[r] = 1.0 / (1.0 + (-s[r]).exp()),
                Head::Softmax => {
                    let row = &mut s[r * k..(r + 1) * k];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
        }
        Ok(())
    }
}
