//! Drift's statistics against SciPy's on generated tables (tests/drift/scipy_figures.py), and
//! the `drift:` step in a pipeline.

mod common;

use common::*;
use serde_json::Value;

/// Runs `sluice drift` on one case's tables and returns its report.
fn report(sb: &Sandbox, dir: &std::path::Path, case: &str, method: &str, columns: &[&str]) -> Value {
    let r = dir.join(case).join("reference.csv");
    let c = dir.join(case).join("current.csv");
    let joined = columns.join(",");
    let mut args =
        vec!["--output", "json", "drift", r.to_str().unwrap(), c.to_str().unwrap(), "--method", method];
    if !columns.is_empty() {
        args.extend(["--columns", joined.as_str()]);
    }
    let out = sb.sluice(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// The generated tables and SciPy's figures for them (tests/drift/scipy_figures.py).
fn tables(python: &str, sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path("tables");
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/drift/scipy_figures.py"))
        .arg(&dir)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
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
    let dir = tables(&python, &sb);
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

/// Evidently's verdicts on the same tables (where Evidently installs: tests/python.sh tries
/// and sets SLUICE_REQUIRE_EVIDENTLY=1 when it could): every column's test and verdict, the
/// share and the table's verdict, with `method: auto`.
#[test]
fn drift_verdicts_agree_with_evidently() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = |m: &str| {
        std::process::Command::new(&python)
            .args(["-c", &format!("import {m}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("evidently.legacy.report") || !has("scipy") {
        let why = format!(
            "drift_verdicts_agree_with_evidently: `{python}` cannot import evidently (tests/python.sh tries to install it)"
        );
        if std::env::var_os("SLUICE_REQUIRE_EVIDENTLY").is_some() {
            panic!("{why}");
        }
        eprintln!("\n!!! SKIPPED: {why} !!!\n");
        return;
    }
    let sb = Sandbox::new();
    let dir = tables(&python, &sb);
    let out = std::process::Command::new(&python)
        .arg(repo().join("tests/drift/evidently_verdicts.py"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = [
        ("ks", "K-S p_value"),
        ("chi2", "chi-square p_value"),
        ("z", "Z-test p_value"),
        ("wasserstein", "Wasserstein distance (normed)"),
        ("jensen_shannon", "Jensen-Shannon distance"),
    ];
    let mut drifted = 0;
    for (case, e) in theirs.as_object().unwrap() {
        let ours = report(&sb, &dir, case, "auto", &[]);
        for col in ours["columns"].as_array().unwrap() {
            let name = col["column"].as_str().unwrap();
            let t = &e["columns"][name];
            let method = col["method"].as_str().unwrap();
            let want = names.iter().find(|(m, _)| *m == method).map(|(_, n)| *n).unwrap();
            assert_eq!(t["test"], want, "{case} {name}: Sluice chose {method}, Evidently {}", t["test"]);
            assert_eq!(col["drifted"], t["drifted"], "{case} {name}: the verdicts differ ({col})");
            drifted += usize::from(col["drifted"] == true);
        }
        assert_eq!(ours["drifted"], e["drifted"], "{case}: the table's verdicts differ");
        within(
            &format!("{case} share"),
            ours["share"].as_f64().unwrap(),
            e["share"].as_f64().unwrap(),
            1e-12,
        );
    }
    assert!(drifted >= 4, "the tables should hold drifted columns of both regimes ({drifted})");
}

/// The drift example: a shifted table drifts (two of three columns), its report is kept as
/// artifacts, and `retrain` runs; unshifted, nothing drifts and `retrain` is skipped. A
/// column the tables lack fails the step with its name.
#[test]
fn a_drift_step_reports_and_decides_what_runs_next() {
    let sb = Sandbox::new();
    let spec = repo().join("dags/example-drift.yaml");
    let out = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let run = sb.show("1");
    let check = step(&run, "check");
    assert_eq!(check["kind"], "drift");
    assert_eq!(check["outputs"]["drifted"], true, "{check:#}");
    assert_eq!(check["outputs"]["drifted_columns"], serde_json::json!(["tenure", "spend"]));
    assert_eq!(step(&run, "retrain")["state"], "succeeded");
    let logs = text(&sb.sluice(&["logs", "1", "retrain"]).stdout);
    assert!(logs.contains("retraining: tenure, spend drifted"), "{logs}");

    // Both reports, kept by content.
    let out = sb.sluice(&["artifacts", "--run", "1", "--output", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == "check")
        .map(|a| a["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{listed:#}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.data().join("work/1/check.drift.json")).unwrap())
            .unwrap();
    assert_eq!(report["format"], "sluice-drift/1");
    let methods: Vec<&str> =
        report["columns"].as_array().unwrap().iter().map(|c| c["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["ks", "ks", "chi2"], "800 reference rows: Evidently's small-table tests");
    let html = std::fs::read_to_string(sb.data().join("work/1/check.drift.html")).unwrap();
    assert!(html.contains("Drift detected") && html.matches("<svg").count() == 3, "{html}");

    let out = sb.sluice(&["run", spec.to_str().unwrap(), "-p", "shift=0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = sb.show("2");
    assert_eq!(step(&run, "check")["outputs"]["drifted"], false);
    assert_eq!(step(&run, "retrain")["state"], "skipped");

    // A column neither table has: the step fails, naming it.
    let bad = sb.write(
        "bad.yaml",
        &std::fs::read_to_string(&spec).unwrap().replace(
            "current: \"{{ steps.tables.artifacts.current.path }}\"",
            "current: \"{{ steps.tables.artifacts.current.path }}\"\n      columns: [tenure, churn_score]",
        ),
    );
    let out = sb.sluice(&["run", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let logs = text(&sb.sluice(&["logs", "3", "check"]).stdout);
    assert!(logs.contains("the reference has no column `churn_score`"), "{logs}");
    assert_eq!(
        step(&sb.show("3"), "check")["attempts"].as_array().unwrap().len(),
        1,
        "a bad column is not retried"
    );
}
