//! A trained model loaded for inference: the weights file a `train:` step wrote (safetensors,
//! read with Hugging Face's `safetensors` crate) and its metadata (features, classes, the
//! training rows' standardization, the layers and their activations). Predictions use the
//! same forward pass as training.

use serde_json::Value;

use super::net::{Head, Layer, Net};

/// A model ready to predict.
#[derive(Debug, Clone)]
pub struct Model {
    net: Net,
    /// The features it takes, in order.
    pub features: Vec<String>,
    /// The label's classes, in the order of the probabilities.
    pub classes: Vec<String>,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `logistic` or `mlp`.
    pub kind: String,
    /// The training rows' quantiles per feature (in `features` order), when the metadata
    /// keeps them: the reference for drift of served inputs.
    pub reference: Option<Vec<Vec<f32>>>,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("the metadata has no `{what}` list"))?
        .iter()
        .map(|x| match x {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("the metadata's `{what}` holds {other}, not a name")),
        })
        .collect()
}

fn floats(v: &Value, what: &str, len: usize) -> Result<Vec<f32>, String> {
    let list: Vec<f32> = v
        .as_array()
        .ok_or_else(|| format!("the metadata has no `{what}` list"))?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| format!("the metadata's `{what}` holds {x}")))
        .collect::<Result<_, _>>()?;
    if list.len() != len || list.iter().any(|x| !x.is_finite()) {
        return Err(format!("the metadata's `{what}` needs {len} finite numbers"));
    }
    Ok(list)
}

impl Model {
    /// Loads the weights (`model.safetensors`) with their metadata (`model.json`, format
    /// `sluice-model/1`), checking that every shape fits.
    pub fn load(weights: &[u8], metadata: &Value) -> Result<Model, String> {
        if metadata["format"] != "sluice-model/1" {
            return Err(format!("the metadata's format is {}, not \"sluice-model/1\"", metadata["format"]));
        }
        let features = strings(&metadata["features"], "features")?;
        let classes = strings(&metadata["classes"], "classes")?;
        let d = features.len();
        if d == 0 || classes.len() < 2 {
            return Err("the metadata needs at least one feature and two classes".into());
        }
        let mean = floats(&metadata["normalization"]["mean"], "normalization.mean", d)?;
        let std = floats(&metadata["normalization"]["std"], "normalization.std", d)?;
        if std.iter().any(|s| *s <= 0.0) {
            return Err("the metadata's `normalization.std` has a value that is not above 0".into());
        }
        let tensors = safetensors::SafeTensors::deserialize(weights)
            .map_err(|e| format!("the weights file is not safetensors: {e}"))?;
        let layers_meta =
            metadata["layers"].as_array().filter(|l| !l.is_empty()).ok_or("the metadata lists no layers")?;
        let mut layers = Vec::with_capacity(layers_meta.len());
        let mut inputs = d;
        let mut head = Head::Softmax;
        for (i, l) in layers_meta.iter().enumerate() {
            let name =
                |key: &str| l[key].as_str().map(str::to_string).ok_or(format!("layer {i} names no {key}"));
            let read = |tensor: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
                let t = tensors.tensor(tensor).map_err(|e| format!("tensor `{tensor}`: {e}"))?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                    return Err(format!(
                        "tensor `{tensor}` is {:?} {:?}, not F32 {shape:?}",
                        t.dtype(),
                        t.shape()
                    ));
                }
                let values: Vec<f32> =
                    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(format!("tensor `{tensor}` holds a value that is not finite"));
                }
                Ok(values)
            };
            let outputs = l["shape"][1].as_u64().ok_or(format!("layer {i} has no shape"))? as usize;
            if l["shape"][0].as_u64() != Some(inputs as u64) || outputs == 0 {
                return Err(format!("layer {i}'s shape {} does not follow {inputs} inputs", l["shape"]));
            }
            let last = i + 1 == layers_meta.len();
            match (l["activation"].as_str(), last) {
                (Some("relu"), false) => {}
                (Some("sigmoid"), true) if outputs == 1 && classes.len() == 2 => head = Head::Sigmoid,
                (Some("softmax"), true) if outputs == classes.len() => head = Head::Softmax,
                (a, _) => return Err(format!("layer {i}'s activation {a:?} does not fit its place")),
            }
            let w = read(&name("weight")?, &[inputs, outputs])?;
            let b = read(&name("bias")?, &[outputs])?;
            layers.push(Layer { w, b, inputs, outputs });
            inputs = outputs;
        }
        let kind = metadata["model"]["kind"].as_str().unwrap_or("mlp").to_string();
        let reference = features
            .iter()
            .map(|f| {
                let q = metadata["reference"]["quantiles"][f].as_array()?;
                let v: Vec<f32> = q.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect();
                (v.len() == q.len() && !v.is_empty()).then_some(v)
            })
            .collect::<Option<Vec<_>>>();
        Ok(Model { net: Net { layers, head }, features, classes, mean, std, kind, reference })
    }

    /// Class probabilities of `n` rows of raw feature values (row after row, in the order of
    /// `features`): `n × classes` values.
    pub fn predict(&self, rows: &[f32], n: usize) -> Vec<f32> {
        let d = self.features.len();
        let n = n.min(rows.len() / d);
        let mut x = rows[..n * d].to_vec();
        for row in x.chunks_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        let p = self.net.predict(&x, n);
        match self.net.head {
            // One output, the second class's probability.
            Head::Sigmoid => p.iter().flat_map(|&q| [1.0 - q, q]).collect(),
            Head::Softmax => p,
        }
    }
}
