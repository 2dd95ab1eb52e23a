//! Drift: whether the data a model sees now (the current table) differs from the data it was
//! trained on (the reference), column by column, with the tests Evidently uses and the
//! statistics SciPy computes (checked against SciPy in tests/drift.rs).
//!
//! `auto` picks a test per column as Evidently does: with a reference of at most 1,000 rows,
//! Kolmogorov-Smirnov (p < 0.05) for numeric columns of more than 5 distinct values,
//! chi-square for other columns of more than 2, a two-proportion Z-test for binary ones;
//! with a larger reference, the Wasserstein distance over the reference's standard deviation
//! (≥ 0.1) for numeric columns of more than 5 distinct values and the Jensen-Shannon distance
//! (≥ 0.1) for the others. The table drifts when at least `drift_share` of its columns do.
//!
//! Used by the `drift:` step kind (driver/builtin.rs), `sluice drift`, and the live monitor
//! of served models.

pub mod html;
pub mod ks;
pub mod stats;
pub mod table;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use table::{Column, Table, Values, read_csv};

/// The test of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Evidently's choice per column (see the module's docs).
    #[default]
    Auto,
    /// Two-sample Kolmogorov-Smirnov: drifts when p < threshold (0.05). Numeric columns.
    Ks,
    /// Population stability index over Sturges bins (or categories): drifts when ≥ threshold
    /// (0.1); 0.25 and more is a significant shift.
    Psi,
    /// Chi-square test of homogeneity over the categories: drifts when p < threshold (0.05).
    Chi2,
    /// Wasserstein distance over the reference's standard deviation: drifts when ≥ threshold
    /// (0.1). Numeric columns.
    Wasserstein,
    /// Jensen-Shannon distance of the binned distributions: drifts when ≥ threshold (0.1).
    JensenShannon,
    /// Two-proportion Z-test: drifts when p < threshold (0.05). Columns of two values.
    Z,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Ks => "ks",
            Method::Psi => "psi",
            Method::Chi2 => "chi2",
            Method::Wasserstein => "wasserstein",
            Method::JensenShannon => "jensen_shannon",
            Method::Z => "z",
        }
    }

    pub fn parse(text: &str) -> Result<Method, String> {
        serde_json::from_value(json!(text)).map_err(|_| {
            format!("`{text}` is not a drift method (auto, ks, psi, chi2, wasserstein, jensen_shannon, z)")
        })
    }

    /// Whether the verdict is a p-value under the threshold (else a distance at or over it).
    fn is_test(self) -> bool {
        matches!(self, Method::Ks | Method::Chi2 | Method::Z)
    }

    fn default_threshold(self) -> f64 {
        if self.is_test() { 0.05 } else { 0.1 }
    }
}

/// What to compare and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The columns (empty: every column of the reference the current table has too).
    pub columns: Vec<String>,
    pub method: Method,
    /// Overrides the method's threshold for every column.
    pub threshold: Option<f64>,
    /// The share of drifted columns at which the table drifts (default 0.5).
    pub drift_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { columns: Vec::new(), method: Method::Auto, threshold: None, drift_share: 0.5 }
    }
}

/// Both tables binned alike, for the report's histograms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bin edges of a numeric column (one more than the shares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    /// The categories of a categorical one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// The share of each table's values in each bin.
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// One column's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    pub column: String,
    /// `numeric` or `categorical`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub method: &'static str,
    pub statistic: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    /// A PSI's band: `stable` (< 0.1), `moderate` (< 0.25) or `significant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<&'static str>,
    pub reference_values: usize,
    pub current_values: usize,
    pub reference_missing: usize,
    pub current_missing: usize,
    pub histogram: Histogram,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub method: &'static str,
    pub reference_rows: usize,
    pub current_rows: usize,
    pub columns: Vec<ColumnDrift>,
    pub drifted_columns: Vec<String>,
    /// drifted columns / columns.
    pub share: f64,
    pub drift_share: f64,
    /// The table's verdict: share ≥ drift_share.
    pub drifted: bool,
    /// Columns of one table only, left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl Report {
    /// What a `drift:` step outputs (for `when:` and downstream templates).
    pub fn outputs(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("drifted".into(), json!(self.drifted));
        out.insert("share".into(), json!(self.share));
        out.insert("drifted_columns".into(), json!(self.drifted_columns));
        out.insert("columns".into(), json!(self.columns.len()));
        out
    }
}

