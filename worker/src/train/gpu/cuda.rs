//! The CUDA backend (cudarc, loaded at run time): a probe that finds whether CUDA is usable
//! without letting cudarc's loader panic, the NVRTC-compiled kernels of `kernels.cu`, and the
//! `Backend` operations as kernel launches and cuBLAS calls.
//!
//! The one module of the workspace that allows `unsafe`: kernel launches and cuBLAS calls are
//! unsafe in cudarc because the device cannot check its arguments. Every launch here checks
//! on the host that each buffer holds what the launch's sizes say it reads or writes.
#![allow(unsafe_code)]

use std::sync::{Arc, OnceLock};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use super::{Backend, Gemm, Rule, Trans};
use crate::error::ExecError;
use crate::train::net::Head;

/// The kernels' source, compiled by NVRTC on first use.
pub(crate) const KERNELS: &str = include_str!("kernels.cu");
/// The kernels' entry points.
#[cfg(test)]
pub(crate) const KERNEL_NAMES: [&str; 10] = [
    "gather_rows",
    "bias_act",
    "softmax_loss",
    "sigmoid_loss",
    "sum_into",
    "col_sum",
    "relu_mask",
    "sgd_update",
    "adam_update",
    "probabilities",
];
const THREADS: usize = 256;

/// A GPU the trainer can use: its context is retained for the life of the process.
#[derive(Clone)]
pub(crate) struct Gpu {
    pub ordinal: usize,
    pub name: String,
    pub memory: usize,
    ctx: Arc<CudaContext>,
}

impl Gpu {
    pub(crate) fn describe(&self) -> String {
        format!("cuda:{} ({}, {} MiB)", self.ordinal, self.name, self.memory >> 20)
    }
}

/// Whether NVRTC (libnvrtc) can be loaded: kernels can be compiled, with or without a GPU.
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: dlopens libnvrtc under the names cudarc's loader tries, and closes it again;
    // loading a shared library runs its initializers, which for NVIDIA's libraries is sound.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The CUDA libraries the trainer needs, checked before cudarc touches them (its loader
/// panics when a library is missing, see shared/machine.md).
fn libraries() -> Result<(), String> {
    // SAFETY: as in `nvrtc_present`, for libcuda.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver library (libcuda.so) can be loaded".into());
    }
    // SAFETY: as in `nvrtc_present`, for libcublas.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("the CUDA driver loads but cuBLAS (libcublas.so) does not; install CUDA's cuBLAS \
                    or add its folder to LD_LIBRARY_PATH"
            .into());
    }
    if !nvrtc_present() {
        return Err("the CUDA driver loads but NVRTC (libnvrtc.so) does not; install CUDA's NVRTC \
                    or add its folder to LD_LIBRARY_PATH"
            .into());
    }
    Ok(())
}

/// The number of GPUs the CUDA driver sees, or why none is usable.
pub(crate) fn device_count() -> Result<usize, String> {
    libraries()?;
    match CudaContext::device_count() {
        Ok(0) => Err("the CUDA driver sees no GPU".into()),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(format!("the CUDA driver does not start: {e}")),
    }
}

/// The GPU training steps use: `SLUICE_CUDA_DEVICE` (a device number, default 0; the
/// driver's own `CUDA_VISIBLE_DEVICES` applies first), or why there is none. Probed once per
/// process.
pub(crate) fn probe() -> Result<Gpu, String> {
    static PROBE: OnceLock<Result<Gpu, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let count = device_count()?;
            let ordinal = match std::env::var("SLUICE_CUDA_DEVICE") {
                Ok(v) => v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("SLUICE_CUDA_DEVICE={v} is not a device number"))?,
                Err(_) => 0,
            };
            if ordinal >= count {
                return Err(format!("SLUICE_CUDA_DEVICE={ordinal}, but the CUDA driver sees {count} GPU(s)"));
            }
            let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot open GPU {ordinal}: {e}"))?;
            let name = ctx.name().unwrap_or_else(|_| "unnamed GPU".into());
            let memory = ctx.total_mem().unwrap_or(0);
            Ok(Gpu { ordinal, name, memory, ctx })
        })
        .clone()
}

