use serde_json::json;

use super::input::{rows, tolerate_non_finite};

fn features() -> Vec<String> {
    ["tenure", "spend"].iter().map(|s| s.to_string()).collect()
}

#[test]
fn rows_by_name_or_in_order_in_every_shape() {
    let f = features();
    let want = (vec![1.0, 2.0, 3.0, 4.0], 2);
    for body in [
        json!({"rows": [{"tenure": 1, "spend": 2}, {"spend": 4, "tenure": 3}]}),
        json!({"rows": [[1, 2], [3, 4]]}),
        json!({"instances": [[1, 2], {"tenure": 3, "spend": 4}]}),
        json!({"dataframe_records": [{"tenure": 1, "spend": 2}, {"tenure": 3, "spend": 4}]}),
        json!({"dataframe_split": {"columns": ["spend", "tenure"], "data": [[2, 1], [4, 3]]}}),
    ] {
        assert_eq!(rows(&body, &f, "churn version 1").unwrap(), want, "{body}");
    }
    assert_eq!(rows(&json!({"rows": {"tenure": 5, "spend": 6}}), &f, "m").unwrap(), (vec![5.0, 6.0], 1));
}

#[test]
fn every_problem_names_its_field() {
    let f = features();
    let err = |body: serde_json::Value| rows(&body, &f, "churn version 1").unwrap_err().to_string();
    assert!(err(json!({"rows": [{"tenure": 1}]})).starts_with("rows[0].spend: is missing"));
    assert!(
        err(json!({"rows": [{"tenure": 1, "spend": 2, "zip": 3}]}))
            .starts_with("rows[0].zip: is not a feature")
    );
    assert!(
        err(json!({"rows": [{"tenure": "x", "spend": 2}]}))
            .starts_with("rows[0].tenure: is a string, not a number")
    );
    assert!(
        err(json!({"rows": [[1, 2], [1]]})).starts_with("rows[1]: has 1 values; churn version 1 takes 2")
    );
    assert!(err(json!({"rows": []})).contains("has no rows"));
    assert!(err(json!({"nothing": 1})).starts_with("rows: is missing"));
    assert!(
        err(json!({"dataframe_split": {"columns": ["tenure"], "data": [[1]]}}))
            .contains("dataframe_split.columns.spend")
    );
    // NaN and Infinity as Python writes them.
    let body =
        br#"{"rows": [{"tenure": NaN, "spend": 2}, {"tenure": 1, "spend": -Infinity}], "note": "NaN stays"}"#;
    let v: serde_json::Value = serde_json::from_slice(&tolerate_non_finite(body)).unwrap();
    assert_eq!(v["note"], "NaN stays");
    assert!(err(v.clone()).starts_with("rows[0].tenure: is NaN"));
    let v: serde_json::Value =
        serde_json::from_slice(&tolerate_non_finite(br#"{"rows": [[1, Infinity]]}"#)).unwrap();
    assert!(err(v).starts_with("rows[0].spend: is infinite"));
    assert!(err(json!({"rows": [[1, 1e300]]})).starts_with("rows[0].spend: is out of range"));
}