/// Compares every chosen column of `current` with `reference`.
pub fn compare(reference: &Table, current: &Table, opts: &Options) -> Result<Report, String> {
    if !(opts.drift_share > 0.0 && opts.drift_share <= 1.0) {
        return Err(format!("`drift_share` must be in (0, 1], not {}", opts.drift_share));
    }
    if let Some(t) = opts.threshold
        && !(t.is_finite() && t > 0.0)
    {
        return Err(format!("`threshold` must be a number above 0, not {t}"));
    }
    let mut pairs = Vec::new();
    let mut skipped = Vec::new();
    if opts.columns.is_empty() {
        for r in &reference.columns {
            match current.column(&r.name) {
                Some(c) => pairs.push((r, c)),
                None => skipped.push(r.name.clone()),
            }
        }
        skipped.extend(
            current.columns.iter().filter(|c| reference.column(&c.name).is_none()).map(|c| c.name.clone()),
        );
    } else {
        for name in &opts.columns {
            let r = reference.column(name).ok_or_else(|| format!("the reference has no column `{name}`"))?;
            let c =
                current.column(name).ok_or_else(|| format!("the current table has no column `{name}`"))?;
            pairs.push((r, c));
        }
    }
    if pairs.is_empty() {
        return Err("the two tables have no column in common".into());
    }
    let small_reference = reference.rows <= 1000;
    // Columns in parallel: each is independent, and sorting dominates.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(pairs.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<ColumnDrift, String>>> = vec![None; pairs.len()];
    let done = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((r, c)) = pairs.get(i) else { break };
                    let out = column(r, c, opts, small_reference);
                    done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                }
            });
        }
    });
    let columns = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not computed".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let drifted_columns: Vec<String> =
        columns.iter().filter(|c| c.drifted).map(|c| c.column.clone()).collect();
    let share = drifted_columns.len() as f64 / columns.len() as f64;
    Ok(Report {
        format: "sluice-drift/1",
        method: opts.method.name(),
        reference_rows: reference.rows,
        current_rows: current.rows,
        drifted: share >= opts.drift_share,
        columns,
        drifted_columns,
        share,
        drift_share: opts.drift_share,
        skipped,
    })
}

/// A sorted copy. Sorted as integers whose order is the numbers' (the sign bit flipped for
/// positives, every bit for negatives): twice as fast as comparing floats.
fn sorted(v: &[f64]) -> Vec<f64> {
    let key = |x: f64| {
        let b = x.to_bits();
        if b >> 63 == 1 { !b } else { b | (1 << 63) }
    };
    let back = |k: u64| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k });
    let mut keys: Vec<u64> = v.iter().map(|x| key(*x)).collect();
    keys.sort_unstable();
    keys.into_iter().map(back).collect()
}

/// Distinct values of two sorted samples together.
fn distinct_sorted(a: &[f64], b: &[f64]) -> usize {
    let (mut i, mut j, mut n, mut last) = (0, 0, 0, None::<f64>);
    while i < a.len() || j < b.len() {
        let v = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if last != Some(v) {
            n += 1;
            last = Some(v);
        }
    }
    n
}

/// Counts of each category in each sample, over the categories of both (in order of first
/// appearance: the reference's, then the current table's new ones).
fn category_counts(r: &[String], c: &[String]) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let mut index = std::collections::HashMap::<&str, usize>::new();
    let mut keys = Vec::new();
    for v in r.iter().chain(c) {
        if !index.contains_key(v.as_str()) {
            index.insert(v.as_str(), keys.len());
            keys.push(v.clone());
        }
    }
    let (mut rc, mut cc) = (vec![0.0; keys.len()], vec![0.0; keys.len()]);
    for v in r {
        rc[index[v.as_str()]] += 1.0;
    }
    for v in c {
        cc[index[v.as_str()]] += 1.0;
    }
    (keys, rc, cc)
}

fn shares(counts: &[f64], n: usize) -> Vec<f64> {
    counts.iter().map(|x| x / n.max(1) as f64).collect()
}

/// Binned shares as Evidently bins for PSI and Jensen-Shannon: Sturges bins over both
/// tables for a numeric column of more than 20 distinct reference values, else categories.
fn binned<'a>(
    r: &Values,
    c: &Values,
    rs: Option<&[f64]>,
    cs: Option<&[f64]>,
    counts: &dyn Fn() -> Counts<'a>,
) -> Histogram {
    if let (Some(rs), Some(cs)) = (rs, cs)
        && distinct_sorted(rs, &[]) > 20
    {
        let lo = rs[0].min(cs.first().copied().unwrap_or(rs[0]));
        let hi = rs[rs.len() - 1].max(cs.last().copied().unwrap_or(rs[0]));
        let edges = stats::sturges_edges(lo, hi, rs.len() + cs.len());
        let reference = shares(&stats::histogram(rs, &edges), rs.len());
        let current = shares(&stats::histogram(cs, &edges), cs.len());
        return Histogram { edges: Some(edges), categories: None, reference, current };
    }
    let (keys, rc, cc) = counts();
    Histogram {
        edges: None,
        categories: Some(keys.clone()),
        reference: shares(rc, r.len()),
        current: shares(cc, c.len()),
    }
}

