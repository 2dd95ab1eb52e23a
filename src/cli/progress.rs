//! The live progress view of `sluice run`: a bar on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sluice_engine::driver::Notice;
use sluice_engine::scheduler::StepState;
use tokio::sync::mpsc;

/// Shows notices until the channel closes.
pub(crate) async fn show(mut rx: mpsc::UnboundedReceiver<Notice>, total: u64) {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    super::logging::set_bar(Some(bar.clone()));
    let mut started: HashMap<(u64, String), Instant> = HashMap::new();
    let mut running: Vec<String> = Vec::new();
    while let Some(n) = rx.recv().await {
        match n {
            Notice::Step { run, step, state, attempt } => {
                let key = (run, step.clone());
                if state == StepState::Running {
                    started.entry(key.clone()).or_insert_with(Instant::now);
                    if !running.contains(&step) {
                        running.push(step.clone());
                    }
                } else {
                    running.retain(|s| s != &step);
                }
                if state.is_terminal() {
                    bar.inc(1);
                    let took =
                        started.get(&key).map(|t| format!(" in {:.2?}", t.elapsed())).unwrap_or_default();
                    let mark = match state {
                        StepState::Succeeded => "ok  ",
                        StepState::Skipped => "skip",
                        _ => "FAIL",
                    };
                    let tries =
                        if attempt > 1 { format!(" after {attempt} attempts") } else { String::new() };
                    line(&bar, format!("{mark} {run} {step}: {state}{took}{tries}"));
                } else if state == StepState::Retrying {
                    line(&bar, format!("     {run} {step}: attempt {attempt} failed; retrying"));
                } else if state == StepState::Waiting {
                    line(
                        &bar,
                        format!(
                            "wait {run} {step}: waiting for a decision (`sluice approve {run} {step}` through a server, or stop this run, approve it, and `sluice resume {run}`)"
                        ),
                    );
                }
                bar.set_message(running.join(", "));
            }
            Notice::Run { run, state } => {
                if state.is_terminal() || state == sluice_engine::scheduler::RunState::Interrupted {
                    line(&bar, format!("run {run} {state}"));
                }
            }
        }
    }
    super::logging::set_bar(None);
    bar.finish_and_clear();
}

fn line(bar: &ProgressBar, text: String) {
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}
