//! The CPU trainer's numerics: dense layers, ReLU, a sigmoid or softmax output, their
//! gradients, and the optimizers. Row-major `f32` matrices; every reduction runs in a fixed
//! order, so a seed gives the same model whatever the thread count.

/// Work (multiply-adds) below which a matrix product stays on one thread: a scoped thread
/// costs tens of microseconds to start, a million multiply-adds about half a millisecond.
const PARALLEL_WORK: usize = 1 << 20;

/// Runs `f(row, out_row)` for every row of `out` (rows of `row_len`), on several threads when
/// the work is large enough. Each row is computed by one thread in a fixed order.
fn par_rows(out: &mut [f32], row_len: usize, work_per_row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.max(1));
    if threads <= 1 || rows * work_per_row < PARALLEL_WORK {
        for (r, chunk) in out.chunks_mut(row_len).enumerate() {
            f(r, chunk);
        }
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, block) in out.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (i, chunk) in block.chunks_mut(row_len).enumerate() {
                    f(t * per + i, chunk);
                }
            });
        }
    });
}

/// `a (n x k) * b (k x m)`, plus `bias (m)` on every row.
pub(crate) fn matmul_bias(a: &[f32], b: &[f32], bias: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * m];
    par_rows(&mut out, m, k * m, |r, row| {
        row.copy_from_slice(bias);
        for (i, &x) in a[r * k..(r + 1) * k].iter().enumerate() {
            if x != 0.0 {
                for (o, &w) in row.iter_mut().zip(&b[i * m..(i + 1) * m]) {
                    *o += x * w;
                }
            }
        }
    });
    out
}

/// `a^T (k x n) * b (n x m)`: the weight gradient from inputs `a (n x k)` and deltas `b`.
fn matmul_tn(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0.0; k * m];
    par_rows(&mut out, m, n * m, |i, row| {
        for r in 0..n {
            let x = a[r * k + i];
            if x != 0.0 {
                for (o, &d) in row.iter_mut().zip(&b[r * m..(r + 1) * m]) {
                    *o += x * d;
                }
            }
        }
    });
    out
}

/// `a (n x m) * b^T (m x k)` with `b` stored `k x m`: deltas back through weights.
fn matmul_nt(a: &[f32], b: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * k];
    par_rows(&mut out, k, k * m, |r, row| {
        let d = &a[r * m..(r + 1) * m];
        for (i, o) in row.iter_mut().enumerate() {
            *o = d.iter().zip(&b[i * m..(i + 1) * m]).map(|(x, w)| x * w).sum();
        }
    });
    out
}

/// A small deterministic generator (SplitMix64): initialization and shuffles from a seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// How the last layer turns scores into probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// One unit, sigmoid, binary cross-entropy: logistic regression.
    Sigmoid,
    /// One unit per class, softmax, cross-entropy.
    Softmax,
}

/// A dense layer: `w` is `inputs x outputs`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

/// A feed-forward network: ReLU between layers, `head` at the end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Net {
    pub layers: Vec<Layer>,
    pub head: Head,
}

/// Gradients, shaped like the layers.
pub(crate) struct Grads {
    pub w: Vec<Vec<f32>>,
    pub b: Vec<Vec<f32>>,
}

