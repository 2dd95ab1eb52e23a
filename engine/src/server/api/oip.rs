//! The Open Inference Protocol (KServe v2, what Triton speaks) over the served models:
//! server and model metadata, liveness and readiness, and `infer` with JSON tensors or the
//! binary tensor extension (`Inference-Header-Content-Length`), so that Triton's and KServe's
//! clients work unchanged. The input is one tensor of shape [N, features] in the version's
//! feature order, or one tensor per feature (named by it) of shape [N] or [N, 1]; the outputs
//! are `probabilities` (FP32, [N, classes]) and `label` (BYTES, [N]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::registry::parse_version;
use crate::server::Shared;
use crate::serving::{Invalid, Loaded, Prediction, ServeError, Target};

const HEADER_LENGTH: &str = "inference-header-content-length";

/// An error as the protocol shapes it: `{"error": "..."}`.
pub(super) struct OipError(StatusCode, String);

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ServeError> for OipError {
    fn from(e: ServeError) -> Self {
        let status = match &e {
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServeError::Refused(_) => StatusCode::CONFLICT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        OipError(status, e.to_string())
    }
}

type OipResult<T> = Result<T, OipError>;

fn bad(message: impl Into<String>) -> OipError {
    OipError(StatusCode::BAD_REQUEST, message.into())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> OipResult<T> + Send + 'static) -> OipResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OipError(StatusCode::INTERNAL_SERVER_ERROR, format!("the request crashed: {e}")))?
}

pub(super) async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

pub(super) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn ready(State(shared): State<Arc<Shared>>) -> StatusCode {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

fn target(name: &str, version: Option<&str>) -> OipResult<(String, Target)> {
    match version {
        Some(v) => Ok((Target::parse(name).0, Target::Version(parse_version(v).map_err(bad)?))),
        None => Ok(Target::parse(name)),
    }
}

fn loaded(shared: &Shared, name: &str, t: &Target) -> OipResult<Arc<Loaded>> {
    let (version, _) = shared.serving.resolve(name, t)?;
    Ok(shared.serving.load(name, version)?)
}

fn metadata_doc(shared: &Shared, name: &str, t: &Target) -> OipResult<Value> {
    let l = loaded(shared, name, t)?;
    let versions: Vec<String> = shared
        .serving
        .registry()
        .store()
        .model_versions(Some(name))
        .map_err(|e| OipError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    Ok(json!({
        "name": name,
        "versions": versions,
        "platform": format!("sluice_{}", l.model.kind),
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, l.model.features.len()] }],
        "outputs": [
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, l.model.classes.len()] },
            { "name": "label", "datatype": "BYTES", "shape": [-1] },
        ],
        "parameters": { "version": l.version.to_string(), "features": l.model.features, "classes": l.model.classes },
    }))
}

