//! The statistics of drift, each as SciPy (and, for the binned ones, Evidently) computes it:
//! `chi2_contingency`, `wasserstein_distance`, `jensenshannon`, the population stability
//! index and a two-proportion Z-test. Samples are slices without NaN; numeric ones sorted.

use statrs::function::erf::erfc;
use statrs::function::gamma::gamma_ur;

/// `scipy.stats.chi2_contingency(table)` (with Yates' correction when the table has one
/// degree of freedom, as SciPy does by default): the statistic, its p-value and the degrees
/// of freedom. Rows are samples, columns categories; no row or column may sum to zero.
pub fn chi2_contingency(table: &[Vec<f64>]) -> (f64, f64, usize) {
    let rows = table.len();
    let cols = table.first().map_or(0, Vec::len);
    let row_sums: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
    let col_sums: Vec<f64> = (0..cols).map(|c| table.iter().map(|r| r[c]).sum()).collect();
    let total: f64 = row_sums.iter().sum();
    let dof = rows.saturating_sub(1) * cols.saturating_sub(1);
    if dof == 0 || total == 0.0 {
        return (0.0, 1.0, dof);
    }
    let mut stat = 0.0;
    for (r, row) in table.iter().enumerate() {
        for (c, &observed) in row.iter().enumerate() {
            let expected = row_sums[r] * col_sums[c] / total;
            let mut o = observed;
            if dof == 1 {
                let diff = expected - o;
                o += diff.signum() * diff.abs().min(0.5);
            }
            stat += (o - expected).powi(2) / expected;
        }
    }
    (stat, chi2_sf(stat, dof as f64), dof)
}

/// P(X ≥ x) for a chi-square variable with `dof` degrees of freedom.
pub fn chi2_sf(x: f64, dof: f64) -> f64 {
    if x <= 0.0 { 1.0 } else { gamma_ur(dof / 2.0, x / 2.0) }
}

/// `scipy.stats.wasserstein_distance(u, v)`: the area between the two empirical CDFs.
/// Both sorted.
pub fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut area = 0.0;
    let mut at = match (u.first(), v.first()) {
        (Some(&a), Some(&b)) => a.min(b),
        _ => return 0.0,
    };
    while i < u.len() || j < v.len() {
        // Step past every value equal to `at`, then add the gap to the next value.
        while i < u.len() && u[i] <= at {
            i += 1;
        }
        while j < v.len() && v[j] <= at {
            j += 1;
        }
        let next = match (u.get(i), v.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        area += (i as f64 / nu - j as f64 / nv).abs() * (next - at);
        at = next;
    }
    area
}

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural logarithm): the square root of the
/// Jensen-Shannon divergence of the two distributions, each normalized to sum to one.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let rel = |x: f64, y: f64| if x > 0.0 && y > 0.0 { x * (x / y).ln() } else { 0.0 };
    let mut js = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel(a, m) + rel(b, m);
    }
    (js / 2.0).max(0.0).sqrt()
}

/// The population stability index of two binned distributions (shares that sum to one):
/// Σ (ref − cur)·ln(ref/cur). Zero shares must have been filled first ([`fill_zeros`]).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference.iter().zip(current).map(|(&r, &c)| (r - c) * (r / c).ln()).sum()
}

/// Evidently's filling of empty bins before PSI: each zero share becomes 0.0001, or a
/// millionth of the smallest non-zero share when that is 0.0001 or less.
pub fn fill_zeros(shares: &mut [f64]) {
    let least = shares.iter().copied().filter(|s| *s != 0.0).fold(f64::INFINITY, f64::min);
    let fill = if least <= 0.0001 { least / 1e6 } else { 0.0001 };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = fill;
    }
}

/// A two-proportion Z-test (two-sided): `ones` of `n` in each sample. The statistic and its
/// p-value; two samples of one same value do not differ (p = 1).
pub fn z_proportions(ones_ref: f64, n_ref: f64, ones_cur: f64, n_cur: f64) -> (f64, f64) {
    let (p1, p2) = (ones_ref / n_ref, ones_cur / n_cur);
    let pooled = (ones_ref + ones_cur) / (n_ref + n_cur);
    let var = pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur);
    if var <= 0.0 {
        return (0.0, 1.0);
    }
    let z = (p1 - p2) / var.sqrt();
    (z, erfc(z.abs() / std::f64::consts::SQRT_2))
}

/// NumPy's `histogram_bin_edges(data, bins="sturges")` of `n` values from `lo` to `hi`: bins
/// of width range/(log2 n + 1), as many as cover the range (one when every value is the same,
/// over the value ± 0.5).
pub fn sturges_edges(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let range = hi - lo;
    let width = range / ((n.max(1) as f64).log2() + 1.0);
    let bins = if width > 0.0 { ((range / width).ceil() as usize).max(1) } else { 1 };
    let (lo, hi) = if lo == hi { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
    let step = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + lo).collect();
    edges[bins] = hi;
    edges
}

/// NumPy's `histogram(sample, edges)[0]`: counts per bin, the last bin closed on the right,
/// values outside the edges left out. `sample` sorted.
pub fn histogram(sample: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0.0; bins];
    if bins == 0 {
        return counts;
    }
    let mut b = 0;
    for &v in sample {
        if v < edges[0] || v > edges[bins] {
            continue;
        }
        while b + 1 < bins && v >= edges[b + 1] {
            b += 1;
        }
        counts[b] += 1.0;
    }
    counts
}
