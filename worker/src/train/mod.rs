//! The train executor: built-in trainers (logistic regression, a multi-layer perceptron) on a
//! CSV table, mini-batch SGD with momentum or Adam, the model written as safetensors weights
//! plus JSON metadata, metrics as outputs.
//!
//! This is the CPU path, multi-threaded over the rows of each matrix product. The GPU path
//! (cudarc) is not built yet; a step that asks for `device: gpu` fails with a clear message.

mod net;
mod safetensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal, LogStream,
    wait_for_kill,
};
use net::{Head, Net, Optimizer, OptimizerState, Rng};

/// Which model to train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// Binary logistic regression (sigmoid output).
    Logistic,
    /// A multi-layer perceptron: ReLU hidden layers, softmax output over the label's classes.
    Mlp { hidden: Vec<usize> },
}

/// Which optimizer updates the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    Sgd { momentum: f32 },
    Adam,
}

/// Where the training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// A GPU when one is usable, else the CPU (saying so in the log).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// A `train:` step after templating.
#[derive(Debug, Clone, PartialEq)]
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

/// A loaded table: features row-major, labels as class indices.
struct Table {
    x: Vec<f32>,
    y: Vec<u32>,
    rows: usize,
}

fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<csv::StringRecord>), ExecError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| ExecError::fatal(format!("cannot read {}: {e}", path.display())))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ExecError::fatal(format!("{}: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    let records = reader
        .records()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExecError::fatal(format!("{}: {e}", path.display())))?;
    Ok((header, records))
}

fn column(header: &[String], name: &str, path: &Path) -> Result<usize, ExecError> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        ExecError::fatal(format!("{} has no column `{name}` (it has {})", path.display(), header.join(", ")))
    })
}

/// Reads a table with the given feature columns and label classes (`classes` empty: learn
/// them from this table, sorted).
fn load(
    path: &Path,
    label: &str,
    features: &[String],
    classes: &mut Vec<String>,
) -> Result<(Table, Vec<String>), ExecError> {
    let (header, records) = read_csv(path)?;
    let li = column(&header, label, path)?;
    let features: Vec<String> = if features.is_empty() {
        header.iter().filter(|h| *h != label).cloned().collect()
    } else {
        features.to_vec()
    };
    let fi = features.iter().map(|f| column(&header, f, path)).collect::<Result<Vec<_>, _>>()?;
    if classes.is_empty() {
        let mut seen: Vec<String> = records.iter().filter_map(|r| r.get(li)).map(str::to_string).collect();
        seen.sort();
        seen.dedup();
        *classes = seen;
    }
    let mut x = Vec::with_capacity(records.len() * fi.len());
    let mut y = Vec::with_capacity(records.len());
    for (r, rec) in records.iter().enumerate() {
        let line = r + 2;
        let value = rec.get(li).unwrap_or_default();
        let class = classes.iter().position(|c| c == value).ok_or_else(|| {
            ExecError::fatal(format!(
                "{} line {line}: label `{value}` is not one of the training classes {classes:?}",
                path.display()
            ))
        })?;
        y.push(class as u32);
        for (&c, name) in fi.iter().zip(&features) {
            let field = rec.get(c).unwrap_or_default();
            let v: f32 = field.parse().map_err(|_| {
                ExecError::fatal(format!(
                    "{} line {line}: feature `{name}` holds `{field}`, not a number",
                    path.display()
                ))
            })?;
            if !v.is_finite() {
                return Err(ExecError::fatal(format!(
                    "{} line {line}: feature `{name}` is {v}",
                    path.display()
                )));
            }
            x.push(v);
        }
    }
    Ok((Table { x, y, rows: records.len() }, features))
}

/// Per-feature mean and standard deviation of the training rows.
fn normalization(t: &Table, d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = t.rows.max(1) as f64;
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in t.x.chunks(d) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let std =
        mean.iter().zip(&sq).map(|(m, s)| ((s / n - (m / n).powi(2)).max(0.0).sqrt()).max(1e-12) as f32);
    (mean.iter().map(|m| (m / n) as f32).collect(), std.collect())
}