pub(super) async fn model_metadata(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> OipResult<axum::Json<Value>> {
    let (name, t) = target(&name, None)?;
    blocking(move || metadata_doc(&shared, &name, &t).map(axum::Json)).await
}

pub(super) async fn version_metadata(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> OipResult<axum::Json<Value>> {
    let (name, t) = target(&name, Some(&version))?;
    blocking(move || metadata_doc(&shared, &name, &t).map(axum::Json)).await
}

pub(super) async fn model_ready(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> OipResult<StatusCode> {
    let (name, t) = target(&name, None)?;
    blocking(move || loaded(&shared, &name, &t).map(|_| StatusCode::OK)).await
}

pub(super) async fn version_ready(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> OipResult<StatusCode> {
    let (name, t) = target(&name, Some(&version))?;
    blocking(move || loaded(&shared, &name, &t).map(|_| StatusCode::OK)).await
}

pub(super) async fn infer(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match target(&name, None) {
        Ok((name, t)) => run_infer(shared, name, t, headers, body).await,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn infer_version(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match target(&name, Some(&version)) {
        Ok((name, t)) => run_infer(shared, name, t, headers, body).await,
        Err(e) => e.into_response(),
    }
}

/// A request's input tensors: (name, shape, values).
type Tensors = Vec<(String, Vec<i64>, Vec<f32>)>;

/// The JSON header and the binary part after it.
fn split(headers: &HeaderMap, body: &[u8]) -> OipResult<(Value, usize)> {
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| bad("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length {n} is past the body's {} bytes",
                    body.len()
                )));
            }
            n
        }
        None => body.len(),
    };
    let header = crate::serving::input::tolerate_non_finite(&body[..json_len]);
    let v: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the request is not valid JSON: {e}")))?;
    Ok((v, json_len))
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// Every input tensor, its values as numbers (binary ones read from after the header).
fn tensors(req: &Value, binary: &[u8]) -> OipResult<Tensors> {
    let inputs = req["inputs"]
        .as_array()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("`inputs` is missing or empty"))?;
    let mut offset = 0usize;
    let mut out = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let name = t["name"].as_str().ok_or_else(|| bad(format!("inputs[{i}] has no name")))?.to_string();
        let shape: Vec<i64> = t["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("input `{name}` has no shape")))?
            .iter()
            .map(|d| {
                d.as_i64().filter(|d| *d >= 0).ok_or_else(|| bad(format!("input `{name}` has a bad shape")))
            })
            .collect::<OipResult<_>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d as usize))
            .ok_or_else(|| bad("shape too large"))?;
        let datatype = t["datatype"].as_str().unwrap_or("");
        let values: Vec<f32> = if let Some(size) = t["parameters"]["binary_data_size"].as_u64() {
            let size = size as usize;
            let bytes = binary
                .get(offset..offset.saturating_add(size))
                .ok_or_else(|| bad(format!("input `{name}`'s binary data is past the body's end")))?;
            offset += size;
            let width = match datatype {
                "FP32" | "INT32" => 4,
                "FP64" | "INT64" => 8,
                other => {
                    return Err(bad(format!("input `{name}` is {other}; send FP32, FP64, INT32 or INT64")));
                }
            };
            if Some(bytes.len()) != count.checked_mul(width) {
                return Err(bad(format!(
                    "input `{name}` has {} bytes for {count} {datatype} values",
                    bytes.len()
                )));
            }
            bytes
                .chunks_exact(width)
                .map(|c| match datatype {
                    "FP32" => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    "INT32" => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
                    "FP64" => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
                    _ => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
                })
                .collect()
        } else {
            if !matches!(datatype, "FP32" | "FP64" | "INT32" | "INT64" | "INT16" | "INT8" | "UINT8" | "FP16")
            {
                return Err(bad(format!(
                    "input `{name}` is {datatype}; send numbers (FP32, FP64, INT32, INT64)"
                )));
            }
            let mut flat = Vec::new();
            flatten(&t["data"], &mut flat);
            if flat.len() != count {
                return Err(bad(format!("input `{name}` has {} values for its shape {shape:?}", flat.len())));
            }
            flat.iter()
                .enumerate()
                .map(|(j, v)| match v {
                    Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN) as f32),
                    Value::String(s) if s == "NaN" => Ok(f32::NAN),
                    Value::String(s) if s.ends_with("Infinity") => Ok(f32::INFINITY),
                    other => Err(bad(format!("input `{name}`[{j}] is {other}, not a number"))),
                })
                .collect::<OipResult<_>>()?
        };
        out.push((name, shape, values));
    }
    Ok(out)
}

/// The rows of a request for a version: one [N, d] tensor, or one tensor per feature.
fn rows(l: &Loaded, ts: &Tensors) -> Result<(Vec<f32>, usize), Invalid> {
    let features = &l.model.features;
    let d = features.len();
    let invalid = |field: String, message: String| Invalid { field, message };
    let (x, n) = if let [(name, shape, values)] = ts.as_slice()
        && !features.contains(name)
    {
        let n = shape.first().copied().unwrap_or(0) as usize;
        if shape.len() != 2 || shape[1] as usize != d || n.checked_mul(d) != Some(values.len()) {
            return Err(invalid(
                format!("inputs.{name}"),
                format!(
                    "has shape {shape:?}; {} version {} takes [N, {d}] ({})",
                    l.name,
                    l.version,
                    features.join(", ")
                ),
            ));
        }
        (values.clone(), n)
    } else {
        // Every feature's tensor is found and checked before any row is made: its length
        // bounds the rows, and it came in the (capped) body.
        let mut columns = Vec::with_capacity(d);
        for f in features {
            let (_, shape, values) = ts.iter().find(|t| &t.0 == f).ok_or_else(|| {
                invalid(
                    format!("inputs.{f}"),
                    format!("is missing ({} version {} takes {})", l.name, l.version, features.join(", ")),
                )
            })?;
            columns.push((f, shape, values));
        }
        let n = columns.first().map_or(0, |c| c.2.len());
        for (f, shape, values) in &columns {
            if values.len() != n
                || shape.first().copied() != Some(n as i64)
                || shape.iter().skip(1).any(|s| *s != 1)
            {
                return Err(invalid(
                    format!("inputs.{f}"),
                    format!("has shape {shape:?}; every feature needs [{n}] or [{n}, 1]"),
                ));
            }
        }
        let mut x = vec![0f32; n * d];
        for (j, (_, _, values)) in columns.iter().enumerate() {
            for (r, v) in values.iter().enumerate() {
                x[r * d + j] = *v;
            }
        }
        if let Some((extra, _, _)) = ts.iter().find(|t| !features.contains(&t.0)) {
            return Err(invalid(
                format!("inputs.{extra}"),
                format!("is not a feature of {} version {}", l.name, l.version),
            ));
        }
        (x, n)
    };
    if n == 0 {
        return Err(invalid("inputs".into(), "has no rows".into()));
    }
    if let Some(at) = x.iter().position(|v| !v.is_finite()) {
        let what = if x[at].is_nan() { "NaN" } else { "infinite" };
        return Err(invalid(
            format!("inputs[{}].{}", at / d, features[at % d]),
            format!("is {what}; every feature needs a finite number"),
        ));
    }
    Ok((x, n))
}

