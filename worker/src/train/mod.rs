//! The train executor: built-in trainers (logistic regression, a multi-layer perceptron) on a
//! CSV table, mini-batch SGD with momentum or Adam, the model written as safetensors weights
//! plus JSON metadata, metrics as outputs.
//!
//! One training loop (`train`) over two paths behind `fit::Fit`: the CPU path (`net.rs`,
//! multi-threaded over the rows of each matrix product) and the GPU path (`gpu/`, cuBLAS and
//! NVRTC kernels through cudarc). `device: auto` uses a GPU when the probe finds one usable and
//! says in the step log why it trains on the CPU otherwise; `device: gpu` fails without one.

mod bench;
mod data;
mod fit;
mod gpu;
mod model;
mod net;
mod safetensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal, LogStream,
    wait_for_kill,
};
pub use bench::{Throughput, throughput};
pub use data::auc;
use fit::{CpuFit, Fit};
pub use model::Model;
use net::{Head, Net, Optimizer, Rng};

/// Which model to train.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Binary logistic regression (sigmoid output).
    Logistic,
    /// A multi-layer perceptron: ReLU hidden layers, softmax output over the label's classes.
    Mlp { hidden: Vec<usize> },
}

/// Which optimizer updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd { momentum: f32 },
    Adam,
}

/// Where the training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// A GPU when one is usable, else the CPU (saying so in the log).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// A `train:` step after templating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The training table (CSV with a header).
    pub data: PathBuf,
    /// A separate validation table; without it `validation` of the rows are held out.
    pub validation_data: Option<PathBuf>,
    pub validation: f64,
    pub label: String,
    /// Feature columns; empty means every column but the label.
    pub features: Vec<String>,
    pub model: ModelKind,
    pub optimizer: OptimizerKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub l2: f32,
    pub seed: u64,
    pub device: Device,
    /// The model files: `<output>.safetensors` and `<output>.json`.
    pub output: PathBuf,
}

/// What a training run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub epoch_loss: Vec<f64>,
    pub val_loss: f64,
    pub accuracy: f64,
    pub auc: Option<f64>,
    pub train_rows: usize,
    pub val_rows: usize,
    pub model_file: PathBuf,
    pub metadata_file: PathBuf,
    /// Where it trained: `cpu`, or `cuda:N (name)`.
    pub device: String,
}

/// Where a step trains: the GPU it may use, or the CPU (with the reason when it wanted a GPU).
fn choose_device(spec: &TrainSpec, log: &dyn Fn(LogStream, &str)) -> Result<Option<gpu::Gpu>, ExecError> {
    match spec.device {
        Device::Cpu => Ok(None),
        Device::Gpu => gpu::probe().map(Some).map_err(|why| {
            ExecError::fatal(format!(
                "this step asks for `device: gpu`, but no GPU is usable here: {why} \
                 (use `device: auto` to fall back to the CPU)"
            ))
        }),
        Device::Auto => match gpu::probe() {
            Ok(g) => Ok(Some(g)),
            Err(why) => {
                log(LogStream::System, &format!("sluice: no usable GPU ({why}); training on the CPU"));
                Ok(None)
            }
        },
    }
}

/// Trains where `spec.device` says: on the GPU through CUDA when one is usable (and asked
/// for or allowed), else on the CPU. `stop` is looked at between batches; `log` gets the
/// device choice (Sluice's own `System` lines) and the trainer's lines (`Stderr`): the
/// device, then one per epoch.
pub fn train(
    spec: &TrainSpec,
    stop: &AtomicBool,
    log: &dyn Fn(LogStream, &str),
) -> Result<Trained, ExecError> {
    train_reporting(spec, stop, log, &|_| {})
}

/// What one epoch reached: its mean training loss, and the loss, accuracy and AUC (two
/// classes) on the validation rows (the training rows when none are held out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EpochMetrics {
    pub epoch: usize,
    pub loss: f64,
    pub val_loss: f64,
    pub accuracy: f64,
    pub auc: Option<f64>,
}

