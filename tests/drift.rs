//! Drift's statistics against SciPy's on generated tables (tests/drift/scipy_figures.py), and
//! the `drift:` step in a pipeline.

mod common;

use common::*;
use serde_json::Value;

/// Runs `sluice drift` on one case's tables and returns its report.
fn report(sb: &Sandbox, dir: &std::path::Path, case: &str, method: &str, columns: &[&str]) -> Value {
    let r = dir.join(case).join("reference.csv");
    let c = dir.join(case).join("current.csv");
    let out = sb.sluice(&[
        "--output",
        "json",
        "drift",
        r.to_str().unwrap(),
        c.to_str().unwrap(),
        "--method",
        method,
        "--columns",
        &columns.join(","),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn within(what: &str, ours: f64, scipy: f64, tol: f64) {
    assert!(
        (ours - scipy).abs() <= tol,
        "{what}: Sluice {ours} against SciPy {scipy} (off by {:e}, allowed {tol:e})",
        (ours - scipy).abs()
    );
}

#[test]
fn drift_statistics_match_scipy_on_generated_tables() {
    let Some(python) = python_with("scipy", "drift_statistics_match_scipy_on_generated_tables") else {
        return;
    };
    let sb = Sandbox::new();
    let dir = sb.path("tables");
    let out = std::process::Command::new(&python)
        .arg(repo().join("tests/drift/scipy_figures.py"))
        .arg(&dir)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (case, columns) in expected.as_object().unwrap() {
        let columns = columns.as_object().unwrap();
        let numeric: Vec<&str> =
            columns.iter().filter(|(_, e)| e.get("ks").is_some()).map(|(c, _)| c.as_str()).collect();
        let categorical: Vec<&str> =
            columns.iter().filter(|(_, e)| e.get("chi2").is_some()).map(|(c, _)| c.as_str()).collect();
        let all: Vec<&str> = columns.keys().map(String::as_str).collect();
        assert!(!numeric.is_empty() && !categorical.is_empty());
        for (method, names) in [
            ("ks", &numeric),
            ("wasserstein", &numeric),
            ("chi2", &categorical),
            ("jensen_shannon", &all),
            ("psi", &all),
        ] {
            let report = report(&sb, &dir, case, method, names);
            for col in report["columns"].as_array().unwrap() {
                let name = col["column"].as_str().unwrap();
                let e = &columns[name];
                let what = format!("{case} {method} {name}");
                let stat = col["statistic"].as_f64().unwrap();
                match method {
                    "ks" | "chi2" => {
                        within(&what, stat, e[method][0].as_f64().unwrap(), 1e-9);
                        within(
                            &format!("{what} p-value"),
                            col["p_value"].as_f64().unwrap(),
                            e[method][1].as_f64().unwrap(),
                            1e-6,
                        );
                    }
                    "wasserstein" => {
                        let want = e["wasserstein"].as_f64().unwrap() / e["std"].as_f64().unwrap().max(0.001);
                        within(&what, stat, want, 1e-9);
                    }
                    _ => {
                        within(&what, stat, e[method].as_f64().unwrap(), 1e-9);
                        // Numeric columns are binned on NumPy's Sturges edges.
                        if let Some(edges) = e.get("edges") {
                            let ours = col["histogram"]["edges"].as_array().unwrap();
                            let theirs = edges.as_array().unwrap();
                            assert_eq!(ours.len(), theirs.len(), "{what}: bins");
                            for (a, b) in ours.iter().zip(theirs) {
                                within(
                                    &format!("{what} edge"),
                                    a.as_f64().unwrap(),
                                    b.as_f64().unwrap(),
                                    1e-12,
                                );
                            }
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    // 3 cases: 4 numeric columns x 5 methods + 2 categorical x 3.
    assert_eq!(checked, 3 * (4 * 4 + 2 * 3));
}