async fn run_infer(
    shared: Arc<Shared>,
    name: String,
    t: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let done = blocking(move || {
        let (req, json_len) = split(&headers, &body)?;
        let ts = tensors(&req, &body[json_len..])?;
        let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let key = shared.serving.route_key(&name, &header, &Value::Null);
        let p = shared.serving.predict_with(&name, &t, key.as_deref(), |l| rows(l, &ts))?;
        Ok(answer(&req, &p))
    })
    .await;
    match done {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The outputs asked for (all by default), in JSON or, where asked, binary after the header.
fn answer(req: &Value, p: &Prediction) -> Response {
    let n = p.rows;
    let classes = &p.model.model.classes;
    let labels: Vec<&String> = p.classes().into_iter().map(|c| &classes[c]).collect();
    let all_binary = req["parameters"]["binary_data_output"].as_bool() == Some(true);
    let asked: Vec<(String, bool)> = match req["outputs"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap_or_default().to_string(),
                    o["parameters"]["binary_data"].as_bool().unwrap_or(all_binary),
                )
            })
            .collect(),
        _ => vec![("probabilities".into(), all_binary), ("label".into(), all_binary)],
    };
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for (name, as_binary) in asked {
        let mut o = Map::new();
        o.insert("name".into(), json!(name));
        match name.as_str() {
            "probabilities" => {
                o.insert("datatype".into(), json!("FP32"));
                o.insert("shape".into(), json!([n, classes.len()]));
                if as_binary {
                    let start = binary.len();
                    p.probabilities.iter().for_each(|v| binary.extend_from_slice(&v.to_le_bytes()));
                    o.insert("parameters".into(), json!({ "binary_data_size": binary.len() - start }));
                } else {
                    o.insert("data".into(), json!(p.probabilities));
                }
            }
            "label" => {
                o.insert("datatype".into(), json!("BYTES"));
                o.insert("shape".into(), json!([n]));
                if as_binary {
                    let start = binary.len();
                    for l in &labels {
                        binary.extend_from_slice(&(l.len() as u32).to_le_bytes());
                        binary.extend_from_slice(l.as_bytes());
                    }
                    o.insert("parameters".into(), json!({ "binary_data_size": binary.len() - start }));
                } else {
                    o.insert("data".into(), json!(labels));
                }
            }
            other => {
                return OipError(
                    StatusCode::BAD_REQUEST,
                    format!("there is no output `{other}` (outputs: probabilities, label)"),
                )
                .into_response();
            }
        }
        outputs.push(Value::Object(o));
    }
    let doc = json!({
        "model_name": p.model.name,
        "model_version": p.model.version.to_string(),
        "id": req["id"].as_str().map(str::to_string).unwrap_or_else(|| p.id.clone()),
        "parameters": { "sluice_prediction_id": p.id },
        "outputs": outputs,
    });
    if binary.is_empty() {
        return axum::Json(doc).into_response();
    }
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let json_len = bytes.len();
    bytes.extend_from_slice(&binary);
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    r
}

/// Errors under `/v2/` in the protocol's shape, `{"error": "..."}`, whichever layer answered
/// (a refused token, an unknown route, a full server), as Triton's clients read them.
pub(crate) async fn oip_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !req.uri().path().starts_with("/v2") {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return OipError(status, "the answer could not be read".into()).into_response();
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v["error"].is_string() => return Response::from_parts(parts, axum::body::Body::from(bytes)),
        Ok(v) => v["error"]["message"].as_str().unwrap_or("the request failed").to_string(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}
