//! The GPU trainer against the CPU path. On the host mirror everywhere; on CUDA where a GPU
//! is usable (elsewhere those tests say loudly that they skipped, and fail under
//! SLUICE_REQUIRE_GPU=1). The CPU path's own gradients are checked against finite
//! differences in net.rs; here the device's gradients are checked against the CPU path's.

use std::sync::atomic::AtomicBool;

use super::cuda::{Cuda, KERNEL_NAMES, KERNELS, nvrtc_present, ptx};
use super::host::Host;
use super::*;
use crate::train::fit::CpuFit;
use crate::train::net::Rng;
use crate::train::{Device, ModelKind, OptimizerKind, train};

/// `rows` rows of `d` standard-normal features; the label is the bucket of a nonlinear score,
/// so every class is present.
fn table(rows: usize, d: usize, classes: u32, seed: u64) -> Table {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..rows * d).map(|_| rng.normal() as f32).collect();
    let y = x
        .chunks(d)
        .map(|r| {
            let s = r[0] * r[1] + r[2] - 0.5 * r[d - 1] + 0.3 * rng.normal() as f32;
            ((s.tanh() + 1.0) / 2.0 * classes as f32).min(classes as f32 - 1.0) as u32
        })
        .collect();
    Table { x, y, rows }
}

struct Case {
    sizes: Vec<usize>,
    head: Head,
    hyper: Hyper,
}

fn cases() -> Vec<Case> {
    let hyper = |batch_size, learning_rate, l2, optimizer| Hyper { batch_size, learning_rate, l2, optimizer };
    let adam = Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    vec![
        Case { sizes: vec![5, 1], head: Head::Sigmoid, hyper: hyper(32, 0.05, 0.01, adam) },
        Case {
            sizes: vec![5, 7, 6, 3],
            head: Head::Softmax,
            hyper: hyper(32, 0.05, 1e-3, Optimizer::Sgd { momentum: 0.9 }),
        },
        Case { sizes: vec![5, 9, 2], head: Head::Softmax, hyper: hyper(50, 0.01, 0.0, adam) },
    ]
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

/// Trains the same initial net on the CPU path and on `make()`'s backend, three epochs over
/// the same row orders (203 rows: the last batch is partial), and compares each epoch's loss,
/// the final weights and the predictions.
fn matches_cpu_path<B: Backend>(make: impl Fn() -> B, loss_tol: f64, weight_tol: f64) {
    let stop = AtomicBool::new(false);
    for c in cases() {
        let classes = if c.head == Head::Sigmoid { 2 } else { c.sizes[c.sizes.len() - 1] as u32 };
        let t = table(203, c.sizes[0], classes, 5);
        let mut rng = Rng::new(11);
        let net = Net::new(&c.sizes, c.head, &mut rng);
        let mut cpu = CpuFit::new(net.clone(), &t, c.hyper);
        let mut dev = DeviceFit::new(make(), &net, &t, c.hyper).unwrap();
        let mut order: Vec<u32> = (0..t.rows as u32).collect();
        for epoch in 1..=3 {
            rng.shuffle(&mut order);
            let (a, b) = (cpu.epoch(&order, &stop).unwrap(), dev.epoch(&order, &stop).unwrap());
            assert!(rel(a, b) < loss_tol, "{:?} epoch {epoch}: cpu loss {a}, device loss {b}", c.sizes);
        }
        let (wc, wd) = (cpu.weights().unwrap(), dev.weights().unwrap());
        for (i, (lc, ld)) in wc.layers.iter().zip(&wd.layers).enumerate() {
            assert!(max_diff(&lc.w, &ld.w) < weight_tol, "{:?} layer {i} weights", c.sizes);
            assert!(max_diff(&lc.b, &ld.b) < weight_tol, "{:?} layer {i} biases", c.sizes);
        }
        let (pc, pd) = (cpu.predict(&t.x, t.rows).unwrap(), dev.predict(&t.x, t.rows).unwrap());
        assert!(max_diff(&pc, &pd) < weight_tol, "{:?} predictions", c.sizes);
    }
}

/// One batch's gradients and loss on the device against the CPU path's.
fn gradients_match_cpu_path<B: Backend>(make: impl Fn() -> B, tol: f64) {
    for c in cases() {
        let classes = if c.head == Head::Sigmoid { 2 } else { c.sizes[c.sizes.len() - 1] as u32 };
        let t = table(7, c.sizes[0], classes, 6);
        let mut rng = Rng::new(3);
        let mut net = Net::new(&c.sizes, c.head, &mut rng);
        for l in &mut net.layers {
            l.b.iter_mut().for_each(|b| *b = 0.1 * rng.normal() as f32);
        }
        let (loss, grads) = net.gradients(&t.x, &t.y, c.hyper.l2);
        let hyper = Hyper { batch_size: 7, ..c.hyper };
        let mut dev = DeviceFit::new(make(), &net, &t, hyper).unwrap();
        let mut slots = dev.be.zeros(1).unwrap();
        dev.be.gather(&dev.x, &dev.y, &dev.order, 0, 7, t.x.len() / 7, &mut dev.xb, &mut dev.yb).unwrap();
        dev.gradients(7, &mut slots, 0).unwrap();
        let device_loss = dev.be.download(&slots, 1).unwrap()[0] as f64;
        assert!(rel(loss, device_loss) < tol, "{:?}: loss {loss} vs {device_loss}", c.sizes);
        for (i, l) in dev.layers.iter().enumerate() {
            let gw = dev.be.download(&l.w.grad, l.w.len).unwrap();
            let gb = dev.be.download(&l.b.grad, l.b.len).unwrap();
            // The device adds L2 in the update, not in the gradient.
            let want: Vec<f32> =
                grads.w[i].iter().zip(&net.layers[i].w).map(|(g, w)| g - c.hyper.l2 * w).collect();
            let scale = want.iter().map(|g| g.abs() as f64).fold(1e-3, f64::max);
            assert!(max_diff(&want, &gw) / scale < tol, "{:?} layer {i} weight gradient", c.sizes);
            assert!(max_diff(&grads.b[i], &gb) / scale < tol, "{:?} layer {i} bias gradient", c.sizes);
        }
    }
}

#[test]
fn the_device_sequence_matches_the_cpu_path_on_the_host_mirror() {
    matches_cpu_path(Host::default, 1e-5, 1e-5);
    gradients_match_cpu_path(Host::default, 1e-5);
}

#[test]
fn the_training_table_goes_to_the_device_once() {
    let c = &cases()[1];
    let t = table(203, 5, 3, 5);
    let net = Net::new(&c.sizes, c.head, &mut Rng::new(1));
    let mut dev = DeviceFit::new(Host::default(), &net, &t, c.hyper).unwrap();
    let uploads = dev.be.ops["upload"];
    let order: Vec<u32> = (0..203).rev().collect();
    for _ in 0..2 {
        dev.epoch(&order, &AtomicBool::new(false)).unwrap();
    }
    let ops = &dev.be.ops;
    assert_eq!(ops["upload"], uploads, "no uploads after the start");
    assert_eq!((ops["write"], ops["download"]), (2, 2), "per epoch: the row order in, the batch losses out");
    // 7 batches an epoch: per batch 3 forward + 3 weight-gradient + 2 backward products.
    assert_eq!(ops["gemm"], 2 * 7 * 8);
}

#[test]
fn a_stopped_device_epoch_ends_between_batches() {
    let c = &cases()[0];
    let t = table(50, 5, 2, 5);
    let net = Net::new(&c.sizes, c.head, &mut Rng::new(1));
    let mut dev = DeviceFit::new(Host::default(), &net, &t, c.hyper).unwrap();
    let e = dev.epoch(&(0..50).collect::<Vec<_>>(), &AtomicBool::new(true)).unwrap_err();
    assert_eq!(e.kind, crate::ErrorKind::Cancelled);
}

/// The probe answers, and without CUDA it says which library is missing instead of
/// panicking (cudarc's own loader panics).
#[test]
fn the_probe_explains_a_missing_gpu() {
    match probe() {
        Ok(g) => assert!(g.describe().starts_with("cuda:"), "{}", g.describe()),
        Err(why) => {
            assert!(why.contains(".so") || why.contains("GPU"), "{why}");
            assert!(device_count().is_err(), "no GPU to count either");
        }
    }
}

/// The kernels compile with NVRTC, which needs libnvrtc but no GPU: tests/run.sh provides
/// it (from NVIDIA's PyPI wheel) and sets SLUICE_REQUIRE_NVRTC=1.
#[test]
fn the_kernels_compile_with_nvrtc() {
    if !nvrtc_present() {
        if std::env::var("SLUICE_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("SLUICE_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the_kernels_compile_with_nvrtc: libnvrtc cannot be loaded. Run `bash tests/run.sh`. ***\n"
        );
        return;
    }
    let ptx = ptx().unwrap();
    for name in KERNEL_NAMES {
        assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
    }
    assert!(KERNELS.matches("__global__").count() == KERNEL_NAMES.len());
}

/// The usable GPU, or None after a loud line (a failure under SLUICE_REQUIRE_GPU=1).
fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match probe() {
        Ok(g) => Some(g),
        Err(why) => {
            if std::env::var("SLUICE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: SLUICE_REQUIRE_GPU=1 but no GPU is usable: {why}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no usable GPU ({why}). On a machine with CUDA: `bash benches/train_gpu.sh`. ***\n"
            );
            None
        }
    }
}

