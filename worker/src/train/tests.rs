//! The trainer end to end on generated tables (the CPU path; gpu/tests.rs runs the GPU path).

use std::fmt::Write as _;

use super::*;

/// Two classes: `blobs` are linearly separable Gaussian clouds; `rings` are an inner disc and
/// an outer ring, which no linear model separates.
pub(super) fn table(dir: &Path, name: &str, rows: usize, rings: bool, seed: u64) -> PathBuf {
    let mut rng = Rng::new(seed);
    let mut text = String::from("x1,x2,noise,label\n");
    for _ in 0..rows {
        let class = rng.next_u64() % 2;
        let (a, b) = if rings {
            let r = if class == 1 { 2.0 + rng.uniform() } else { rng.uniform() * 1.2 };
            let t = rng.uniform() * std::f64::consts::TAU;
            (r * t.cos(), r * t.sin())
        } else {
            let c = if class == 1 { 1.5 } else { -1.5 };
            (c + rng.normal(), c + rng.normal())
        };
        let label = if class == 1 { "yes" } else { "no" };
        writeln!(text, "{a:.5},{b:.5},{:.5},{label}", rng.normal() * 10.0 + 50.0).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub(super) fn spec(dir: &Path, data: PathBuf, model: ModelKind) -> TrainSpec {
    TrainSpec {
        data,
        validation_data: None,
        validation: 0.25,
        label: "label".into(),
        features: Vec::new(),
        model,
        optimizer: OptimizerKind::Adam,
        epochs: 30,
        batch_size: 32,
        learning_rate: 0.01,
        l2: 0.0,
        seed: 7,
        device: Device::Cpu,
        output: dir.join("out/model"),
    }
}

fn run(spec: &TrainSpec) -> Result<Trained, ExecError> {
    train(spec, &AtomicBool::new(false), &|_, _| {})
}

#[test]
fn logistic_regression_learns_separable_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "blobs.csv", 2000, false, 1);
    let t = run(&spec(dir.path(), data, ModelKind::Logistic)).unwrap();
    assert!(t.accuracy > 0.95, "accuracy {}", t.accuracy);
    assert!(t.auc.unwrap() > 0.98, "auc {:?}", t.auc);
    assert!(t.epoch_loss.last() < t.epoch_loss.first(), "{:?}", t.epoch_loss);
    assert_eq!((t.train_rows, t.val_rows), (1500, 500));
    // The model files: safetensors weights a loader reads back, and the metadata.
    let tensors = safetensors::decode(&std::fs::read(&t.model_file).unwrap()).unwrap();
    assert_eq!(tensors["layer0.weight"].0, vec![3, 1]);
    assert_eq!(tensors["layer0.bias"].0, vec![1]);
    let meta: Value = serde_json::from_slice(&std::fs::read(&t.metadata_file).unwrap()).unwrap();
    assert_eq!(meta["features"], json!(["x1", "x2", "noise"]));
    assert_eq!(meta["classes"], json!(["no", "yes"]));
    assert_eq!(meta["normalization"]["mean"].as_array().unwrap().len(), 3);
    assert_eq!(meta["metrics"]["accuracy"], json!(t.accuracy));
}

#[test]
fn an_mlp_learns_what_a_linear_model_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "rings.csv", 3000, true, 2);
    let linear = run(&spec(dir.path(), data.clone(), ModelKind::Logistic)).unwrap();
    assert!(linear.accuracy < 0.75, "a linear model should not separate rings: {}", linear.accuracy);
    let mut s = spec(dir.path(), data, ModelKind::Mlp { hidden: vec![16, 16] });
    s.output = dir.path().join("mlp");
    let mlp = run(&s).unwrap();
    assert!(mlp.accuracy > 0.95, "mlp accuracy {}", mlp.accuracy);
    let tensors = safetensors::decode(&std::fs::read(&mlp.model_file).unwrap()).unwrap();
    assert_eq!(tensors["layer2.weight"].0, vec![16, 2], "softmax over the two classes");

    // SGD with momentum and L2 train too.
    s.optimizer = OptimizerKind::Sgd { momentum: 0.9 };
    s.learning_rate = 0.05;
    s.l2 = 1e-4;
    s.epochs = 40;
    let sgd = run(&s).unwrap();
    assert!(sgd.accuracy > 0.9, "sgd accuracy {}", sgd.accuracy);
}

