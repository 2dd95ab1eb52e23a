//! The two-sample Kolmogorov-Smirnov test as SciPy's `ks_2samp` computes it (two-sided,
//! `method="auto"`): the exact distribution of the statistic when neither sample has more than
//! 10,000 values, else the one-sample Kolmogorov distribution at n = round(n1·n2/(n1+n2)).
//!
//! Exact: the statistic is a lattice path's farthest distance from the diagonal. Equal sizes
//! use the reflection principle's alternating series; unequal sizes walk the band of points
//! inside the distance, carrying the probability of each path (all paths equally likely) and
//! adding up what steps out. Asymptotic: Birnbaum and Tingey's exact one-sided sum where
//! n·x² ≥ 2.2, Pelz and Good's expansion below it (Simard and L'Ecuyer's choices for n > 140).

use statrs::function::gamma::ln_gamma;

/// Largest sample for which the p-value is exact (SciPy's `MAX_AUTO_N`).
pub const EXACT_MAX: usize = 10_000;

/// `ks_2samp(a, b)`: the statistic and its two-sided p-value. Both samples sorted, not empty,
/// without NaN.
pub fn two_sample(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len() as u64, b.len() as u64);
    let far = farthest(a, b);
    if far == 0 {
        return (0.0, 1.0);
    }
    let d = far as f64 / (n1 as f64 * n2 as f64);
    if a.len().max(b.len()) <= EXACT_MAX {
        let g = gcd(n1, n2);
        // In units of lcm(n1, n2): every point's distance is a multiple of g.
        let h = far / g as u128;
        let p = if n1 == n2 { equal_outside(n1, h as u64) } else { band_outside(n1, n2, g, h as u64) };
        return (d, p.clamp(0.0, 1.0));
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round() as u64;
    (d, kolmogorov_sf(en, d).clamp(0.0, 1.0))
}

/// max |i·n2 − j·n1| over the two empirical CDFs' steps (the statistic times n1·n2, exact).
fn farthest(a: &[f64], b: &[f64]) -> u128 {
    let (n1, n2) = (a.len() as i128, b.len() as i128);
    let (mut i, mut j, mut best) = (0usize, 0usize, 0i128);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        best = best.max((i as i128 * n2 - j as i128 * n1).abs());
    }
    best as u128
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// P(D ≥ h/n) for two samples of n: 2·Σ_{k≥1} (−1)^(k−1) C(2n, n−kh)/C(2n, n).
fn equal_outside(n: u64, h: u64) -> f64 {
    if h == 0 {
        return 1.0;
    }
    // C(2n, n − kh)/C(2n, n) = Π_{j < kh} (n − j)/(n + j + 1), extended h factors at a time.
    let mut terms = Vec::new();
    let (mut ratio, mut j) = (1.0f64, 0u64);
    let mut k = 1;
    while k * h <= n {
        while j < k * h {
            ratio *= (n - j) as f64 / (n + j + 1) as f64;
            j += 1;
        }
        terms.push(ratio);
        if ratio < 1e-300 {
            break;
        }
        k += 1;
    }
    // Smallest terms first.
    let mut sum = 0.0;
    for (k, t) in terms.iter().enumerate().rev() {
        sum += if k % 2 == 0 { *t } else { -*t };
    }
    2.0 * sum
}