fn compile_error(e: CompileError) -> String {
    match e {
        CompileError::CompileError { log, .. } => format!("NVRTC: {}", log.to_string_lossy().trim()),
        other => format!("NVRTC: {other}"),
    }
}

/// The kernels as PTX, compiled once per process. Needs only libnvrtc, not a GPU.
pub(crate) fn ptx() -> Result<String, String> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        if !nvrtc_present() {
            return Err("NVRTC (libnvrtc.so) cannot be loaded".into());
        }
        let opts = CompileOptions { name: Some("sluice_train.cu".into()), ..Default::default() };
        compile_ptx_with_opts(KERNELS, opts).map(|p| p.to_src()).map_err(compile_error)
    })
    .clone()
}

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> ExecError + '_ {
    move |e| ExecError::fatal(format!("CUDA {what}: {e}"))
}

/// A kernel launch's grid for `n` threads.
fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS).max(1) as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A size as the kernels take it.
fn u(n: usize) -> Result<u32, ExecError> {
    u32::try_from(n).map_err(|_| ExecError::fatal(format!("{n} elements are too many for one kernel launch")))
}

/// The host-side check that makes a launch sound: the buffer holds `need` elements.
fn holds<T>(buf: &CudaSlice<T>, need: usize, what: &str) -> Result<(), ExecError> {
    if buf.len() < need {
        return Err(ExecError::fatal(format!(
            "internal: {what} buffer holds {} values, the launch needs {need}",
            buf.len()
        )));
    }
    Ok(())
}

struct Kernels {
    gather_rows: CudaFunction,
    bias_act: CudaFunction,
    softmax_loss: CudaFunction,
    sigmoid_loss: CudaFunction,
    sum_into: CudaFunction,
    col_sum: CudaFunction,
    relu_mask: CudaFunction,
    sgd_update: CudaFunction,
    adam_update: CudaFunction,
    probabilities: CudaFunction,
}

/// The CUDA backend: one stream, a cuBLAS handle on it, the kernels.
pub(crate) struct Cuda {
    name: String,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
}

impl Cuda {
    pub(crate) fn new(gpu: &Gpu) -> Result<Self, ExecError> {
        // Training runs on one thread from here on; cuBLAS uses the thread's current context.
        gpu.ctx.bind_to_thread().map_err(cuda_err("context"))?;
        // A stream of its own, so that steps training at once on one GPU do not wait on each other.
        let stream = gpu.ctx.new_stream().map_err(cuda_err("stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| ExecError::fatal(format!("cuBLAS: {e}")))?;
        let ptx = ptx().map_err(ExecError::fatal)?;
        let module = gpu.ctx.load_module(Ptx::from_src(ptx)).map_err(cuda_err("module load"))?;
        let f = |name: &str| module.load_function(name).map_err(cuda_err("kernel lookup"));
        let k = Kernels {
            gather_rows: f("gather_rows")?,
            bias_act: f("bias_act")?,
            softmax_loss: f("softmax_loss")?,
            sigmoid_loss: f("sigmoid_loss")?,
            sum_into: f("sum_into")?,
            col_sum: f("col_sum")?,
            relu_mask: f("relu_mask")?,
            sgd_update: f("sgd_update")?,
            adam_update: f("adam_update")?,
            probabilities: f("probabilities")?,
        };
        Ok(Self { name: gpu.describe(), stream, blas, k })
    }
}

/// Launches `$f` on `$self`'s stream over `$n` threads with the given arguments (each a
/// reference to a buffer or a scalar).
macro_rules! launch {
    ($self:ident, $f:ident, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let mut b = $self.stream.launch_builder(&$self.k.$f);
        $( b.arg($arg); )+
        // SAFETY: the argument list matches the kernel's signature in kernels.cu (types and
        // order), and the caller checked with `holds` that every buffer covers the indices
        // the kernel touches for these sizes.
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(cuda_err(stringify!($f)))
    }};
}

/// The elements a column-major operand spans: `rows x cols` (after `op`) with leading `ld`.
fn span(t: Trans, rows: usize, cols: usize, ld: usize) -> usize {
    let (r, c) = if t == Trans::N { (rows, cols) } else { (cols, rows) };
    if r == 0 || c == 0 { 0 } else { ld * (c - 1) + r }
}

impl Backend for Cuda {
    type Buf = CudaSlice<f32>;
    type Idx = CudaSlice<u32>;

