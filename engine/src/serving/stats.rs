//! What serving remembers of each version, in memory and bounded: request, row and failure
//! counts, recent latencies, a window of recent input rows with their predictions, and the
//! ground truth that feedback brought for them. Rollout analysis, drift monitors and the
//! serving summary read it.

use std::collections::VecDeque;

use serde_json::{Value, json};

/// The most recent latencies kept per version.
pub const LATENCIES: usize = 10_000;
/// The most recent feedback kept per version.
pub const FEEDBACK: usize = 10_000;

/// A bounded queue that forgets its oldest entries.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    pub fn new(cap: usize) -> Self {
        Ring { items: VecDeque::new(), cap: cap.max(1) }
    }

    pub fn push(&mut self, v: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(v);
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One served row: its inputs, the predicted class and the score (the probability of the
/// second class with two classes, of the predicted one otherwise).
#[derive(Debug, Clone)]
pub struct Served {
    pub inputs: Vec<f32>,
    pub class: u32,
    pub score: f32,
}

/// One version's serving record.
#[derive(Debug, Clone)]
pub struct VersionStats {
    pub requests: u64,
    pub rows: u64,
    /// Requests the version failed (it could not be loaded or served).
    pub failures: u64,
    /// Requests refused for their input (the client's error, not the version's).
    pub invalid: u64,
    pub latencies_ms: Ring<f32>,
    pub window: Ring<Served>,
    /// (score, truth, whether the prediction was right).
    pub feedback: Ring<(f32, u32, bool)>,
}

impl VersionStats {
    pub fn new(window: usize) -> Self {
        VersionStats {
            requests: 0,
            rows: 0,
            failures: 0,
            invalid: 0,
            latencies_ms: Ring::new(LATENCIES),
            window: Ring::new(window),
            feedback: Ring::new(FEEDBACK),
        }
    }

    /// The share of requests that failed (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.failures as f64 / self.requests as f64 }
    }

    /// A latency quantile (`q` in [0, 1]) of the recent requests, in milliseconds.
    pub fn latency(&self, q: f64) -> Option<f64> {
        let mut v: Vec<f32> = self.latencies_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        let at = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[at] as f64)
    }

    /// The share of right predictions among those with feedback.
    pub fn accuracy(&self) -> Option<f64> {
        (!self.feedback.is_empty())
            .then(|| self.feedback.iter().filter(|f| f.2).count() as f64 / self.feedback.len() as f64)
    }

    /// The area under the ROC curve of the scores with feedback (two classes).
    pub fn auc(&self) -> Option<f64> {
        let scores: Vec<f32> = self.feedback.iter().map(|f| f.0).collect();
        let truth: Vec<u32> = self.feedback.iter().map(|f| f.1).collect();
        sluice_worker::auc(&scores, &truth)
    }

    /// The scores of the window's rows (for the PSI of one version's predictions against
    /// another's).
    pub fn scores(&self) -> Vec<f64> {
        self.window.iter().map(|s| s.score as f64).collect()
    }

    pub fn summary(&self) -> Value {
        json!({
            "requests": self.requests,
            "rows": self.rows,
            "failures": self.failures,
            "invalid": self.invalid,
            "error_rate": self.error_rate(),
            "latency_ms": { "p50": self.latency(0.5), "p99": self.latency(0.99) },
            "window_rows": self.window.len(),
            "feedback": self.feedback.len(),
            "accuracy": self.accuracy(),
            "auc": self.auc(),
        })
    }
}