/// The categories of both tables with each one's counts (see [`category_counts`]).
type Counts<'a> = &'a (Vec<String>, Vec<f64>, Vec<f64>);

fn column(r: &Column, c: &Column, opts: &Options, small_reference: bool) -> Result<ColumnDrift, String> {
    let name = &r.name;
    if r.values.is_empty() || c.values.is_empty() {
        return Err(format!(
            "column `{name}`: the {} table has no values in it",
            if r.values.is_empty() { "reference" } else { "current" }
        ));
    }
    let numeric = matches!((&r.values, &c.values), (Values::Numeric(_), Values::Numeric(_)));
    let (rs, cs) = match (&r.values, &c.values) {
        (Values::Numeric(a), Values::Numeric(b)) => (Some(sorted(a)), Some(sorted(b))),
        _ => (None, None),
    };
    // Counted once, when a test or the histogram first needs them.
    let cats = std::cell::OnceCell::new();
    let counts = || cats.get_or_init(|| category_counts(&r.values.texts(), &c.values.texts()));
    let distinct = match (&rs, &cs) {
        (Some(a), Some(b)) => distinct_sorted(a, b),
        _ => counts().0.len(),
    };
    let method = match opts.method {
        Method::Auto if small_reference => {
            if numeric && distinct > 5 {
                Method::Ks
            } else if distinct > 2 {
                Method::Chi2
            } else {
                Method::Z
            }
        }
        Method::Auto => {
            if numeric && distinct > 5 {
                Method::Wasserstein
            } else {
                Method::JensenShannon
            }
        }
        m => m,
    };
    let threshold = opts.threshold.unwrap_or(method.default_threshold());
    let needs_numbers =
        |m: &str| format!("column `{name}` is not numeric in both tables: `{m}` compares numbers");
    // The histogram the report draws, and the one PSI and Jensen-Shannon are computed on.
    let mut histogram = binned(&r.values, &c.values, rs.as_deref(), cs.as_deref(), &counts);
    let (statistic, p_value) = match method {
        Method::Ks => {
            let (Some(a), Some(b)) = (&rs, &cs) else { return Err(needs_numbers("ks")) };
            let (d, p) = ks::two_sample(a, b);
            (d, Some(p))
        }
        Method::Wasserstein => {
            let (Some(a), Some(b)) = (&rs, &cs) else { return Err(needs_numbers("wasserstein")) };
            let n = a.len() as f64;
            let mean = a.iter().sum::<f64>() / n;
            let std = (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            (stats::wasserstein(a, b) / std.max(0.001), None)
        }
        Method::Psi => {
            let (mut rp, mut cp) = (histogram.reference.clone(), histogram.current.clone());
            stats::fill_zeros(&mut rp);
            stats::fill_zeros(&mut cp);
            (stats::psi(&rp, &cp), None)
        }
        Method::JensenShannon => (stats::jensen_shannon(&histogram.reference, &histogram.current), None),
        Method::Chi2 => {
            let (keys, rc, cc) = counts();
            let (stat, p, _) = stats::chi2_contingency(&[rc.clone(), cc.clone()]);
            if histogram.categories.is_none() {
                // Drawn as the categories the test compared.
                histogram = Histogram {
                    edges: None,
                    reference: shares(rc, r.values.len()),
                    current: shares(cc, c.values.len()),
                    categories: Some(keys.clone()),
                };
            }
            (stat, Some(p))
        }
        Method::Z => {
            let (keys, rc, cc) = counts();
            if keys.len() > 2 {
                return Err(format!(
                    "column `{name}` has {} distinct values: the Z-test compares columns of two",
                    keys.len()
                ));
            }
            // The share of the first value in each table (which value does not matter: the
            // test is two-sided).
            let (z, p) = stats::z_proportions(rc[0], r.values.len() as f64, cc[0], c.values.len() as f64);
            (z, Some(p))
        }
        Method::Auto => return Err(format!("column `{name}`: no test was chosen")),
    };
    let drifted = match p_value {
        Some(p) => p < threshold,
        None => statistic >= threshold,
    };
    let band = (method == Method::Psi).then_some(if statistic < 0.1 {
        "stable"
    } else if statistic < 0.25 {
        "moderate"
    } else {
        "significant"
    });
    Ok(ColumnDrift {
        column: name.clone(),
        kind: if numeric { "numeric" } else { "categorical" },
        method: method.name(),
        statistic,
        p_value,
        threshold,
        drifted,
        band,
        reference_values: r.values.len(),
        current_values: c.values.len(),
        reference_missing: r.missing,
        current_missing: c.missing,
        histogram,
    })
}

#[cfg(test)]
mod tests;