    fn name(&self) -> String {
        self.name.clone()
    }
    fn upload(&mut self, data: &[f32]) -> Result<Self::Buf, ExecError> {
        self.stream.clone_htod(data).map_err(cuda_err("upload"))
    }
    fn upload_idx(&mut self, data: &[u32]) -> Result<Self::Idx, ExecError> {
        self.stream.clone_htod(data).map_err(cuda_err("upload"))
    }
    fn zeros(&mut self, len: usize) -> Result<Self::Buf, ExecError> {
        self.stream.alloc_zeros(len.max(1)).map_err(cuda_err("alloc"))
    }
    fn write(&mut self, dst: &mut Self::Buf, data: &[f32]) -> Result<(), ExecError> {
        holds(dst, data.len(), "write")?;
        self.stream.memcpy_htod(data, &mut dst.slice_mut(0..data.len())).map_err(cuda_err("copy to device"))
    }
    fn write_idx(&mut self, dst: &mut Self::Idx, data: &[u32]) -> Result<(), ExecError> {
        holds(dst, data.len(), "write")?;
        self.stream.memcpy_htod(data, &mut dst.slice_mut(0..data.len())).map_err(cuda_err("copy to device"))
    }
    fn download(&mut self, src: &Self::Buf, len: usize) -> Result<Vec<f32>, ExecError> {
        holds(src, len, "download")?;
        self.stream.clone_dtoh(&src.slice(0..len)).map_err(cuda_err("copy to host"))
    }

    fn gemm(&mut self, g: Gemm, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf) -> Result<(), ExecError> {
        holds(a, span(g.ta, g.m, g.k, g.lda), "sgemm A")?;
        holds(b, span(g.tb, g.k, g.n, g.ldb), "sgemm B")?;
        holds(c, span(Trans::N, g.m, g.n, g.ldc), "sgemm C")?;
        let op =
            |t| if t == Trans::N { cublasOperation_t::CUBLAS_OP_N } else { cublasOperation_t::CUBLAS_OP_T };
        let int =
            |v: usize| i32::try_from(v).map_err(|_| ExecError::fatal(format!("matrix side {v} too large")));
        let cfg = GemmConfig {
            transa: op(g.ta),
            transb: op(g.tb),
            m: int(g.m)?,
            n: int(g.n)?,
            k: int(g.k)?,
            alpha: 1.0f32,
            lda: int(g.lda)?,
            ldb: int(g.ldb)?,
            beta: 0.0f32,
            ldc: int(g.ldc)?,
        };
        // SAFETY: the three buffers were checked above to span the matrices the dimensions
        // and leading dimensions describe.
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(|e| ExecError::fatal(format!("cuBLAS sgemm: {e}")))
    }

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
    ) -> Result<(), ExecError> {
        // Row numbers in `order` index `x` and `y`: they come from `0..rows of the table`.
        holds(y, x.len() / d.max(1), "labels")?;
        holds(order, start + rows, "order")?;
        holds(xb, rows * d, "batch")?;
        holds(yb, rows, "batch labels")?;
        let (start, n, d32) = (u(start)?, u(rows)?, u(d)?);
        launch!(self, gather_rows, grid(rows * d), x, y, order, &start, &n, &d32, xb, yb)
    }