/// P(D ≥ h/lcm) for samples of n1 ≠ n2 with gcd g: the probability that a uniformly random
/// monotone path from (0, 0) to (n1, n2) touches a point whose distance |i·n2 − j·n1|/g is h
/// or more.
fn band_outside(n1: u64, n2: u64, g: u64, h: u64) -> f64 {
    let (a, b, h) = ((n1 / g) as i64, (n2 / g) as i64, h as i64);
    let inside = |i: i64, j: i64| (i * b - j * a).abs() < h;
    let n2u = n2 as usize;
    // The points of row i inside: (i·b − h)/a < j < (i·b + h)/a.
    let band = |i: i64| -> (usize, usize) {
        let lo = (i * b - h).div_euclid(a) + 1;
        let hi = (i * b + h + a - 1).div_euclid(a) - 1;
        (lo.max(0) as usize, hi.min(n2 as i64).max(-1) as usize)
    };
    let mut cur = vec![0.0f64; n2u + 1];
    let mut next = vec![0.0f64; n2u + 1];
    cur[0] = 1.0;
    let mut out = 0.0f64;
    for i in 0..=n1 as i64 {
        let (lo, hi) = band(i);
        let mut carry = 0.0;
        if lo <= hi && hi <= n2u {
            for j in lo..=hi {
                let m = cur[j] + carry;
                cur[j] = 0.0;
                carry = 0.0;
                if m == 0.0 {
                    continue;
                }
                let left = (n1 as i64 - i + n2 as i64 - j as i64) as f64;
                if left == 0.0 {
                    break;
                }
                let right = m * (n1 as i64 - i) as f64 / left;
                let up = m * (n2u - j) as f64 / left;
                if right > 0.0 {
                    if inside(i + 1, j as i64) {
                        next[j] += right;
                    } else {
                        out += right;
                    }
                }
                if up > 0.0 {
                    if j < hi {
                        carry = up;
                    } else {
                        out += up;
                    }
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    out
}

/// SciPy's `kstwo.sf(x, n)`: P(D_n ≥ x) for one sample of n against its own distribution.
pub fn kolmogorov_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        // Ruben and Gambino: P(D_n ≤ x) = n!/n^n (2t − 1)^n.
        let cdf = (ln_gamma(nf + 1.0) - nf * nf.ln() + nf * (2.0 * t - 1.0).ln()).exp();
        return 1.0 - cdf;
    }
    if t >= nf - 1.0 {
        return 2.0 * (1.0 - x).powf(nf);
    }
    if x >= 0.5 {
        return 2.0 * smirnov(n, x);
    }
    let nxx = t * x;
    if nxx >= 370.0 {
        return 0.0;
    }
    if nxx >= 2.2 {
        return 2.0 * smirnov(n, x);
    }
    1.0 - pelz_good_cdf(nf, x)
}

/// P(D_n⁺ ≥ x), Birnbaum and Tingey: x·Σ_{j ≤ n(1−x)} C(n, j)(1 − x − j/n)^(n−j)(x + j/n)^(j−1).
fn smirnov(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let ln_n1 = ln_gamma(nf + 1.0);
    let last = (nf * (1.0 - x)).floor() as u64;
    let mut sum = 0.0;
    for j in 0..=last.min(n) {
        let jf = j as f64;
        let rest = 1.0 - x - jf / nf;
        if rest <= 0.0 && j < n {
            continue;
        }
        let ln_c = ln_n1 - ln_gamma(jf + 1.0) - ln_gamma(nf - jf + 1.0);
        let ln_rest = if j == n { 0.0 } else { (nf - jf) * rest.ln() };
        let term = (ln_c + ln_rest + (jf - 1.0) * (x + jf / nf).ln()).exp();
        sum += term;
    }
    (x * sum).clamp(0.0, 1.0)
}

/// Pelz and Good's expansion of P(D_n ≤ x): K0 + K1/√n + K2/n + K3/n^1.5 in z = √n·x.
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    let root_2pi = (2.0 * PI).sqrt();
    let z = n.sqrt() * x;
    let (z2, z4, z6) = (z * z, z.powi(4), z.powi(6));
    let (p2, p4, p6) = (PI * PI, PI.powi(4), PI.powi(6));
    let q_ln = -p2 / (8.0 * z2);
    if q_ln < -708.0 {
        return 0.0;
    }
    let terms = (16.0 * z / PI).ceil().max(1.0) as u64;
    // Sums over odd m of polynomials in m times q^(m²).
    let mut k = [0.0f64; 4];
    for i in 1..=terms {
        let m = (2 * i - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let w = (q_ln * m2).exp();
        if w == 0.0 {
            break;
        }
        k[0] += w;
        k[1] += w * (p2 * m2 / 4.0 - z2);
        k[2] += w
            * (6.0 * z6
                + 2.0 * z4
                + (2.0 * z4 - 5.0 * z2) * p2 * m2 / 4.0
                + p4 * (1.0 - 2.0 * z2) * m4 / 16.0);
        k[3] += w
            * (-30.0 * z6 - 90.0 * z.powi(8)
                + p2 * (135.0 * z4 - 96.0 * z6) * m2 / 4.0
                + p4 * (-60.0 * z2 + 212.0 * z4) * m4 / 16.0
                + p6 * (5.0 - 30.0 * z2) * m6 / 64.0);
    }
    k[0] *= root_2pi / z;
    k[1] *= root_2pi / (6.0 * z4);
    k[2] *= root_2pi / (72.0 * z.powi(7));
    k[3] *= root_2pi / (6480.0 * z.powi(10));
    // Sums over every integer k of q'^(k²), q' = exp(−π²/(2z²)).
    let (mut e2, mut e3) = (0.0, 0.0);
    for i in 1..=terms {
        let kf = i as f64;
        let w = (-p2 * kf * kf / (2.0 * z2)).exp();
        if w == 0.0 {
            break;
        }
        e2 += kf * kf * w;
        e3 += (3.0 * p2 * kf * kf * z2 - p4 * kf.powi(4)) * w;
    }
    k[2] -= root_2pi * p2 * e2 / (36.0 * z.powi(3));
    k[3] += root_2pi * e3 / (216.0 * z6);
    k[0] + k[1] / n.sqrt() + k[2] / n + k[3] / n.powf(1.5)
}
