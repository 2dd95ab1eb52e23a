//! A gate, pure: a candidate version's metrics against thresholds (`min`, `max`) and against
//! the version an alias points at (it must be better by `min_improvement` in each check's
//! direction). The report says each check, its values, and pass or fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (auc, accuracy).
    Maximize,
    /// Lower is better (loss, latency).
    Minimize,
}

/// One check of a gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Which way is better when compared with the alias's version: given, else `minimize`
    /// for a check with only `max`, else `maximize`.
    pub direction: Option<Direction>,
}

impl Check {
    pub fn direction(&self) -> Direction {
        match (self.direction, self.min, self.max) {
            (Some(d), _, _) => d,
            (None, None, Some(_)) => Direction::Minimize,
            _ => Direction::Maximize,
        }
    }
}

/// The version a candidate is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline<'a> {
    pub alias: &'a str,
    /// The version the alias points at and its metrics (none: the alias points nowhere yet,
    /// and the comparison passes).
    pub version: Option<(u64, &'a BTreeMap<String, f64>)>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub metric: String,
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub direction: Direction,
    /// The alias's version's value, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// How much better than the baseline (in the check's direction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub improvement: Option<f64>,
    pub passed: bool,
    /// Why it failed, or what it noted.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
}

/// A gate's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub passed: bool,
    pub model: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
    pub min_improvement: f64,
    pub checks: Vec<CheckReport>,
}

/// What a gate compared against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Against {
    pub alias: String,
    /// The version it pointed at (none: nothing yet).
    pub version: Option<u64>,
}

impl Report {
    /// The failed checks in a sentence.
    pub fn failures(&self) -> String {
        let failed: Vec<String> =
            self.checks.iter().filter(|c| !c.passed).flat_map(|c| c.notes.iter().cloned()).collect();
        format!("the gate on {} version {} failed: {}", self.model, self.version, failed.join("; "))
    }
}

/// Why a gate could not be evaluated at all (rather than failed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("{model} version {version} has no metric `{metric}` (it has: {has})")]
    MissingMetric { model: String, version: u64, metric: String, has: String },
    #[error("the metric `{metric}` of {model} version {version} is {value}, not a finite number")]
    NotFinite { model: String, version: u64, metric: String, value: f64 },
    #[error("a check's threshold must be a finite number (`{metric}`)")]
    BadThreshold { metric: String },
}

