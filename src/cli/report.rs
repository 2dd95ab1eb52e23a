//! The run report as text: what `sluice show`, `sluice status` and `sluice trigger --wait`
//! print (their JSON is the report itself).

use serde_json::Value;
use sluice_engine::driver::RunReport;

use super::{fmt_ms, fmt_time};

pub(crate) fn print(r: &RunReport) {
    let took = r.duration_ms.map(|d| format!(" in {}", fmt_ms(d))).unwrap_or_default();
    println!("run {}  {}  {}{took}", r.id, r.pipeline, r.state);
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
    let rows: Vec<[String; 5]> = r
        .steps
        .iter()
        .map(|s| {
            let attempts = if s.items > 1 {
                format!("{} ({} items)", s.attempts.len(), s.items)
            } else {
                s.attempts.len().to_string()
            };
            let duration = s.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into());
            let all_cached = !s.cached.is_empty() && s.cached.len() >= s.items;
            let state = if all_cached { "cached".to_string() } else { s.state.as_str().to_string() };
            let mut from: Vec<u64> = s.cached.iter().map(|c| c.run).collect();
            from.dedup();
            let from: Vec<String> = from.iter().map(u64::to_string).collect();
            let detail = match (&s.message, s.reused_from, &s.outputs) {
                (Some(m), _, _) => m.clone(),
                (None, Some(run), _) => format!("reused from run {run}"),
                (None, None, _) if all_cached => format!("from run {}", from.join(", ")),
                (None, None, _) if !s.cached.is_empty() => {
                    format!("{} of {} cached (from run {})", s.cached.len(), s.items, from.join(", "))
                }
                (None, None, Value::Null) => String::new(),
                (None, None, Value::Object(o)) if o.is_empty() => String::new(),
                (None, None, o) => format!("outputs {o}"),
            };
            [s.id.clone(), state, attempts, duration, detail]
        })
        .collect();
    let head = ["STEP", "STATE", "ATTEMPTS", "DURATION", "DETAIL"].map(String::from);
    // Columns as wide as their widest cell (a mapped step's "3 (3 items)" included).
    let width = |c: usize| rows.iter().chain([&head]).map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    for row in [&head].into_iter().chain(&rows) {
        let [id, state, attempts, duration, detail] = row;
        println!("{id:<w0$}  {state:<w1$}  {attempts:>w2$}  {duration:>w3$}  {detail}");
    }
}
