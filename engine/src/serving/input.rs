//! Prediction requests: rows by feature name or in the version's feature order, in Sluice's
//! shape (`{"rows": [...]}`) or MLflow's scoring shapes (`instances`, `inputs`,
//! `dataframe_records`, `dataframe_split`), checked against the version's features. Every
//! problem names its place (`rows[3].tenure`). `NaN` and `Infinity`, which Python's JSON
//! writes but JSON does not allow, are read so that they can be refused by name.

use std::borrow::Cow;

use serde_json::Value;

/// A problem with a request: its place, and what is wrong there.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// Rewrites the bare tokens `NaN`, `Infinity` and `-Infinity` outside strings as strings, so
/// that a strict JSON reader takes the body and the check below names the field.
pub fn tolerate_non_finite(body: &[u8]) -> Cow<'_, [u8]> {
    let has = |tok: &[u8]| body.windows(tok.len()).any(|w| w == tok);
    if !has(b"NaN") && !has(b"Infinity") {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut i, mut in_string) = (0, false);
    while i < body.len() {
        let c = body[i];
        if in_string {
            out.push(c);
            if c == b'\\' && i + 1 < body.len() {
                out.push(body[i + 1]);
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &body[i..];
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"].into_iter().find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push(b'"');
                out.extend_from_slice(t);
                out.push(b'"');
                i += t.len();
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// One value as a feature: a finite number, or why not.
fn number(v: &Value, field: &dyn Fn() -> String) -> Result<f32, Invalid> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !x.is_finite() || x.abs() > f32::MAX as f64 {
                return Err(invalid(field(), "is out of range"));
            }
            Ok(x as f32)
        }
        Value::String(s) if s == "NaN" => {
            Err(invalid(field(), "is NaN; every feature needs a finite number"))
        }
        Value::String(s) if s == "Infinity" || s == "-Infinity" => {
            Err(invalid(field(), "is infinite; every feature needs a finite number"))
        }
        Value::Null => Err(invalid(field(), "is null; every feature needs a number")),
        other => Err(invalid(field(), format!("is {}, not a number", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Rows checked against `features`: `n × features` values, row after row.
pub fn rows(body: &Value, features: &[String], what: &str) -> Result<(Vec<f32>, usize), Invalid> {
    let d = features.len();
    let names = || features.join(", ");
    // Where the rows are, and what the first one is called in messages.
    let (list, place): (Vec<&Value>, &str) = if let Some(split) = body.get("dataframe_split") {
        let columns = split["columns"]
            .as_array()
            .ok_or_else(|| invalid("dataframe_split.columns", "is missing (a list of feature names)"))?;
        let data = split["data"]
            .as_array()
            .ok_or_else(|| invalid("dataframe_split.data", "is missing (a list of rows)"))?;
        let cols: Vec<&str> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.as_str().ok_or_else(|| invalid(format!("dataframe_split.columns[{i}]"), "is not a name"))
            })
            .collect::<Result<_, _>>()?;
        check_names(&cols, features, "dataframe_split.columns", what)?;
        let mut out = Vec::with_capacity(data.len() * d);
        for (r, row) in data.iter().enumerate() {
            let cells = row
                .as_array()
                .ok_or_else(|| invalid(format!("dataframe_split.data[{r}]"), "is not a list"))?;
            if cells.len() != cols.len() {
                return Err(invalid(
                    format!("dataframe_split.data[{r}]"),
                    format!("has {} values for {} columns", cells.len(), cols.len()),
                ));
            }
            for f in features {
                let at = cols.iter().position(|c| c == f).unwrap_or(0);
                out.push(number(&cells[at], &|| format!("dataframe_split.data[{r}].{f}"))?);
            }
        }
        return Ok((out, data.len()));
    } else if let Some((key, v)) = ["rows", "instances", "inputs", "dataframe_records"]
        .iter()
        .find_map(|k| body.get(*k).map(|v| (*k, v)))
    {
        match v {
            Value::Array(items) => (items.iter().collect(), key),
            Value::Object(_) => (vec![v], key),
            other => return Err(invalid(key, format!("is {}, not a list of rows", kind(other)))),
        }
    } else {
        return Err(invalid(
            "rows",
            "is missing: send {\"rows\": [{feature: number, ...}, ...]} or rows as lists in the feature order",
        ));
    };
    if list.is_empty() {
        return Err(invalid(place, "has no rows"));
    }
    let mut out = Vec::with_capacity(list.len() * d);
    for (r, row) in list.iter().enumerate() {
        match row {
            Value::Object(map) => {
                for f in features {
                    let v = map.get(f).ok_or_else(|| {
                        invalid(format!("{place}[{r}].{f}"), format!("is missing ({what} takes {})", names()))
                    })?;
                    out.push(number(v, &|| format!("{place}[{r}].{f}"))?);
                }
                if map.len() > d
                    && let Some(extra) = map.keys().find(|k| !features.contains(k))
                {
                    return Err(invalid(
                        format!("{place}[{r}].{extra}"),
                        format!("is not a feature of {what} (it takes {})", names()),
                    ));
                }
            }
            Value::Array(cells) => {
                if cells.len() != d {
                    return Err(invalid(
                        format!("{place}[{r}]"),
                        format!("has {} values; {what} takes {d} ({})", cells.len(), names()),
                    ));
                }
                for (f, v) in features.iter().zip(cells) {
                    out.push(number(v, &|| format!("{place}[{r}].{f}"))?);
                }
            }
            other => {
                return Err(invalid(format!("{place}[{r}]"), format!("is {}, not a row", kind(other))));
            }
        }
    }
    Ok((out, list.len()))
}

fn check_names(given: &[&str], features: &[String], place: &str, what: &str) -> Result<(), Invalid> {
    for f in features {
        if !given.contains(&f.as_str()) {
            return Err(invalid(
                format!("{place}.{f}"),
                format!("is missing ({what} takes {})", features.join(", ")),
            ));
        }
    }
    if let Some(extra) = given.iter().find(|g| !features.iter().any(|f| f == *g)) {
        return Err(invalid(
            format!("{place}.{extra}"),
            format!("is not a feature of {what} (it takes {})", features.join(", ")),
        ));
    }
    Ok(())
}
