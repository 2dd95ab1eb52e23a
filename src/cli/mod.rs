//! One module per group of commands.

pub(crate) mod approve;
pub(crate) mod artifacts;
pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod doctor;
pub(crate) mod drift;
pub(crate) mod inspect;
pub(crate) mod lineage;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod models;
pub(crate) mod plugin;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod rollout;
pub(crate) mod run;
pub(crate) mod security;
pub(crate) mod serve;
pub(crate) mod spec;

/// Parses a run id: `12` (as printed everywhere), or `r12` as older versions printed it.
pub(crate) fn parse_run_id(text: &str) -> anyhow::Result<u64> {
    text.trim().trim_start_matches('r').parse().map_err(|_| {
        anyhow::anyhow!("`{text}` is not a run id (run ids are numbers such as 12; `sluice runs` lists them)")
    })
}

pub(crate) fn fmt_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A number as people read it: at most six decimals, trailing zeros dropped.
pub(crate) fn fmt_num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" || s == "-0" { "0".into() } else { s.to_string() }
}

/// Prints rows under a head, each column as wide as its widest cell.
pub(crate) fn table(head: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub(crate) fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}
