use std::collections::BTreeMap;

use super::*;

const ATTRS: &[(&str, Kind)] = &[("status", Kind::Text), ("start_time", Kind::Number)];

#[derive(Default)]
struct Run {
    metrics: BTreeMap<String, f64>,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    status: &'static str,
    start: f64,
}

impl Searchable for Run {
    fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, name: &str) -> Option<Value<'_>> {
        match name {
            "status" => Some(Value::Text(self.status.into())),
            "start_time" => Some(Value::Number(self.start)),
            _ => None,
        }
    }
}

fn run(auc: Option<f64>, lr: &str, team: Option<&str>, status: &'static str, start: f64) -> Run {
    Run {
        metrics: auc.map(|a| ("auc".to_string(), a)).into_iter().collect(),
        params: [("lr".to_string(), lr.to_string())].into(),
        tags: team.map(|t| ("team".to_string(), t.to_string())).into_iter().collect(),
        status,
        start,
    }
}

fn matching(filter: &str, runs: &[Run]) -> Vec<usize> {
    let f = Filter::parse(filter, ATTRS).unwrap_or_else(|e| panic!("{filter}: {e}"));
    runs.iter().enumerate().filter(|(_, r)| f.matches(*r)).map(|(i, _)| i).collect()
}

#[test]
fn mlflows_filters_select_the_runs_they_should() {
    let runs = [
        run(Some(0.95), "0.01", Some("fraud"), "FINISHED", 1.0),
        run(Some(0.85), "0.01", None, "FINISHED", 2.0),
        run(Some(0.97), "0.1", Some("Fraud-ops"), "FAILED", 3.0),
        run(None, "0.01", Some("churn"), "RUNNING", 4.0),
    ];
    assert_eq!(matching("", &runs), [0, 1, 2, 3]);
    assert_eq!(matching("metrics.auc > 0.9 and params.lr = '0.01'", &runs), [0]);
    assert_eq!(matching("metrics.auc > 0.9 AND params.lr = \"0.01\"", &runs), [0]);
    assert_eq!(matching("metrics.auc >= 0.85", &runs), [0, 1, 2]);
    assert_eq!(matching("metrics.auc != 0.85", &runs), [0, 2], "a run without the metric never matches");
    assert_eq!(matching("metric.`auc` < 0.9", &runs), [1]);
    assert_eq!(matching("tags.team LIKE 'fr%'", &runs), [0]);
    assert_eq!(matching("tags.team ILIKE 'fr%'", &runs), [0, 2]);
    assert_eq!(matching("tags.team like '_hurn'", &runs), [3]);
    assert_eq!(matching("attributes.status IN ('FAILED', 'RUNNING')", &runs), [2, 3]);
    assert_eq!(matching("attributes.status NOT IN ('FAILED')", &runs), [0, 1, 3]);
    assert_eq!(matching("attribute.start_time > 2 and run.status != 'RUNNING'", &runs), [2]);
    assert_eq!(matching("metrics.auc > 0.96 or (params.lr = '0.01' and tags.team = 'churn')", &runs), [2, 3]);
    assert_eq!(matching("params.lr = 'it''s' or params.lr = 'a\\'b'", &runs), Vec::<usize>::new());
    assert_eq!(matching("metrics.auc > -1e3", &runs), [0, 1, 2]);
}

#[test]
fn errors_name_their_column() {
    let cases = [
        ("metrics.auc >", 14, "a value"),
        ("metrics.auc > 0.9 and", 22, "a field"),
        ("metrics.auc ~ 0.9", 13, "a comparison"),
        ("metrics.auc > 0.9 params.lr = '1'", 19, "`and`, `or` or the end"),
        ("metrics.auc > 'high'", 1, "`metrics.auc` is a number"),
        ("params.lr > 0.01", 1, "`params.lr` is text"),
        ("params.lr = 0.01", 1, "a quoted string"),
        ("metrics.auc > 0.9 and attributes.colour = 'red'", 23, "no attribute `colour`"),
        ("params.lr = 'open", 18, "closing quote"),
        ("(metrics.auc > 0.9", 19, "`)`"),
        ("colour = 'red'", 1, "a field"),
        ("metrics.`auc > 1", 17, "closing backquote"),
        ("tags.team IN ()", 15, "a value"),
    ];
    for (filter, column, needle) in cases {
        let e = Filter::parse(filter, ATTRS).expect_err(filter);
        assert_eq!(e.column, column, "{filter}: {e}");
        assert!(e.to_string().contains(needle), "{filter}: {e}");
    }
}

