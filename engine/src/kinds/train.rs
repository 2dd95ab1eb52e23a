//! `train:`: train a built-in model (logistic regression, an MLP) on a CSV table, on a GPU when
//! one is usable and on the CPU otherwise, writing safetensors weights and JSON metadata.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_worker::{Device, ExecSpec, InputFile, ModelKind, OptimizerKind, TrainSpec};

use super::{Check, Kind, Render, Rendered, Templates};

/// A built-in trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainModel {
    /// Binary logistic regression.
    Logistic,
    /// A multi-layer perceptron: ReLU hidden layers, softmax output.
    Mlp,
}

/// The optimizer of a `train:` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainOptimizer {
    #[default]
    Adam,
    /// Mini-batch SGD with momentum.
    Sgd,
}

/// Where a `train:` step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// A GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// A `train:` block: train a built-in model on a CSV table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainBlock {
    pub model: TrainModel,
    /// The training table, CSV with a header (templated; relative to the pipeline file's folder).
    pub data: String,
    /// The label column.
    pub label: String,
    /// Feature columns (default: every column but the label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// A separate validation table (templated); without it `validation` of the rows are held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_data: Option<String>,
    /// The share of rows held out for validation (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<f64>,
    /// Hidden layer sizes of an `mlp` (default [64]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub optimizer: TrainOptimizer,
    /// SGD momentum (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f32>,
    /// L2 weight penalty (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<f32>,
    /// Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub device: TrainDevice,
    /// Where the model goes, without extension, relative to the run's shared folder (default
    /// the step id): `<output>.safetensors` and `<output>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl Kind for TrainBlock {
    fn check(&self, cx: &mut Check<'_>) {
        if self.label.trim().is_empty() {
            cx.at("label", "`label` is empty");
        }
        if self.data.trim().is_empty() {
            cx.at("data", "`data` is empty");
        }
        if let Some(v) = self.validation
            && !(0.0..1.0).contains(&v)
        {
            cx.at("validation", format!("`validation` must be in [0, 1), not {v}"));
        }
        for (key, value) in [("epochs", self.epochs), ("batch_size", self.batch_size)] {
            if value == Some(0) {
                cx.at(key, format!("`{key}` must be at least 1"));
            }
        }
        if let Some(lr) = self.learning_rate
            && !(lr > 0.0 && lr.is_finite())
        {
            cx.at("learning_rate", "`learning_rate` must be more than 0");
        }
        if self.model == TrainModel::Logistic && !self.hidden.is_empty() {
            cx.at("hidden", "`hidden` layers are for `model: mlp`");
        }
        if self.hidden.contains(&0) {
            cx.at("hidden", "a hidden layer needs at least one unit");
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.text("data", &self.data);
        if let Some(v) = &self.validation_data {
            out.text("validation_data", v);
        }
        if let Some(o) = &self.output {
            out.text("output", o);
        }
    }

    fn artifact_names(&self) -> &'static [&'static str] {
        &["model", "metadata"]
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let output = match (&self.output, cx.item) {
            (Some(o), _) => cx.run_dir.join((cx.text)(o)?),
            (None, Some((item, _))) => cx.run_dir.join(format!("{}-{item}", cx.step)),
            (None, None) => cx.run_dir.join(cx.step),
        };
        let spec = TrainSpec {
            data: cx.file(&self.data)?,
            validation_data: self.validation_data.as_deref().map(|v| cx.file(v)).transpose()?,
            validation: self.validation.unwrap_or(0.2),
            label: self.label.clone(),
            features: self.features.clone(),
            model: match self.model {
                TrainModel::Logistic => ModelKind::Logistic,
                TrainModel::Mlp => ModelKind::Mlp {
                    hidden: if self.hidden.is_empty() { vec![64] } else { self.hidden.clone() },
                },
            },
            optimizer: match self.optimizer {
                TrainOptimizer::Adam => OptimizerKind::Adam,
                TrainOptimizer::Sgd => OptimizerKind::Sgd { momentum: self.momentum.unwrap_or(0.9) },
            },
            epochs: self.epochs.unwrap_or(10) as usize,
            batch_size: self.batch_size.unwrap_or(64) as usize,
            learning_rate: self.learning_rate.unwrap_or(0.01),
            l2: self.l2.unwrap_or(0.0),
            seed: self.seed.unwrap_or(0),
            device: match self.device {
                TrainDevice::Auto => Device::Auto,
                TrainDevice::Cpu => Device::Cpu,
                TrainDevice::Gpu => Device::Gpu,
            },
            output: output.clone(),
        };
        // The trainer writes `<output>.safetensors` and `<output>.json`.
        let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The tables it reads, so that the step cache and lineage know their content.
        let inputs = std::iter::once(&spec.data)
            .chain(spec.validation_data.as_ref())
            .map(|p| InputFile {
                source: p.clone(),
                name: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            })
            .collect();
        Ok(Rendered {
            spec: ExecSpec::Train(spec),
            inputs,
            work_folder: output.parent().map(|p| p.to_path_buf()),
            artifacts: vec![
                ("model".into(), format!("{name}.safetensors")),
                ("metadata".into(), format!("{name}.json")),
            ],
        })
    }
}
