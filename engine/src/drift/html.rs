//! The drift report as one self-contained HTML page: the verdict, a table of every column's
//! test, and per column a histogram of the reference against the current table (inline SVG,
//! no script, no outside file).

use std::fmt::Write;

use super::{ColumnDrift, Report};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-4 && v.abs() < 1e6) { format!("{v:.4}") } else { format!("{v:.3e}") }
}

/// Bars of both tables' shares per bin, side by side.
fn chart(c: &ColumnDrift) -> String {
    let h = &c.histogram;
    let bins = h.reference.len().min(h.current.len()).min(60);
    let (width, height, pad) = (640.0, 160.0, 20.0);
    let top = h.reference.iter().chain(&h.current).copied().fold(0.0f64, f64::max).max(1e-12);
    let slot = (width - 2.0 * pad) / bins.max(1) as f64;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"histogram of {name}: reference against current\" viewBox=\"0 0 {width} {}\" width=\"{width}\" height=\"{}\">",
        height + 40.0,
        height + 40.0,
        name = esc(&c.column)
    );
    for i in 0..bins {
        for (k, (share, class)) in [(h.reference[i], "ref"), (h.current[i], "cur")].into_iter().enumerate() {
            let bh = share / top * (height - pad);
            let x = pad + i as f64 * slot + k as f64 * slot / 2.0;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{}: {}</title></rect>",
                height - bh,
                (slot / 2.0 - 1.0).max(0.5),
                if k == 0 { "reference" } else { "current" },
                num(share)
            );
        }
    }
    let label = |i: usize| -> String {
        match (&h.edges, &h.categories) {
            (Some(e), _) => num(e[i]),
            (_, Some(k)) => k.get(i).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    };
    if bins > 0 {
        let last = if h.edges.is_some() { bins } else { bins - 1 };
        let _ = write!(
            svg,
            "<text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            height + 16.0,
            esc(&label(0)),
            width - pad,
            height + 16.0,
            esc(&label(last))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page.
pub fn render(report: &Report, title: &str) -> String {
    let mut page = String::new();
    let verdict = if report.drifted { "Drift detected" } else { "No drift" };
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}: {verdict}</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}.yes{{color:#b00;font-weight:bold}}\
.no{{color:#070}}rect.ref{{fill:#4c78a8}}rect.cur{{fill:#f58518}}svg text{{font-size:11px;fill:#555}}\
.key span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style></head><body>\
<h1>{t}</h1><p class=\"{cls}\">{verdict}: {n} of {m} columns drifted (share {share}, threshold {ds}).</p>\
<p>Reference: {rr} rows. Current: {cr} rows. Method: {method}.</p>",
        t = esc(title),
        cls = if report.drifted { "yes" } else { "no" },
        n = report.drifted_columns.len(),
        m = report.columns.len(),
        share = num(report.share),
        ds = num(report.drift_share),
        rr = report.reference_rows,
        cr = report.current_rows,
        method = report.method,
    );
    page.push_str(
        "<table><thead><tr><th scope=\"col\">column</th><th scope=\"col\">type</th><th scope=\"col\">test</th>\
<th scope=\"col\">statistic</th><th scope=\"col\">p-value</th><th scope=\"col\">threshold</th><th scope=\"col\">drifted</th></tr></thead><tbody>",
    );
    for c in &report.columns {
        let _ = write!(
            page,
            "<tr><td><a href=\"#col-{i}\">{name}</a></td><td>{kind}</td><td>{method}</td><td>{stat}</td><td>{p}</td><td>{th}</td><td class=\"{cls}\">{d}</td></tr>",
            i = esc(&c.column).replace(' ', "_"),
            name = esc(&c.column),
            kind = c.kind,
            method = c.method,
            stat = num(c.statistic),
            p = c.p_value.map(num).unwrap_or_else(|| "-".into()),
            th = num(c.threshold),
            cls = if c.drifted { "yes" } else { "no" },
            d = if c.drifted { "yes" } else { "no" },
        );
    }
    page.push_str("</tbody></table><p class=\"key\"><span style=\"background:#4c78a8\"></span>reference<span style=\"background:#f58518\"></span>current</p>");
    for c in &report.columns {
        let _ = write!(
            page,
            "<section id=\"col-{i}\"><h2>{name}</h2><p>{method}: {stat}{p}{band}; {rv} reference and {cv} current values ({rm} and {cm} missing).</p>{chart}</section>",
            i = esc(&c.column).replace(' ', "_"),
            name = esc(&c.column),
            method = c.method,
            stat = num(c.statistic),
            p = c.p_value.map(|p| format!(", p = {}", num(p))).unwrap_or_default(),
            band = c.band.map(|b| format!(" ({b})")).unwrap_or_default(),
            rv = c.reference_values,
            cv = c.current_values,
            rm = c.reference_missing,
            cm = c.current_missing,
            chart = chart(c),
        );
    }
    if !report.skipped.is_empty() {
        let _ = write!(
            page,
            "<p>Columns of one table only, not compared: {}.</p>",
            esc(&report.skipped.join(", "))
        );
    }
    page.push_str("</body></html>\n");
    page
}