#[test]
fn order_by_sorts_with_missing_values_last() {
    let runs = [
        run(Some(0.9), "b", None, "FINISHED", 1.0),
        run(None, "a", None, "FINISHED", 2.0),
        run(Some(0.95), "c", None, "FINISHED", 3.0),
    ];
    let order = |text: &str| {
        let keys = parse_order_by(text, ATTRS).unwrap();
        let mut ix: Vec<usize> = (0..runs.len()).collect();
        ix.sort_by(|a, b| compare(&runs[*a], &runs[*b], &keys));
        ix
    };
    assert_eq!(order("metrics.auc DESC"), [2, 0, 1]);
    assert_eq!(order("metrics.auc"), [0, 2, 1]);
    assert_eq!(order("params.lr desc"), [2, 0, 1]);
    assert_eq!(order("attributes.start_time DESC, metrics.auc ASC"), [2, 1, 0]);
    let e = parse_order_by("metrics.auc sideways", ATTRS).unwrap_err();
    assert_eq!(e.column, 13, "{e}");
    assert!(parse_order_by("attributes.nope", ATTRS).unwrap_err().to_string().contains("no attribute"));
}

#[test]
fn like_matches_sql_patterns() {
    assert!(like("abc", "a%", false));
    assert!(like("abc", "%c", false));
    assert!(like("abc", "a_c", false));
    assert!(like("aXbXc", "a%b%c", false));
    assert!(!like("abc", "a_", false));
    assert!(like("ABC", "a%", true));
    assert!(!like("ABC", "a%", false));
    assert!(like("", "%", false));
    assert!(like("ünï", "_n_", false));
}

proptest::proptest! {
    /// Whatever the text, parsing answers (a filter or an error with a column inside it).
    #[test]
    fn any_text_parses_or_errs_in_place(text in "[a-z.`'\"()<>=! 0-9,%_-]{0,40}") {
        match Filter::parse(&text, ATTRS) {
            Ok(_) => {}
            Err(e) => proptest::prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}"),
        }
        let _ = parse_order_by(&text, ATTRS);
    }
}

#[test]
fn deep_nesting_long_texts_and_long_patterns_are_refused_before_work() {
    let deep = format!("{}metrics.a > 1{}", "(".repeat(5_000), ")".repeat(5_000));
    let e = Filter::parse(&deep, ATTRS).unwrap_err();
    assert!(e.message.contains("nested deeper than 32") && e.column == 33, "{e}");
    let nested = format!("{}metrics.a > 1{}", "(".repeat(32), ")".repeat(32));
    assert!(Filter::parse(&nested, ATTRS).is_ok(), "32 levels are fine");
    assert!(
        Filter::parse("params.a = '((((((((((((((((((((((((((((((((((((('", ATTRS).is_ok(),
        "quoted parentheses do not count"
    );
    let long = format!("params.a = '{}'", "x".repeat(20_000));
    assert!(Filter::parse(&long, ATTRS).unwrap_err().message.contains("longer than"));
    let pattern = format!("params.a LIKE '{}'", "%a".repeat(600));
    assert!(Filter::parse(&pattern, ATTRS).unwrap_err().message.contains("at most 1000"));
    assert!(parse_order_by(&"metrics.a, ".repeat(2000), ATTRS).unwrap_err().message.contains("longer than"));
}
