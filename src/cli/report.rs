//! The run report as text: what `sluice show`, `sluice status` and `sluice trigger --wait`
//! print (their JSON is the report itself).

use serde_json::Value;
use sluice_engine::driver::RunReport;

use super::{fmt_ms, fmt_time};

pub(crate) fn print(r: &RunReport) {
    let took = r.duration_ms.map(|d| format!(" in {}", fmt_ms(d))).unwrap_or_default();
    println!("run r{}  {}  {}{took}", r.id, r.pipeline, r.state);
    println!(
        "version {}  trigger {}  created {}",
        r.dag.get(..12).unwrap_or(&r.dag),
        r.trigger,
        fmt_time(r.created_at)
    );
    if !r.params.is_empty() {
        println!("params {}", Value::Object(r.params.clone()));
    }
    println!();
    println!("{:<24} {:<16} {:>8} {:>9}  DETAIL", "STEP", "STATE", "ATTEMPTS", "DURATION");
    for s in &r.steps {
        let attempts = if s.items > 1 {
            format!("{} ({} items)", s.attempts.len(), s.items)
        } else {
            s.attempts.len().to_string()
        };
        let duration = s.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into());
        let detail = match (&s.message, s.reused_from, &s.outputs) {
            (Some(m), _, _) => m.clone(),
            (None, Some(run), _) => format!("reused from r{run}"),
            (None, None, Value::Null) => String::new(),
            (None, None, Value::Object(o)) if o.is_empty() => String::new(),
            (None, None, o) => format!("outputs {o}"),
        };
        println!("{:<24} {:<16} {:>8} {:>9}  {}", s.id, s.state.as_str(), attempts, duration, detail);
    }
}