#[test]
fn cuda_matches_the_cpu_path() {
    let Some(gpu) = gpu_or_skip("cuda_matches_the_cpu_path") else { return };
    // The tolerance for the loss; weights after three epochs within 1e-3.
    matches_cpu_path(|| Cuda::new(&gpu).unwrap(), 1e-3, 1e-3);
    gradients_match_cpu_path(|| Cuda::new(&gpu).unwrap(), 1e-4);
}

#[test]
fn cuda_trains_to_accuracy_and_a_seed_reproduces_the_model() {
    if gpu_or_skip("cuda_trains_to_accuracy_and_a_seed_reproduces_the_model").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::tests::table(dir.path(), "rings.csv", 3000, true, 2);
    let mut s = crate::train::tests::spec(dir.path(), data, ModelKind::Mlp { hidden: vec![16, 16] });
    s.device = Device::Gpu;
    let run = |s: &crate::train::TrainSpec| train(s, &AtomicBool::new(false), &|_, _| {}).unwrap();
    let a = run(&s);
    assert!(a.device.starts_with("cuda:"), "{}", a.device);
    assert!(a.accuracy > 0.95, "accuracy {}", a.accuracy);
    let first = std::fs::read(&a.model_file).unwrap();
    let b = run(&s);
    assert_eq!(std::fs::read(&b.model_file).unwrap(), first, "same seed, same bytes on the GPU");
    // The CPU path with the same seed ends at the same loss.
    s.device = Device::Cpu;
    s.output = dir.path().join("cpu");
    let c = run(&s);
    let (g, h) = (*a.epoch_loss.last().unwrap(), *c.epoch_loss.last().unwrap());
    assert!(rel(g, h) < 1e-3, "final loss gpu {g} cpu {h}");
    s.optimizer = OptimizerKind::Sgd { momentum: 0.9 };
    s.device = Device::Gpu;
    assert!(run(&s).accuracy > 0.9);
}
