//! Artifacts: the records of what attempts produced, one artifact's document, and its content
//! (checked against its digest before a byte is sent).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, run_id};
use crate::artifacts::{self, ArtifactError, Blobs};
use crate::server::Shared;
use crate::store::{ArtifactRecord, Direction, Origin};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    run: Option<String>,
    step: Option<String>,
    limit: Option<usize>,
}

/// The one document of an artifact: its content's facts, whether it still matches its
/// digest, and every attempt that produced it (`sluice artifact show` prints the same).
pub fn document(digest: &str, producers: &[ArtifactRecord], path: Option<String>, check: Value) -> Value {
    let (size, media_type) = producers.first().map_or((0, ""), |p| (p.size, p.media_type.as_str()));
    json!({
        "v": 1,
        "digest": digest,
        "size": size,
        "media_type": media_type,
        "path": path,
        "check": check,
        "produced_by": producers,
    })
}

/// Whether the content under `digest` matches it: `{ok}` or `{ok: false, error}`.
pub fn check_of(blobs: &Blobs, digest: &str) -> Value {
    match blobs.verify(digest) {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

/// The attempts that produced `digest` (at least one), or 404.
fn producers_of(store: &crate::store::Store, digest: &str) -> ApiResult<Vec<crate::store::ArtifactRecord>> {
    let producers = store.artifacts_with(digest)?;
    if producers.is_empty() {
        return Err(ApiError::not_found(format!("there is no artifact {digest}")));
    }
    Ok(producers)
}

fn digest_of(text: &str) -> ApiResult<String> {
    artifacts::normalize(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let run = q.run.as_deref().map(run_id).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and 1000, not {limit}")));
    }
    blocking(move || {
        let mut records = shared.engine.store().artifacts(run)?;
        if let Some(step) = &q.step {
            records.retain(|r| &r.step == step);
        }
        // Newest first.
        records.reverse();
        records.truncate(limit);
        Ok(Json(json!({ "v": 1, "artifacts": records })))
    })
    .await
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
) -> ApiResult<Json<Value>> {
    let digest = digest_of(&digest)?;
    blocking(move || {
        let store = shared.engine.store();
        let producers = producers_of(store, &digest)?;
        let blobs = store.blobs();
        let check = check_of(&blobs, &digest);
        Ok(Json(document(&digest, &producers, None, check)))
    })
    .await
}

/// The signed provenance of an artifact: the DSSE envelope of each attempt that produced it
/// (the instance's public key is at `/api/v1/signing-key`).
pub(super) async fn provenance(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
) -> ApiResult<Json<Value>> {
    let digest = digest_of(&digest)?;
    blocking(move || {
        let store = shared.engine.store();
        producers_of(store, &digest)?;
        let envelopes: Vec<Value> = store
            .provenance_of(&digest)?
            .into_iter()
            .map(|(r, envelope)| {
                json!({
                    "run": r.run, "pipeline": r.pipeline, "step": r.step, "item": r.item,
                    "attempt": r.attempt, "envelope": envelope,
                })
            })
            .collect();
        Ok(Json(json!({ "v": 1, "digest": digest, "provenance": envelopes })))
    })
    .await
}

/// Checks an artifact's content and its provenance's signatures with the instance's key.
pub(super) async fn verify(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
) -> ApiResult<Json<Value>> {
    let digest = digest_of(&digest)?;
    blocking(move || {
        let store = shared.engine.store();
        producers_of(store, &digest)?;
        let verified = store.verify_artifact(&digest, shared.engine.signing_key().public())?;
        Ok(Json(serde_json::to_value(verified).map_err(|e| ApiError::internal(e.to_string()))?))
    })
    .await
}

/// The instance's public signing key (what provenance and audit checkpoints are signed with).
pub(super) async fn signing_key(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let key = shared.engine.signing_key();
    Json(json!({
        "v": 1,
        "key_id": key.key_id(),
        "algorithm": "ed25519",
        "public_pem": key.public_pem(),
    }))
}

/// The content, checked first: a damaged artifact is a 409 with what it hashes to now, never
/// its bytes.
pub(super) async fn content(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    let digest = digest_of(&digest)?;
    let (reader, size, media_type) = blocking(move || {
        let store = shared.engine.store();
        let producers = producers_of(store, &digest)?;
        let first = &producers[0];
        let blobs = store.blobs();
        let failed = |e: ArtifactError| match e {
            e if e.is_damaged() => ApiError::new(StatusCode::CONFLICT, "damaged", e.to_string()),
            e @ ArtifactError::Missing(_) => ApiError::new(StatusCode::GONE, "gone", e.to_string()),
            e => ApiError::internal(e.to_string()),
        };
        blobs.verify(&digest).map_err(failed)?;
        let (reader, size) = blobs.reader(&digest).map_err(failed)?;
        Ok((reader, size, first.media_type.clone()))
    })
    .await?;
    let body = Body::from_stream(chunks(reader));
    // A stored file is a download, never a page of this origin: an HTML artifact must not run
    // script where the web UI's session cookie is sent.
    Ok((
        [
            (header::CONTENT_TYPE, media_type),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, "attachment".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
        ],
        body,
    )
        .into_response())
}

/// What a reader reads (a file, or a decrypting one), as a stream of chunks read off the
/// async threads.
pub(crate) fn chunks(
    reader: Box<dyn std::io::Read + Send>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let n = reader.read(&mut buf);
            (reader, buf, n)
        })
        .await;
        match read {
            Ok((_, _, Ok(0))) => None,
            Ok((reader, mut buf, Ok(n))) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(reader)))
            }
            Ok((_, _, Err(e))) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct LineageQuery {
    direction: Option<String>,
    depth: Option<usize>,
}