/// [`train`], telling `report` each epoch's metrics as it ends.
pub(crate) fn train_reporting(
    spec: &TrainSpec,
    stop: &AtomicBool,
    log: &dyn Fn(LogStream, &str),
    report: &dyn Fn(&EpochMetrics),
) -> Result<Trained, ExecError> {
    if spec.epochs == 0 || spec.batch_size == 0 {
        return Err(ExecError::fatal("`epochs` and `batch_size` must be at least 1"));
    }
    let device = choose_device(spec, log)?;
    let mut rng = Rng::new(spec.seed);
    let data::Prepared { train, val, features, classes, mean, std, reference } =
        data::prepare(spec, &mut rng)?;
    let d = features.len();
    let (sizes, head) = match &spec.model {
        ModelKind::Logistic => (vec![d, 1], Head::Sigmoid),
        ModelKind::Mlp { hidden } => {
            let mut s = vec![d];
            s.extend(hidden);
            s.push(classes.len());
            (s, Head::Softmax)
        }
    };
    let net = Net::new(&sizes, head, &mut rng);
    let hyper = fit::Hyper {
        batch_size: spec.batch_size,
        learning_rate: spec.learning_rate,
        l2: spec.l2,
        optimizer: match spec.optimizer {
            OptimizerKind::Sgd { momentum } => Optimizer::Sgd { momentum },
            OptimizerKind::Adam => Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        },
    };
    let mut fit: Box<dyn Fit + '_> = match device {
        None => Box::new(CpuFit::new(net, &train, hyper)),
        Some(g) => match gpu::start(&g, &net, &train, hyper) {
            Ok(f) => Box::new(f),
            Err(e) if spec.device == Device::Auto => {
                log(
                    LogStream::System,
                    &format!("sluice: the GPU could not start ({e}); training on the CPU"),
                );
                Box::new(CpuFit::new(net, &train, hyper))
            }
            Err(e) => return Err(e),
        },
    };
    let device = fit.device();
    log(LogStream::Stderr, &format!("training on {device}"));

    let mut order: Vec<u32> = (0..train.rows as u32).collect();
    let mut epoch_loss = Vec::with_capacity(spec.epochs);
    // Metrics on the validation rows (on the training rows when none are held out), after
    // every epoch.
    let eval = if val.rows > 0 { &val } else { &train };
    let mut last = None;
    for epoch in 1..=spec.epochs {
        rng.shuffle(&mut order);
        let mean_loss = fit.epoch(&order, stop)?;
        if !mean_loss.is_finite() {
            return Err(fit::diverged(mean_loss));
        }
        let (val_loss, accuracy, auc) = evaluate(fit.as_mut(), eval, head, classes.len())?;
        log(
            LogStream::Stderr,
            &format!(
                "epoch {epoch}/{}: loss {mean_loss:.6} val_loss {val_loss:.6} accuracy {accuracy:.4}{}",
                spec.epochs,
                auc.map(|a| format!(" auc {a:.4}")).unwrap_or_default()
            ),
        );
        report(&EpochMetrics { epoch, loss: mean_loss, val_loss, accuracy, auc });
        epoch_loss.push(mean_loss);
        last = Some((val_loss, accuracy, auc));
    }
    let (val_loss, accuracy, auc) = last.expect("at least one epoch");
    let net = fit.weights()?;
    drop(fit);

    let model_file = with_ext(&spec.output, "safetensors");
    let metadata_file = with_ext(&spec.output, "json");
    let metadata = json!({
        "format": "sluice-model/1",
        "model": match &spec.model { ModelKind::Logistic => json!({"kind": "logistic"}), ModelKind::Mlp { hidden } => json!({"kind": "mlp", "hidden": hidden}) },
        "features": features,
        "label": spec.label,
        "classes": classes,
        "normalization": { "mean": mean, "std": std },
        // The training rows' quantiles per feature: served inputs are compared with them.
        "reference": { "quantiles": features.iter().zip(&reference).map(|(f, q)| (f.clone(), json!(q))).collect::<serde_json::Map<String, Value>>(), "rows": train.rows },
        "layers": net.layers.iter().enumerate().map(|(i, l)| json!({"weight": format!("layer{i}.weight"), "bias": format!("layer{i}.bias"), "shape": [l.inputs, l.outputs], "activation": if i + 1 < net.layers.len() { "relu" } else if head == Head::Sigmoid { "sigmoid" } else { "softmax" }})).collect::<Vec<_>>(),
        "hyperparameters": {
            "epochs": spec.epochs, "batch_size": spec.batch_size, "learning_rate": spec.learning_rate,
            "l2": spec.l2, "seed": spec.seed,
            "optimizer": match spec.optimizer { OptimizerKind::Adam => json!({"kind": "adam"}), OptimizerKind::Sgd { momentum } => json!({"kind": "sgd", "momentum": momentum}) },
        },
        "metrics": { "loss": epoch_loss, "val_loss": val_loss, "accuracy": accuracy, "auc": auc },
        "rows": { "train": train.rows, "validation": val.rows },
        "device": device,
    });
    let tensors: Vec<(String, Vec<usize>, &[f32])> = net
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                (format!("layer{i}.weight"), vec![l.inputs, l.outputs], l.w.as_slice()),
                (format!("layer{i}.bias"), vec![l.outputs], l.b.as_slice()),
            ]
        })
        .collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "sluice-model/1".to_string());
    meta.insert(
        "metadata".to_string(),
        metadata_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    );
    let write = |path: &Path, bytes: &[u8]| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ExecError::fatal(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, bytes)
            .map_err(|e| ExecError::fatal(format!("cannot write {}: {e}", path.display())))
    };
    write(&model_file, &safetensors::encode(&tensors, &meta))?;
    let text = serde_json::to_vec_pretty(&metadata).map_err(|e| ExecError::fatal(e.to_string()))?;
    write(&metadata_file, &text)?;
    Ok(Trained {
        epoch_loss,
        val_loss,
        accuracy,
        auc,
        train_rows: train.rows,
        val_rows: val.rows,
        model_file,
        metadata_file,
        device,
    })
}