#[test]
fn a_seed_reproduces_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "rings.csv", 800, true, 3);
    let mut s = spec(dir.path(), data, ModelKind::Mlp { hidden: vec![8] });
    s.epochs = 5;
    let a = run(&s).unwrap();
    let first = std::fs::read(&a.model_file).unwrap();
    let b = run(&s).unwrap();
    assert_eq!(std::fs::read(&b.model_file).unwrap(), first, "same seed, same bytes");
    assert_eq!(a.epoch_loss, b.epoch_loss);
    s.seed = 8;
    let c = run(&s).unwrap();
    assert_ne!(std::fs::read(&c.model_file).unwrap(), first);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "blobs.csv", 50, false, 4);
    let mut s = spec(dir.path(), data.clone(), ModelKind::Logistic);
    s.label = "target".into();
    assert!(run(&s).unwrap_err().message.contains("has no column `target`"));
    s.label = "label".into();
    s.features = vec!["x1".into(), "nope".into()];
    assert!(run(&s).unwrap_err().message.contains("has no column `nope`"));
    s.features.clear();

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "a,label\n1,x\noops,y\n").unwrap();
    s.data = bad;
    let e = run(&s).unwrap_err();
    assert!(e.message.contains("line 3: feature `a` holds `oops`"), "{}", e.message);

    let three = dir.path().join("three.csv");
    std::fs::write(&three, "a,label\n1,x\n2,y\n3,z\n").unwrap();
    s.data = three;
    assert!(run(&s).unwrap_err().message.contains("needs a binary label"));

    s.data = data;
    s.epochs = 0;
    assert!(run(&s).unwrap_err().message.contains("at least 1"));
    s.epochs = 3;
    let stopped = train(&s, &AtomicBool::new(true), &|_, _| {}).unwrap_err();
    assert_eq!(stopped.kind, crate::ErrorKind::Cancelled);
}

#[test]
fn auc_counts_ranks_and_ties() {
    assert_eq!(data::auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), Some(0.75));
    assert_eq!(data::auc(&[0.5, 0.5], &[0, 1]), Some(0.5));
    assert_eq!(data::auc(&[0.2, 0.9], &[1, 1]), None);
}

