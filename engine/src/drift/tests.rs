use proptest::prelude::*;

use super::table::{Column, Table, Values};
use super::{Method, Options, compare, ks, stats};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// P(D ≥ d) by walking every path: the definition the fast computations must agree with.
fn brute_force(n1: usize, n2: usize, far: i64) -> f64 {
    fn walk(i: usize, j: usize, n1: usize, n2: usize, far: i64, touched: bool) -> (u64, u64) {
        let d = (i as i64 * n2 as i64 - j as i64 * n1 as i64).abs();
        let touched = touched || d >= far;
        if i == n1 && j == n2 {
            return (u64::from(touched), 1);
        }
        let mut out = (0, 0);
        if i < n1 {
            let (a, b) = walk(i + 1, j, n1, n2, far, touched);
            out = (out.0 + a, out.1 + b);
        }
        if j < n2 {
            let (a, b) = walk(i, j + 1, n1, n2, far, touched);
            out = (out.0 + a, out.1 + b);
        }
        out
    }
    let (hit, all) = walk(0, 0, n1, n2, far, false);
    hit as f64 / all as f64
}

#[test]
fn ks_of_separate_samples_is_one_with_the_exact_p_value() {
    // Every path but the two along the edges stays nearer: P = 2 / C(6, 3).
    let (d, p) = ks::two_sample(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
    assert_eq!(d, 1.0);
    assert!(close(p, 0.1, 1e-15), "{p}");
    let (d, p) = ks::two_sample(&[1.0, 2.0], &[3.0, 4.0, 5.0]);
    assert_eq!(d, 1.0);
    assert!(close(p, 0.2, 1e-15), "{p}");
    assert_eq!(ks::two_sample(&[1.0, 2.0], &[1.0, 2.0]), (0.0, 1.0));
}

proptest! {
    #[test]
    fn exact_ks_agrees_with_counting_every_path(
        a in proptest::collection::vec(0u8..12, 1..8),
        b in proptest::collection::vec(0u8..12, 1..8),
    ) {
        let mut a: Vec<f64> = a.into_iter().map(f64::from).collect();
        let mut b: Vec<f64> = b.into_iter().map(f64::from).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (d, p) = ks::two_sample(&a, &b);
        let far = (d * a.len() as f64 * b.len() as f64).round() as i64;
        let want = if far == 0 { 1.0 } else { brute_force(a.len(), b.len(), far) };
        prop_assert!(close(p, want, 1e-12), "n1 {} n2 {} d {d}: {p} against {want}", a.len(), b.len());
    }
}

#[test]
fn the_kolmogorov_tail_is_continuous_where_its_methods_meet() {
    // Pelz-Good below n·x² = 2.2, the exact one-sided sum above it.
    for n in [200u64, 5_000, 400_000] {
        let x = (2.2 / n as f64).sqrt();
        let (below, above) = (ks::kolmogorov_sf(n, x * (1.0 - 1e-9)), ks::kolmogorov_sf(n, x * (1.0 + 1e-9)));
        assert!(close(below, above, 1e-6), "n {n}: {below} against {above}");
        // The limit distribution: P(√n·D ≥ 1.36) ≈ 0.049.
        let p = ks::kolmogorov_sf(n, 1.36 / (n as f64).sqrt());
        assert!((0.04..0.06).contains(&p), "n {n}: {p}");
    }
    assert_eq!(ks::kolmogorov_sf(10, 1.0), 0.0);
    assert_eq!(ks::kolmogorov_sf(10, 0.0), 1.0);
}

#[test]
fn chi2_wasserstein_jensen_shannon_psi_and_z_on_values_worked_by_hand() {
    // Yates: each |o − e| of 5 becomes 4.5; 4·4.5²/15 = 5.4.
    let (stat, p, dof) = stats::chi2_contingency(&[vec![10.0, 20.0], vec![20.0, 10.0]]);
    assert_eq!(dof, 1);
    assert!(close(stat, 5.4, 1e-12), "{stat}");
    assert!(close(p, stats::chi2_sf(5.4, 1.0), 0.0) && (0.02..0.0202).contains(&p), "{p}");
    // Two degrees of freedom: the tail of chi-square(2) is exp(−x/2).
    assert!(close(stats::chi2_sf(3.0, 2.0), (-1.5f64).exp(), 1e-14));
    assert_eq!(stats::wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), 5.0);
    assert_eq!(stats::wasserstein(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    assert_eq!(stats::jensen_shannon(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
    assert!(close(stats::jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]), std::f64::consts::LN_2.sqrt(), 1e-15));
    assert!(close(stats::psi(&[0.5, 0.5], &[0.25, 0.75]), 0.25 * 2f64.ln() + 0.25 * (1.5f64).ln(), 1e-15));
    let mut shares = vec![0.0, 0.5, 0.5];
    stats::fill_zeros(&mut shares);
    assert_eq!(shares, vec![0.0001, 0.5, 0.5]);
    // 50 of 100 against 50 of 100: no difference.
    assert_eq!(stats::z_proportions(50.0, 100.0, 50.0, 100.0).1, 1.0);
    let (z, p) = stats::z_proportions(30.0, 100.0, 50.0, 100.0);
    assert!(z < 0.0 && p < 0.01, "{z} {p}");
    // Sturges: 8 values make ⌈log2 8 + 1⌉ = 4 bins; the last edge closes its bin.
    let edges = stats::sturges_edges(0.0, 4.0, 8);
    assert_eq!(edges, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(stats::histogram(&[0.0, 0.5, 1.0, 3.9, 4.0, 9.0], &edges), vec![2.0, 1.0, 0.0, 2.0]);
}

fn numeric(name: &str, v: Vec<f64>) -> Column {
    Column { name: name.into(), values: Values::Numeric(v), missing: 0 }
}

fn text(name: &str, v: &[&str]) -> Column {
    Column { name: name.into(), values: Values::Text(v.iter().map(|s| s.to_string()).collect()), missing: 0 }
}

#[test]
fn auto_picks_evidentlys_test_per_column_and_the_share_decides() {
    let rows = 200;
    let reference = Table {
        rows,
        columns: vec![
            numeric("age", (0..rows).map(|i| (i % 50) as f64).collect()),
            text("plan", &(0..rows).map(|i| ["a", "b", "c"][i % 3]).collect::<Vec<_>>()),
            numeric("churned", (0..rows).map(|i| (i % 2) as f64).collect()),
            numeric("only_here", vec![1.0; rows]),
        ],
    };
    let current = Table {
        rows,
        columns: vec![
            // Shifted by 20: drifts.
            numeric("age", (0..rows).map(|i| (i % 50) as f64 + 20.0).collect()),
            text("plan", &(0..rows).map(|i| ["a", "b", "c"][i % 3]).collect::<Vec<_>>()),
            numeric("churned", (0..rows).map(|i| (i % 2) as f64).collect()),
        ],
    };
    let report = compare(&reference, &current, &Options::default()).unwrap();
    let methods: Vec<_> = report.columns.iter().map(|c| (c.column.as_str(), c.method, c.drifted)).collect();
    assert_eq!(methods, vec![("age", "ks", true), ("plan", "chi2", false), ("churned", "z", false)]);
    assert_eq!(report.skipped, vec!["only_here".to_string()]);
    assert_eq!(report.drifted_columns, vec!["age".to_string()]);
    assert!(!report.drifted, "1 of 3 is under the share of 0.5");
    let strict = compare(&reference, &current, &Options { drift_share: 0.3, ..Options::default() }).unwrap();
    assert!(strict.drifted);
    assert_eq!(strict.outputs()["drifted"], serde_json::json!(true));

    // Asked for a test a column cannot take: a clear error.
    let err = compare(
        &reference,
        &current,
        &Options { columns: vec!["plan".into()], method: Method::Ks, ..Options::default() },
    )
    .unwrap_err();
    assert!(err.contains("`plan` is not numeric"), "{err}");
    let err = compare(&reference, &current, &Options { columns: vec!["nope".into()], ..Options::default() })
        .unwrap_err();
    assert!(err.contains("no column `nope`"), "{err}");
    let err = compare(&reference, &current, &Options { drift_share: 0.0, ..Options::default() }).unwrap_err();
    assert!(err.contains("drift_share"), "{err}");
}

#[test]
fn a_large_reference_uses_distances() {
    let rows = 5000;
    let reference =
        Table { rows, columns: vec![numeric("x", (0..rows).map(|i| (i % 100) as f64).collect())] };
    let current =
        Table { rows, columns: vec![numeric("x", (0..rows).map(|i| (i % 100) as f64 * 1.5).collect())] };
    let report = compare(&reference, &current, &Options::default()).unwrap();
    assert_eq!(report.columns[0].method, "wasserstein");
    assert!(report.drifted);
    let psi = compare(&reference, &current, &Options { method: Method::Psi, ..Options::default() }).unwrap();
    assert_eq!(psi.columns[0].band, Some("significant"));
    let same =
        compare(&reference, &reference, &Options { method: Method::Psi, ..Options::default() }).unwrap();
    assert_eq!((same.columns[0].statistic, same.drifted), (0.0, false));
    let html = super::html::render(&psi, "x <drift>");
    assert!(html.contains("Drift detected") && html.contains("x &lt;drift&gt;") && html.contains("<svg"));
}

#[test]
fn csv_columns_are_numbers_until_a_value_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "a,b,c\n1,x,\n2.5,3,NA\n-1e3,4,7\n").unwrap();
    let t = super::read_csv(&path).unwrap();
    assert_eq!(t.rows, 3);
    assert_eq!(t.columns[0].values, Values::Numeric(vec![1.0, 2.5, -1000.0]));
    assert_eq!(t.columns[1].values, Values::Text(vec!["x".into(), "3".into(), "4".into()]));
    assert_eq!((t.columns[2].values.clone(), t.columns[2].missing), (Values::Numeric(vec![7.0]), 2));
    std::fs::write(&path, "a,a\n1,2\n").unwrap();
    assert!(super::read_csv(&path).unwrap_err().contains("appears twice"));
    std::fs::write(&path, "a,b\n1\n").unwrap();
    assert!(super::read_csv(&path).unwrap_err().contains("row 2 has 1 fields"));
}
