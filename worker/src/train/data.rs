//! Reading the training table: CSV with a header, feature columns and a label, the
//! train/validation split, standardization; and the metrics computed from predictions.

use std::path::Path;

use super::net::Rng;
use super::{ModelKind, TrainSpec};
use crate::error::ExecError;

/// A loaded table: features row-major, labels as class indices.
pub(super) struct Table {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub rows: usize,
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
pub(super) fn load(
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
pub(super) fn normalization(t: &Table, d: usize) -> (Vec<f32>, Vec<f32>) {
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

pub(super) fn normalize(t: &mut Table, mean: &[f32], std: &[f32]) {
    for row in t.x.chunks_mut(mean.len().max(1)) {
        for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
            *v = (*v - m) / s;
        }
    }
}

/// Area under the ROC curve of binary scores (ties share their rank); `None` without both classes.
pub fn auc(scores: &[f32], y: &[u32]) -> Option<f64> {
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

/// The tables a training run works on, standardized by the training rows' statistics.
pub(super) struct Prepared {
    pub train: Table,
    pub val: Table,
    pub features: Vec<String>,
    pub classes: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Per feature, the training rows' quantiles ([`REFERENCE_POINTS`] of them, evenly
    /// spaced from the least to the greatest value): the reference a served model's inputs
    /// are compared with for drift.
    pub reference: Vec<Vec<f32>>,
}

/// Quantiles kept per feature as the reference for drift.
pub(super) const REFERENCE_POINTS: usize = 500;

/// `points` quantiles of each column of `t` (raw values), evenly spaced in rank.
fn quantiles(t: &Table, d: usize, points: usize) -> Vec<Vec<f32>> {
    (0..d)
        .map(|j| {
            let mut col: Vec<f32> = t.x.chunks(d).map(|row| row[j]).collect();
            col.sort_by(f32::total_cmp);
            if col.len() <= points {
                return col;
            }
            (0..points).map(|i| col[i * (col.len() - 1) / (points - 1)]).collect()
        })
        .collect()
}

/// Loads the training table, checks its label, splits off the validation rows (a shuffle by
/// `rng`, or the separate validation file) and standardizes both tables.
pub(super) fn prepare(spec: &TrainSpec, rng: &mut Rng) -> Result<Prepared, ExecError> {
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
    let reference = quantiles(&train, d, REFERENCE_POINTS);
    normalize(&mut train, &mean, &std);
    normalize(&mut val, &mean, &std);
    Ok(Prepared { train, val, features, classes, mean, std, reference })
}