fn lineage_of(shared: Arc<Shared>, origin: Origin, q: LineageQuery) -> ApiResult<Json<Value>> {
    let direction = match q.direction.as_deref() {
        None | Some("upstream") => Direction::Upstream,
        Some("downstream") => Direction::Downstream,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "direction is `upstream` or `downstream`, not `{other}`"
            )));
        }
    };
    let depth = q.depth.unwrap_or(DEFAULT_DEPTH);
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(ApiError::bad_request(format!("depth must be between 1 and {MAX_DEPTH}, not {depth}")));
    }
    let graph = shared.engine.store().lineage(&origin, direction, depth)?;
    if graph.nodes.is_empty() {
        return Err(ApiError::not_found("nothing is recorded by that name"));
    }
    Ok(Json(serde_json::to_value(graph).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// How many attempts away a lineage query walks by default, and at most.
pub const DEFAULT_DEPTH: usize = 20;
pub const MAX_DEPTH: usize = 1000;

pub(super) async fn lineage(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
    Query(q): Query<LineageQuery>,
) -> ApiResult<Json<Value>> {
    let digest = digest_of(&digest)?;
    blocking(move || lineage_of(shared, Origin::Digest(digest), q)).await
}

pub(super) async fn step_lineage(
    State(shared): State<Arc<Shared>>,
    Path((run, step)): Path<(String, String)>,
    Query(q): Query<LineageQuery>,
) -> ApiResult<Json<Value>> {
    let run = run_id(&run)?;
    blocking(move || lineage_of(shared, Origin::Step { run, step }, q)).await
}

/// Why each task of a step reused a cached result or ran (`sluice cache explain`).
pub(super) async fn step_cache(
    State(shared): State<Arc<Shared>>,
    Path((run, step)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let run = run_id(&run)?;
    blocking(move || {
        let tasks = shared.engine.explain_cache(run, &step)?;
        Ok(Json(json!({ "v": 1, "tasks": tasks })))
    })
    .await
}

/// The query of `GET /api/v1/runs/{run}/metrics`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MetricsQuery {
    step: Option<String>,
}

/// A run's metric points (or one step's), in recorded order.
pub(super) async fn run_metrics(
    State(shared): State<Arc<Shared>>,
    Path(run): Path<String>,
    axum::extract::Query(q): axum::extract::Query<MetricsQuery>,
) -> ApiResult<Json<Value>> {
    let run = run_id(&run)?;
    blocking(move || {
        let points = shared.engine.metrics(run, q.step.as_deref())?;
        Ok(Json(json!({ "v": 1, "run": run, "metrics": points })))
    })
    .await
}

/// The body of `POST /api/v1/gc`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GcRequest {
    /// The retention, as `30d` (default 30d).
    #[serde(default)]
    pub keep: Option<String>,
    /// Only say what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// Removes stored files nothing within retention uses (`sluice gc`).
pub(super) async fn gc(
    State(shared): State<Arc<Shared>>,
    axum::extract::Extension(who): axum::extract::Extension<super::Principal>,
    axum::extract::Extension(request): axum::extract::Extension<super::RequestId>,
    super::JsonBody(body): super::JsonBody<GcRequest>,
) -> ApiResult<Json<Value>> {
    let keep = match body.keep.as_deref() {
        None => std::time::Duration::from_secs(30 * 24 * 3600),
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| ApiError::bad_request(format!("keep: `{text}` is not a duration ({e})")))?,
    };
    blocking(move || {
        // Runs go on while it works: files placed in the last minute are spared.
        let report = shared.engine.gc(keep, body.dry_run, std::time::Duration::from_secs(60))?;
        if !body.dry_run {
            let action = crate::security::audit::Action::new(who.actor(), "gc", "artifacts")
                .after(serde_json::to_value(&report).unwrap_or_default())
                .request(Some(&request.0));
            shared.engine.audit(action)?;
            shared.engine.store().flush()?;
        }
        Ok(Json(json!({ "v": 1, "gc": report })))
    })
    .await
}