/// The loss, accuracy and AUC (two classes) of the current weights on `eval`.
fn evaluate(
    fit: &mut (dyn Fit + '_),
    eval: &data::Table,
    head: Head,
    classes: usize,
) -> Result<(f64, f64, Option<f64>), ExecError> {
    let p = fit.predict(&eval.x, eval.rows)?;
    let val_loss = net::data_loss(&p, &eval.y, head);
    let k = p.len() / eval.rows.max(1);
    let predicted: Vec<u32> = p
        .chunks(k.max(1))
        .map(|row| match head {
            Head::Sigmoid => u32::from(row[0] >= 0.5),
            Head::Softmax => {
                row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
            }
        })
        .collect();
    let accuracy =
        predicted.iter().zip(&eval.y).filter(|(a, b)| a == b).count() as f64 / eval.rows.max(1) as f64;
    let auc = if classes == 2 {
        let positive: Vec<f32> = p.chunks(k.max(1)).map(|row| row[row.len() - 1]).collect();
        data::auc(&positive, &eval.y)
    } else {
        None
    };
    Ok((val_loss, accuracy, auc))
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The GPU `train:` steps would use (`cuda:0 (name, memory)`), or why none is usable. The
/// first call probes the CUDA libraries and opens the device; later calls reuse the answer.
pub fn gpu_status() -> Result<String, String> {
    gpu::probe().map(|g| g.describe())
}

/// GPU slots for the scheduler's pool: the GPUs the NVIDIA kernel driver lists
/// (/proc/driver/nvidia/gpus), no more than `CUDA_VISIBLE_DEVICES` names. Cheap (no CUDA
/// initialization), so every engine can size its pool with it; whether CUDA is usable is
/// `gpu_status`'s question.
pub fn gpu_slots() -> u32 {
    let listed = std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0, |d| d.count()) as u32;
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => listed
            .min(v.split(',').filter(|d| !d.trim().is_empty() && !d.trim().starts_with('-')).count() as u32),
        Err(_) => listed,
    }
}