fn normalize(t: &mut Table, mean: &[f32], std: &[f32]) {
    for row in t.x.chunks_mut(mean.len().max(1)) {
        for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
            *v = (*v - m) / s;
        }
    }
}

/// Area under the ROC curve of binary scores (ties share their rank).
fn auc(scores: &[f32], y: &[u32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (pos, neg) =
        y.iter().fold((0f64, 0f64), |(p, n), &l| if l == 1 { (p + 1.0, n) } else { (p, n + 1.0) });
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if y[k] == 1 {
                rank_sum += rank;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
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
}

/// Trains on the CPU. `stop` is checked between batches; `log` gets a line per epoch.
pub fn train_cpu(spec: &TrainSpec, stop: &AtomicBool, log: &dyn Fn(&str)) -> Result<Trained, ExecError> {
    if spec.epochs == 0 || spec.batch_size == 0 {
        return Err(ExecError::fatal("`epochs` and `batch_size` must be at least 1"));
    }
    let mut classes = Vec::new();
    let (mut all, features) = load(&spec.data, &spec.label, &spec.features, &mut classes)?;
    let d = features.len();
    if d == 0 {
        return Err(ExecError::fatal("the table has no feature columns"));
    }
    if classes.len() < 2 {
        return Err(ExecError::fatal(format!(
            "the label `{}` has fewer than two classes: {classes:?}",
            spec.label
        )));
    }
    if spec.model == ModelKind::Logistic && classes.len() != 2 {
        return Err(ExecError::fatal(format!(
            "logistic regression needs a binary label; `{}` has {} classes (use model: mlp)",
            spec.label,
            classes.len()
        )));
    }
    let mut rng = Rng::new(spec.seed);
    let (mut train, mut val) = match &spec.validation_data {
        Some(path) => (all, load(path, &spec.label, &features, &mut classes)?.0),
        None => {
            if !(0.0..1.0).contains(&spec.validation) {
                return Err(ExecError::fatal("`validation` must be a fraction in [0, 1)"));
            }
            let mut order: Vec<usize> = (0..all.rows).collect();
            rng.shuffle(&mut order);
            let held = ((all.rows as f64) * spec.validation).round() as usize;
            let pick = |rows: &[usize]| Table {
                x: rows.iter().flat_map(|&r| all.x[r * d..(r + 1) * d].iter().copied()).collect(),
                y: rows.iter().map(|&r| all.y[r]).collect(),
                rows: rows.len(),
            };
            let split = (pick(&order[held..]), pick(&order[..held]));
            all.x.clear();
            split
        }
    };
    if train.rows == 0 {
        return Err(ExecError::fatal("no training rows"));
    }
    let (mean, std) = normalization(&train, d);
    normalize(&mut train, &mean, &std);
    normalize(&mut val, &mean, &std);

    let (sizes, head) = match &spec.model {
        ModelKind::Logistic => (vec![d, 1], Head::Sigmoid),
        ModelKind::Mlp { hidden } => {
            let mut s = vec![d];
            s.extend(hidden);
            s.push(classes.len());
            (s, Head::Softmax)
        }
    };
    let mut net = Net::new(&sizes, head, &mut rng);
    let kind = match spec.optimizer {
        OptimizerKind::Sgd { momentum } => Optimizer::Sgd { momentum },
        OptimizerKind::Adam => Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    };
    let mut opt = OptimizerState::new(kind, &net);
    let mut order: Vec<usize> = (0..train.rows).collect();
    let mut epoch_loss = Vec::with_capacity(spec.epochs);
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    for epoch in 1..=spec.epochs {
        rng.shuffle(&mut order);
        let (mut sum, mut seen) = (0.0, 0usize);
        for batch in order.chunks(spec.batch_size) {
            if stop.load(Ordering::Relaxed) {
                return Err(ExecError::cancelled("the step was stopped"));
            }
            bx.clear();
            by.clear();
            for &r in batch {
                bx.extend_from_slice(&train.x[r * d..(r + 1) * d]);
                by.push(train.y[r]);
            }
            let (loss, grads) = net.gradients(&bx, &by, spec.l2);
            if !loss.is_finite() {
                return Err(ExecError::fatal(format!(
                    "the loss diverged to {loss} in epoch {epoch}; lower the learning rate"
                )));
            }
            opt.apply(&mut net, &grads, spec.learning_rate);
            sum += loss * batch.len() as f64;
            seen += batch.len();
        }
        let mean_loss = sum / seen as f64;
        log(&format!("epoch {epoch}/{}: loss {mean_loss:.6}", spec.epochs));
        epoch_loss.push(mean_loss);
    }

    let eval = if val.rows > 0 { &val } else { &train };
    let val_loss = net.loss(&eval.x, &eval.y, 0.0);
    let p = net.predict(&eval.x, eval.rows);
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
    let auc = if classes.len() == 2 {
        let positive: Vec<f32> = p.chunks(k.max(1)).map(|row| row[row.len() - 1]).collect();
        auc(&positive, &eval.y)
    } else {
        None
    };

    let model_file = with_ext(&spec.output, "safetensors");
    let metadata_file = with_ext(&spec.output, "json");
    let metadata = json!({
        "format": "sluice-model/1",
        "model": match &spec.model { ModelKind::Logistic => json!({"kind": "logistic"}), ModelKind::Mlp { hidden } => json!({"kind": "mlp", "hidden": hidden}) },
        "features": features,
        "label": spec.label,
        "classes": classes,
        "normalization": { "mean": mean, "std": std },
        "layers": net.layers.iter().enumerate().map(|(i, l)| json!({"weight": format!("layer{i}.weight"), "bias": format!("layer{i}.bias"), "shape": [l.inputs, l.outputs], "activation": if i + 1 < net.layers.len() { "relu" } else if head == Head::Sigmoid { "sigmoid" } else { "softmax" }})).collect::<Vec<_>>(),
        "hyperparameters": {
            "epochs": spec.epochs, "batch_size": spec.batch_size, "learning_rate": spec.learning_rate,
            "l2": spec.l2, "seed": spec.seed,
            "optimizer": match spec.optimizer { OptimizerKind::Adam => json!({"kind": "adam"}), OptimizerKind::Sgd { momentum } => json!({"kind": "sgd", "momentum": momentum}) },
        },
        "metrics": { "loss": epoch_loss, "val_loss": val_loss, "accuracy": accuracy, "auc": auc },
        "rows": { "train": train.rows, "validation": val.rows },
        "device": "cpu",
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
    })
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The NVIDIA driver's version line, if its kernel module is loaded. (Whether CUDA is usable
/// is the GPU path's to probe; that path is not built yet.)
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
            match spec.device {
                Device::Gpu => {
                    return AttemptOutcome::failed(ExecError::fatal(
                        "this step asks for `device: gpu`, but this build of Sluice trains on the CPU only \
                         (the cudarc GPU path is not built yet); use `device: cpu` or `auto`",
                    ));
                }
                Device::Auto if nvidia_driver().is_some() => sink.log(
                    LogStream::System,
                    b"sluice: an NVIDIA driver is loaded, but this build has no GPU trainer; training on the CPU\n",
                ),
                Device::Auto => sink.log(LogStream::System, b"sluice: no GPU here; training on the CPU\n"),
                Device::Cpu => {}
            }
            let stop = Arc::new(AtomicBool::new(false));
            let job = {
                let (stop, sink) = (stop.clone(), sink.clone());
                tokio::task::spawn_blocking(move || {
                    let log = |line: &str| sink.log(LogStream::Stderr, format!("{line}\n").as_bytes());
                    train_cpu(&spec, &stop, &log)
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
            outputs.insert("device".into(), json!("cpu"));
            outputs
                .insert("rows".into(), json!({"train": trained.train_rows, "validation": trained.val_rows}));
            AttemptOutcome { result: Ok(()), outputs, exit_code: None }
        })
    }
}

#[cfg(test)]
mod tests;