#[tokio::test]
async fn the_executor_reports_metrics_and_refuses_a_gpu_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "blobs.csv", 400, false, 5);
    let mut s = spec(dir.path(), data, ModelKind::Logistic);
    s.device = Device::Auto;
    let request = |spec: TrainSpec| {
        AttemptRequest::new(
            crate::executor::AttemptId { run: 1, step: "train".into(), item: 0, attempt: 1 },
            ExecSpec::Train(spec),
            crate::AttemptFiles::at(dir.path().to_path_buf(), &dir.path().join("train.0.1"), false),
        )
    };
    struct Lines(std::sync::Mutex<String>);
    impl AttemptSink for Lines {
        fn log(&self, _: LogStream, chunk: &[u8]) {
            self.0.lock().unwrap().push_str(&String::from_utf8_lossy(chunk));
        }
        fn started(&self, _: u32) -> Result<(), String> {
            Ok(())
        }
    }
    let sink = Arc::new(Lines(Default::default()));
    let (_switch, rx) = crate::KillSwitch::new();
    let outcome = TrainExecutor.execute(request(s.clone()), sink.clone(), rx).await;
    assert_eq!(outcome.result, Ok(()));
    assert!(outcome.outputs["accuracy"].as_f64().unwrap() > 0.9);
    assert_eq!(outcome.outputs["loss"].as_array().unwrap().len(), 30);
    let log = sink.0.lock().unwrap().clone();
    assert!(log.contains("epoch 30/30"), "{log}");
    let probe = gpu::probe();
    match &probe {
        // `auto` without a GPU: the CPU, and the log says why.
        Err(why) => {
            assert_eq!(outcome.outputs["device"], "cpu");
            assert!(log.contains(&format!("sluice: no usable GPU ({why}); training on the CPU")), "{log}");
        }
        Ok(g) => assert_eq!(outcome.outputs["device"], g.describe()),
    }

    // `gpu` without one fails, naming the reason; with one it trains there.
    s.device = Device::Gpu;
    let (_switch, rx) = crate::KillSwitch::new();
    let outcome = TrainExecutor.execute(request(s), sink, rx).await;
    match probe {
        Err(why) => {
            let e = outcome.result.unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::Fatal);
            assert!(
                e.message.contains("asks for `device: gpu`") && e.message.contains(&why),
                "{}",
                e.message
            );
        }
        Ok(g) => {
            assert_eq!(outcome.result, Ok(()));
            assert_eq!(outcome.outputs["device"], g.describe());
        }
    }
}

/// A served model predicts what training measured: loaded back from its two files, its
/// accuracy on the whole table is the trainer's, within the held-out share's difference.
#[test]
fn a_loaded_model_predicts_like_the_trained_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "rings.csv", 1200, true, 3);
    let mut s = spec(dir.path(), data.clone(), ModelKind::Mlp { hidden: vec![16, 8] });
    s.validation = 0.0;
    let t = run(&s).unwrap();
    let meta: Value = serde_json::from_slice(&std::fs::read(&t.metadata_file).unwrap()).unwrap();
    let weights = std::fs::read(&t.model_file).unwrap();
    let m = Model::load(&weights, &meta).unwrap();
    assert_eq!(m.features, ["x1", "x2", "noise"]);
    assert_eq!(m.classes, ["no", "yes"]);
    // The training rows' quantiles, kept as the reference for drift: sorted, 500 per feature.
    let reference = m.reference.as_ref().unwrap();
    assert!(reference.iter().all(|q| q.len() == 500 && q.is_sorted()));
    let text = std::fs::read_to_string(&data).unwrap();
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        x.extend(f[..3].iter().map(|v| v.parse::<f32>().unwrap()));
        labels.push(f[3].to_string());
    }
    let p = m.predict(&x, labels.len());
    assert_eq!(p.len(), labels.len() * 2);
    let right = p
        .chunks(2)
        .zip(&labels)
        .filter(|(row, label)| m.classes[usize::from(row[1] > row[0])] == **label)
        .count();
    let accuracy = right as f64 / labels.len() as f64;
    assert!((accuracy - t.accuracy).abs() < 1e-9, "served {accuracy}, trained {}", t.accuracy);

    // A logistic model: one sigmoid output, served as two probabilities.
    let t = run(&spec(dir.path(), data, ModelKind::Logistic)).unwrap();
    let meta: Value = serde_json::from_slice(&std::fs::read(&t.metadata_file).unwrap()).unwrap();
    let m = Model::load(&std::fs::read(&t.model_file).unwrap(), &meta).unwrap();
    let p = m.predict(&x[..6], 2);
    assert!(p.chunks(2).all(|r| ((r[0] + r[1]) - 1.0).abs() < 1e-6));

    // Damaged files are refused with the reason.
    assert!(Model::load(&weights[..40], &meta).unwrap_err().contains("not safetensors"));
    let mut wrong = meta.clone();
    wrong["features"] = json!(["x1"]);
    assert!(Model::load(&std::fs::read(&t.model_file).unwrap(), &wrong).is_err());
}