/// The NVIDIA driver's version line, if its kernel module is loaded.
pub fn nvidia_driver() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    text.lines().next().map(|l| l.trim().to_string())
}

/// Runs `train:` steps.
#[derive(Clone, Default)]
pub struct TrainExecutor;

impl Executor for TrainExecutor {
    fn kind(&self) -> &'static str {
        "train"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        mut kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        Box::pin(async move {
            let ExecSpec::Train(spec) = request.spec else {
                return AttemptOutcome::failed(ExecError::fatal("not a train step"));
            };
            let stop = Arc::new(AtomicBool::new(false));
            let job = {
                let (stop, sink) = (stop.clone(), sink.clone());
                let metrics_file = request.files.metrics_file.clone();
                tokio::task::spawn_blocking(move || {
                    let log = |stream, line: &str| sink.log(stream, format!("{line}\n").as_bytes());
                    // Each epoch's metrics go to the attempt's metrics file, which the engine
                    // reads as it grows: the run's metric series, per epoch.
                    let mut file = (!metrics_file.as_os_str().is_empty())
                        .then(|| {
                            std::fs::OpenOptions::new().create(true).append(true).open(&metrics_file).ok()
                        })
                        .flatten();
                    let file = std::sync::Mutex::new(file.take());
                    let report = |m: &EpochMetrics| {
                        let mut lines = String::new();
                        let step = m.epoch;
                        let mut point = |key: &str, value: f64| {
                            if value.is_finite() {
                                lines.push_str(&format!(
                                    "{{\"key\":\"{key}\",\"value\":{value},\"step\":{step}}}\n"
                                ));
                            }
                        };
                        point("loss", m.loss);
                        point("val_loss", m.val_loss);
                        point("accuracy", m.accuracy);
                        if let Some(a) = m.auc {
                            point("auc", a);
                        }
                        if let Ok(mut f) = file.lock()
                            && let Some(f) = f.as_mut()
                        {
                            use std::io::Write;
                            let _ = f.write_all(lines.as_bytes());
                        }
                    };
                    train_reporting(&spec, &stop, &log, &report)
                })
            };
            tokio::pin!(job);
            let joined = tokio::select! {
                joined = &mut job => joined,
                _ = wait_for_kill(&mut kill) => {
                    stop.store(true, Ordering::Relaxed);
                    job.await
                }
            };
            let trained = match joined {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return AttemptOutcome::failed(e),
                Err(e) => {
                    return AttemptOutcome::failed(ExecError::retryable(format!("the trainer crashed: {e}")));
                }
            };
            let mut outputs = Map::new();
            outputs.insert("model".into(), json!(trained.model_file.display().to_string()));
            outputs.insert("metadata".into(), json!(trained.metadata_file.display().to_string()));
            outputs.insert("loss".into(), json!(trained.epoch_loss));
            outputs.insert("final_loss".into(), json!(trained.epoch_loss.last()));
            outputs.insert("val_loss".into(), json!(trained.val_loss));
            outputs.insert("accuracy".into(), json!(trained.accuracy));
            outputs.insert("auc".into(), trained.auc.map_or(Value::Null, |a| json!(a)));
            outputs.insert("device".into(), json!(trained.device));
            outputs
                .insert("rows".into(), json!({"train": trained.train_rows, "validation": trained.val_rows}));
            AttemptOutcome { result: Ok(()), outputs, exit_code: None }
        })
    }
}

#[cfg(test)]
mod tests;