impl Net {
    /// `sizes`: inputs, hidden sizes..., outputs. He initialization for ReLU layers, Xavier
    /// for the last.
    pub(crate) fn new(sizes: &[usize], head: Head, rng: &mut Rng) -> Self {
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, io)| {
                let last = i == sizes.len() - 2;
                let scale = if last { (1.0 / io[0] as f64).sqrt() } else { (2.0 / io[0] as f64).sqrt() };
                Layer {
                    w: (0..io[0] * io[1]).map(|_| (rng.normal() * scale) as f32).collect(),
                    b: vec![0.0; io[1]],
                    inputs: io[0],
                    outputs: io[1],
                }
            })
            .collect();
        Self { layers, head }
    }

    /// Each layer's output for a batch `x (n x inputs)`: post-ReLU for hidden layers, raw
    /// scores for the last.
    fn activations(&self, x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let mut acts: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let input = if i == 0 { x } else { &acts[i - 1] };
            let mut z = matmul_bias(input, &l.w, &l.b, n, l.inputs, l.outputs);
            if i + 1 < self.layers.len() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            acts.push(z);
        }
        acts
    }

    /// Class probabilities, `n x classes` (for the sigmoid head: `n x 1`, P(class 1)).
    pub(crate) fn predict(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut scores = self.activations(x, n).pop().unwrap_or_default();
        self.probabilities(&mut scores, n);
        scores
    }

    fn probabilities(&self, scores: &mut [f32], n: usize) {
        match self.head {
            Head::Sigmoid => scores.iter_mut().for_each(|s| *s = sigmoid(*s)),
            Head::Softmax => {
                let k = scores.len() / n.max(1);
                for row in scores.chunks_mut(k.max(1)) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    row.iter_mut().for_each(|s| {
                        *s = (*s - max).exp();
                        sum += *s;
                    });
                    row.iter_mut().for_each(|s| *s /= sum);
                }
            }
        }
    }

    /// Mean cross-entropy of a batch (labels are class indices), plus `l2 / 2 * |w|^2`.
    #[cfg(test)]
    pub(crate) fn loss(&self, x: &[f32], y: &[u32], l2: f32) -> f64 {
        let n = y.len();
        let p = self.predict(x, n);
        data_loss(&p, y, self.head) + self.penalty(l2)
    }

    fn penalty(&self, l2: f32) -> f64 {
        if l2 == 0.0 {
            return 0.0;
        }
        let sq: f64 = self.layers.iter().flat_map(|l| &l.w).map(|w| (*w as f64) * (*w as f64)).sum();
        0.5 * l2 as f64 * sq
    }

    /// The loss of a batch and its gradients.
    pub(crate) fn gradients(&self, x: &[f32], y: &[u32], l2: f32) -> (f64, Grads) {
        let n = y.len();
        let acts = self.activations(x, n);
        let mut delta = acts.last().cloned().unwrap_or_default();
        self.probabilities(&mut delta, n);
        let loss = data_loss(&delta, y, self.head) + self.penalty(l2);
        // d(loss)/d(scores) = (p - onehot(y)) / n for both heads.
        let k = delta.len() / n.max(1);
        for (r, &label) in y.iter().enumerate() {
            match self.head {
                Head::Sigmoid => delta[r] -= label as f32,
                Head::Softmax => delta[r * k + label as usize] -= 1.0,
            }
        }
        delta.iter_mut().for_each(|d| *d /= n as f32);
        let layers = self.layers.len();
        let mut gw = vec![Vec::new(); layers];
        let mut gb = vec![Vec::new(); layers];
        for i in (0..layers).rev() {
            let l = &self.layers[i];
            let input = if i == 0 { x } else { &acts[i - 1] };
            let mut w = matmul_tn(input, &delta, n, l.inputs, l.outputs);
            if l2 != 0.0 {
                w.iter_mut().zip(&l.w).for_each(|(g, w)| *g += l2 * w);
            }
            let mut b = vec![0.0f32; l.outputs];
            for row in delta.chunks(l.outputs) {
                b.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            gw[i] = w;
            gb[i] = b;
            if i > 0 {
                let mut back = matmul_nt(&delta, &l.w, n, l.outputs, l.inputs);
                back.iter_mut().zip(&acts[i - 1]).for_each(|(d, a)| {
                    if *a <= 0.0 {
                        *d = 0.0
                    }
                });
                delta = back;
            }
        }
        (loss, Grads { w: gw, b: gb })
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

pub(super) fn data_loss(p: &[f32], y: &[u32], head: Head) -> f64 {
    const EPS: f64 = 1e-7;
    let n = y.len();
    let k = p.len() / n.max(1);
    let total: f64 = y
        .iter()
        .enumerate()
        .map(|(r, &label)| match head {
            Head::Sigmoid => {
                let q = (p[r] as f64).clamp(EPS, 1.0 - EPS);
                if label == 1 { -q.ln() } else { -(1.0 - q).ln() }
            }
            Head::Softmax => -(p[r * k + label as usize] as f64).max(EPS).ln(),
        })
        .sum();
    total / n.max(1) as f64
}

/// An optimizer and its state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Optimizer {
    Sgd { momentum: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

pub(crate) struct OptimizerState {
    kind: Optimizer,
    step: i32,
    /// First moments (or velocities), then second moments, per parameter tensor.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl OptimizerState {
    pub(crate) fn new(kind: Optimizer, net: &Net) -> Self {
        let shapes: Vec<usize> = net.layers.iter().flat_map(|l| [l.w.len(), l.b.len()]).collect();
        Self {
            kind,
            step: 0,
            m: shapes.iter().map(|&s| vec![0.0; s]).collect(),
            v: shapes.iter().map(|&s| vec![0.0; s]).collect(),
        }
    }

    pub(crate) fn apply(&mut self, net: &mut Net, grads: &Grads, lr: f32) {
        self.step += 1;
        let params = net.layers.iter_mut().flat_map(|l| [&mut l.w, &mut l.b]);
        let gs = grads.w.iter().zip(&grads.b).flat_map(|(w, b)| [w, b]);
        for (((p, g), m), v) in params.zip(gs).zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            match self.kind {
                Optimizer::Sgd { momentum } => {
                    for ((p, g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                        *m = momentum * *m + g;
                        *p -= lr * *m;
                    }
                }
                Optimizer::Adam { beta1, beta2, eps } => {
                    let c1 = 1.0 - beta1.powi(self.step);
                    let c2 = 1.0 - beta2.powi(self.step);
                    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rng: &mut Rng, n: usize, d: usize, classes: u32) -> (Vec<f32>, Vec<u32>) {
        let x = (0..n * d).map(|_| rng.normal() as f32).collect();
        let y = (0..n).map(|_| (rng.next_u64() % classes as u64) as u32).collect();
        (x, y)
    }

    /// Every gradient entry against a central finite difference of the loss (in f64 terms,
    /// with a step that f32 resolves).
    fn check_gradients(sizes: &[usize], head: Head, l2: f32) {
        let mut rng = Rng::new(3);
        let mut net = Net::new(sizes, head, &mut rng);
        // Non-zero biases: with zero biases a row whose inputs to a layer are all zero sits
        // exactly on the ReLU kink, where only a one-sided derivative exists.
        for l in &mut net.layers {
            l.b.iter_mut().for_each(|b| *b = 0.1 * rng.normal() as f32);
        }
        let classes = if head == Head::Sigmoid { 2 } else { sizes[sizes.len() - 1] as u32 };
        let (x, y) = batch(&mut rng, 7, sizes[0], classes);
        let (_, grads) = net.gradients(&x, &y, l2);
        let h = 4e-3f32;
        let mut worst = 0.0f64;
        let (mut total, mut kinks) = (0usize, 0usize);
        for li in 0..net.layers.len() {
            for which in 0..2 {
                let len = if which == 0 { net.layers[li].w.len() } else { net.layers[li].b.len() };
                for j in 0..len {
                    fn param(net: &mut Net, li: usize, which: usize, j: usize) -> &mut f32 {
                        if which == 0 { &mut net.layers[li].w[j] } else { &mut net.layers[li].b[j] }
                    }
                    let orig = *param(&mut net, li, which, j);
                    let mut numeric = |h: f32| {
                        *param(&mut net, li, which, j) = orig + h;
                        let up = net.loss(&x, &y, l2);
                        *param(&mut net, li, which, j) = orig - h;
                        let down = net.loss(&x, &y, l2);
                        *param(&mut net, li, which, j) = orig;
                        (up - down) / (2.0 * h as f64)
                    };
                    let (coarse, fine) = (numeric(h), numeric(h / 2.0));
                    total += 1;
                    // A step across a ReLU kink has no derivative to compare with: skip it.
                    if (coarse - fine).abs() > 0.005 * (coarse.abs() + fine.abs()).max(1e-2) {
                        kinks += 1;
                        continue;
                    }
                    let analytic = if which == 0 { grads.w[li][j] } else { grads.b[li][j] } as f64;
                    let err = (fine - analytic).abs() / (fine.abs() + analytic.abs()).max(1e-2);
                    worst = worst.max(err);
                }
            }
        }
        assert!(worst < 2e-2, "{sizes:?} {head:?}: worst relative gradient error {worst}");
        assert!(kinks * 10 < total, "{sizes:?}: {kinks} of {total} entries sat on a kink");
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_gradients(&[5, 1], Head::Sigmoid, 0.0);
        check_gradients(&[5, 1], Head::Sigmoid, 0.1);
        check_gradients(&[4, 6, 3], Head::Softmax, 0.0);
        check_gradients(&[4, 6, 3], Head::Softmax, 0.05);
        check_gradients(&[4, 6, 5, 2], Head::Softmax, 0.0);
        check_gradients(&[4, 6, 5, 2], Head::Softmax, 0.05);
    }

    #[test]
    fn parallel_products_equal_serial_ones() {
        let mut rng = Rng::new(9);
        let (n, k, m) = (600, 70, 40); // above PARALLEL_WORK: several threads
        let a: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * m).map(|_| rng.normal() as f32).collect();
        let bias = vec![0.5; m];
        let fast = matmul_bias(&a, &b, &bias, n, k, m);
        for r in [0, 137, n - 1] {
            for c in [0, 17, m - 1] {
                let want: f32 = bias[c] + (0..k).map(|i| a[r * k + i] * b[i * m + c]).sum::<f32>();
                assert!((fast[r * m + c] - want).abs() < 1e-3, "{r},{c}");
            }
        }
    }
}