    fn bias_act(
        &mut self,
        z: &mut Self::Buf,
        b: &Self::Buf,
        rows: usize,
        cols: usize,
        relu: bool,
    ) -> Result<(), ExecError> {
        holds(z, rows * cols, "activations")?;
        holds(b, cols, "bias")?;
        let (r, c, relu) = (u(rows)?, u(cols)?, i32::from(relu));
        launch!(self, bias_act, grid(rows * cols), z, b, &r, &c, &relu)
    }

    fn head_loss(
        &mut self,
        head: Head,
        scores: &Self::Buf,
        y: &Self::Idx,
        rows: usize,
        k: usize,
        delta: &mut Self::Buf,
        loss: &mut Self::Buf,
    ) -> Result<(), ExecError> {
        holds(scores, rows * k, "scores")?;
        holds(delta, rows * k, "delta")?;
        holds(y, rows, "labels")?;
        holds(loss, rows, "row loss")?;
        let (r, k32) = (u(rows)?, u(k)?);
        match head {
            Head::Softmax => launch!(self, softmax_loss, grid(rows), scores, y, &r, &k32, delta, loss),
            Head::Sigmoid => launch!(self, sigmoid_loss, grid(rows), scores, y, &r, delta, loss),
        }
    }

    fn sum_into(
        &mut self,
        v: &Self::Buf,
        len: usize,
        square: bool,
        scale: f32,
        out: &mut Self::Buf,
        slot: usize,
    ) -> Result<(), ExecError> {
        holds(v, len, "sum input")?;
        holds(out, slot + 1, "sum output")?;
        let (n, square, slot) = (u(len)?, i32::from(square), u(slot)?);
        // One block of exactly THREADS threads: the kernel's reduction assumes it.
        let one =
            LaunchConfig { grid_dim: (1, 1, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
        launch!(self, sum_into, one, v, &n, &square, &scale, out, &slot)
    }

    fn col_sum(
        &mut self,
        m: &Self::Buf,
        rows: usize,
        cols: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ExecError> {
        holds(m, rows * cols, "matrix")?;
        holds(out, cols, "column sums")?;
        let (r, c) = (u(rows)?, u(cols)?);
        launch!(self, col_sum, grid(cols), m, &r, &c, out)
    }

    fn relu_mask(&mut self, delta: &mut Self::Buf, act: &Self::Buf, len: usize) -> Result<(), ExecError> {
        holds(delta, len, "delta")?;
        holds(act, len, "activations")?;
        let n = u(len)?;
        launch!(self, relu_mask, grid(len), delta, act, &n)
    }

    fn update(
        &mut self,
        rule: Rule,
        w: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        len: usize,
        l2: f32,
    ) -> Result<(), ExecError> {
        for (buf, what) in [(&*w, "weights"), (g, "gradient"), (&*m, "moment"), (&*v, "moment")] {
            holds(buf, len, what)?;
        }
        let n = u(len)?;
        match rule {
            Rule::Sgd { lr, momentum } => {
                launch!(self, sgd_update, grid(len), w, g, m, &n, &lr, &momentum, &l2)
            }
            Rule::Adam { lr, beta1, beta2, eps, c1, c2 } => {
                launch!(
                    self,
                    adam_update,
                    grid(len),
                    w,
                    g,
                    m,
                    v,
                    &n,
                    &lr,
                    &beta1,
                    &beta2,
                    &eps,
                    &c1,
                    &c2,
                    &l2
                )
            }
        }
    }

    fn probabilities(
        &mut self,
        head: Head,
        s: &mut Self::Buf,
        rows: usize,
        k: usize,
    ) -> Result<(), ExecError> {
        holds(s, rows * k, "scores")?;
        let (r, k32, sigmoid) = (u(rows)?, u(k)?, i32::from(head == Head::Sigmoid));
        launch!(self, probabilities, grid(rows), s, &r, &k32, &sigmoid)
    }
}