fn fmt(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Evaluates `checks` on the candidate `(model, version, metrics)`.
pub fn evaluate(
    (model, version, metrics): (&str, u64, &BTreeMap<String, f64>),
    checks: &[Check],
    baseline: Option<Baseline<'_>>,
    min_improvement: f64,
) -> Result<Report, GateError> {
    let mut out = Vec::new();
    for c in checks {
        if c.min.is_some_and(|m| !m.is_finite())
            || c.max.is_some_and(|m| !m.is_finite())
            || !min_improvement.is_finite()
        {
            return Err(GateError::BadThreshold { metric: c.metric.clone() });
        }
        let Some(&value) = metrics.get(&c.metric) else {
            let has: Vec<&str> = metrics.keys().map(String::as_str).collect();
            return Err(GateError::MissingMetric {
                model: model.into(),
                version,
                metric: c.metric.clone(),
                has: if has.is_empty() { "none".into() } else { has.join(", ") },
            });
        };
        if !value.is_finite() {
            return Err(GateError::NotFinite {
                model: model.into(),
                version,
                metric: c.metric.clone(),
                value,
            });
        }
        let direction = c.direction();
        let mut notes = Vec::new();
        let mut passed = true;
        if let Some(min) = c.min
            && value < min
        {
            passed = false;
            notes.push(format!("{} {} < min {}", c.metric, fmt(value), fmt(min)));
        }
        if let Some(max) = c.max
            && value > max
        {
            passed = false;
            notes.push(format!("{} {} > max {}", c.metric, fmt(value), fmt(max)));
        }
        let (mut base_value, mut improvement) = (None, None);
        if let Some(Baseline { alias, version: Some((bv, base)) }) = &baseline {
            match base.get(&c.metric).copied().filter(|b| b.is_finite()) {
                Some(b) => {
                    let better = match direction {
                        Direction::Maximize => value - b,
                        Direction::Minimize => b - value,
                    };
                    base_value = Some(b);
                    improvement = Some(better);
                    if better < min_improvement {
                        passed = false;
                        notes.push(format!(
                            "{} {} does not beat {alias} (version {bv}) {} by {} ({})",
                            c.metric,
                            fmt(value),
                            fmt(b),
                            fmt(min_improvement),
                            match direction {
                                Direction::Maximize => "higher is better",
                                Direction::Minimize => "lower is better",
                            }
                        ));
                    }
                }
                None => {
                    // Nothing to beat is not a win: say so and fail.
                    passed = false;
                    notes.push(format!("{alias} (version {bv}) has no `{}` to compare with", c.metric));
                }
            }
        }
        out.push(CheckReport {
            metric: c.metric.clone(),
            value,
            min: c.min,
            max: c.max,
            direction,
            baseline: base_value,
            improvement,
            passed,
            notes,
        });
    }
    Ok(Report {
        passed: out.iter().all(|c| c.passed),
        model: model.to_string(),
        version,
        against: baseline.map(|b| Against { alias: b.alias.to_string(), version: b.version.map(|(v, _)| v) }),
        min_improvement,
        checks: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn check(metric: &str, min: Option<f64>, max: Option<f64>) -> Check {
        Check { metric: metric.into(), min, max, direction: None }
    }

    #[test]
    fn thresholds_and_the_baseline_decide() {
        let cand = m(&[("auc", 0.95), ("loss", 0.2)]);
        let prod = m(&[("auc", 0.93), ("loss", 0.25)]);
        let checks = [check("auc", Some(0.9), None), check("loss", None, Some(0.3))];
        let base = || Some(Baseline { alias: "production", version: Some((2, &prod)) });
        let r = evaluate(("churn", 3, &cand), &checks, base(), 0.01).unwrap();
        assert!(r.passed, "{r:?}");
        assert_eq!(r.checks[1].direction, Direction::Minimize);
        assert!((r.checks[0].improvement.unwrap() - 0.02).abs() < 1e-9);
        assert!((r.checks[1].improvement.unwrap() - 0.05).abs() < 1e-9);
        // Not better by enough.
        let r = evaluate(("churn", 3, &cand), &checks, base(), 0.03).unwrap();
        assert!(!r.passed);
        assert!(
            r.failures().contains("auc 0.95 does not beat production (version 2) 0.93 by 0.03"),
            "{}",
            r.failures()
        );
        // Below a threshold.
        let r = evaluate(("churn", 3, &cand), &[check("auc", Some(0.96), None)], None, 0.0).unwrap();
        assert!(!r.passed && r.failures().contains("auc 0.95 < min 0.96"), "{}", r.failures());
        // The alias's version lacks the metric: nothing to beat fails the check.
        let bare = m(&[("loss", 0.3)]);
        let r = evaluate(
            ("churn", 3, &cand),
            &[check("auc", None, None)],
            Some(Baseline { alias: "production", version: Some((2, &bare)) }),
            0.0,
        )
        .unwrap();
        assert!(
            !r.passed && r.failures().contains("production (version 2) has no `auc`"),
            "{}",
            r.failures()
        );
        // Nothing at the alias yet: the comparison passes.
        let r = evaluate(
            ("churn", 1, &cand),
            &checks,
            Some(Baseline { alias: "production", version: None }),
            0.5,
        )
        .unwrap();
        assert!(r.passed);
        assert_eq!(r.against.unwrap().version, None);
    }

    #[test]
    fn a_missing_or_broken_metric_is_an_error_not_a_verdict() {
        let cand = m(&[("auc", 0.95)]);
        let e = evaluate(("churn", 3, &cand), &[check("f1", Some(0.5), None)], None, 0.0).unwrap_err();
        assert!(e.to_string().contains("has no metric `f1` (it has: auc)"), "{e}");
        let nan = m(&[("auc", f64::NAN)]);
        assert!(matches!(
            evaluate(("c", 1, &nan), &[check("auc", None, None)], None, 0.0),
            Err(GateError::NotFinite { .. })
        ));
        let bad = [check("auc", Some(f64::INFINITY), None)];
        assert!(matches!(evaluate(("c", 1, &cand), &bad, None, 0.0), Err(GateError::BadThreshold { .. })));
    }
}
