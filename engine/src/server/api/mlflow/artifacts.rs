//! MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/<path>`): what clients
//! upload (`mlflow.log_artifact`, a model's files) is kept in the content-addressed store,
//! read-only and deduplicated, and its path recorded; downloads are checked against their
//! digest on the way out; listings answer as MLflow's (names relative to the folder).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Fields, MlResult, MlflowError, blocking};
use crate::server::Shared;
use crate::server::api::Principal;
use crate::store::ProxyFile;

/// Where the proxy's routes are.
pub(crate) const PREFIX: &str = "/api/2.0/mlflow-artifacts/artifacts";

/// Checks a proxy path: relative, no empty, `.` or `..` segment, printable, at most 1024
/// bytes.
pub(crate) fn check_path(path: &str) -> MlResult<String> {
    let p = path.trim_start_matches('/');
    let ok = !p.is_empty()
        && p.len() <= 1024
        && !p.chars().any(|c| c.is_control() || c == '\\')
        && p.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(p.to_string())
    } else {
        Err(MlflowError::invalid(format!(
            "`{}` is not an artifact path: relative, without empty, `.` or `..` parts, at most 1024 bytes",
            crate::tracking::short(path)
        )))
    }
}

/// Whether a request is an upload to the proxy (its body is the file's bytes, streamed to
/// disk by the handler rather than read whole up front, and of any type).
pub(crate) fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PUT && path.starts_with(PREFIX) && path.len() > PREFIX.len()
}

/// Who may put a file at `path`: never under `registry/` (registered versions' files, which
/// only registering writes); in a run's folder (`<experiment>/<run>/artifacts/...`) whoever
/// may write to that run; elsewhere anyone with the route's permission but a step's token.
fn may_upload(store: &crate::store::Store, who: &Principal, path: &str) -> MlResult<()> {
    let forbidden =
        |message: String| MlflowError { status: StatusCode::FORBIDDEN, code: "PERMISSION_DENIED", message };
    if path.starts_with("registry/") {
        return Err(forbidden(
            "`registry/` holds registered versions' files: only registering a version writes there".into(),
        ));
    }
    let parts: Vec<&str> = path.splitn(4, '/').collect();
    if let [experiment, run, "artifacts", _] = parts.as_slice() {
        let Some(r) = store.tracking_run(run)? else {
            return Err(MlflowError::not_found(format!(
                "Run with id={} not found",
                crate::tracking::short(run)
            )));
        };
        if r.experiment.to_string() != *experiment {
            return Err(MlflowError::invalid(format!("run `{run}` is not in experiment {experiment}")));
        }
        return super::may_write(who, &r).map_err(|(_, m)| forbidden(m));
    }
    match who.scope {
        Some(_) => Err(forbidden(format!("`{}` uploads only into its own run's artifacts", who.name))),
        None => Ok(()),
    }
}

pub(super) async fn upload(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path(path): Path<String>,
    req: Request,
) -> MlResult<Json<Value>> {
    let path = check_path(&path)?;
    let (store, limit, idle) =
        (shared.engine.store().clone(), shared.opts.upload_limit, shared.opts.body_timeout);
    let tmp_dir = store.dir().join("artifacts").join("tmp");
    let (file, who) = {
        let (store, path) = (store.clone(), path.clone());
        blocking(move || {
            may_upload(&store, &who, &path)?;
            // The disk keeps its reserve for runs and the store.
            if let Some(free) = store.free_bytes()
                && free < crate::driver::MIN_FREE_BYTES
            {
                return Err(MlflowError {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    code: "RESOURCE_EXHAUSTED",
                    message: format!("the data folder has {free} bytes free: too little to take an upload"),
                });
            }
            std::fs::create_dir_all(&tmp_dir)
                .map_err(|e| MlflowError::internal(format!("cannot make {}: {e}", tmp_dir.display())))?;
            let file = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| {
                MlflowError::internal(format!("cannot make a file in {}: {e}", tmp_dir.display()))
            })?;
            Ok((file, who))
        })
        .await?
    };
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .await
        .map_err(|e| MlflowError::internal(format!("cannot write the upload: {e}")))?;
    let mut body = req.into_body().into_data_stream();
    let mut written: u64 = 0;
    loop {
        // Each piece within the body timeout: a sender that stalls is let go.
        let next = match tokio::time::timeout(idle, body.next()).await {
            Ok(n) => n,
            Err(_) => return Err(MlflowError::invalid(format!("the upload stalled for {idle:?}"))),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| MlflowError::invalid(format!("cannot read the upload: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(MlflowError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "INVALID_PARAMETER_VALUE",
                message: format!(
                    "the file is larger than the server's upload limit of {limit} bytes (--upload-limit)"
                ),
            });
        }
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
            .await
            .map_err(|e| MlflowError::internal(format!("cannot write the upload: {e}")))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(|e| MlflowError::internal(format!("cannot write the upload: {e}")))?;
    drop(out);
    let actor = who.actor();
    blocking(move || {
        let placed = store.blobs().place(file.path()).map_err(|e| MlflowError::internal(e.to_string()))?;
        // Write-once: a path keeps its first content (the same bytes again are fine).
        if let Some(old) = store.proxy_file(&path)?
            && old.digest != placed.digest
        {
            return Err(MlflowError::exists(format!(
                "an artifact is stored at `{}` already ({}); artifacts are written once",
                crate::tracking::short(&path),
                old.digest
            )));
        }
        let record = ProxyFile {
            v: 1,
            digest: placed.digest,
            size: placed.size,
            at: shared.engine.now_ms(),
            by: actor,
        };
        store.put_proxy_file(&path, &record)?;
        store.flush()?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn download(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
) -> MlResult<Response> {
    let path = check_path(&path)?;
    let (reader, size) = blocking(move || {
        let store = shared.engine.store();
        let Some(f) = store.proxy_file(&path)? else {
            return Err(MlflowError::not_found(format!(
                "no artifact at `{}`",
                crate::tracking::short(&path)
            )));
        };
        let blobs = store.blobs();
        blobs
            .verify(&f.digest)
            .map_err(|e| MlflowError::internal(format!("the artifact at `{path}` is damaged: {e}")))?;
        let (reader, size) = blobs.reader(&f.digest).map_err(|e| MlflowError::internal(e.to_string()))?;
        Ok((reader, size))
    })
    .await?;
    let body = Body::from_stream(crate::server::api::artifacts::chunks(reader));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

/// `?path=<folder>`: its files and folders, by name relative to it (`{}` for a file or
/// nothing: MLflow's client reads an empty listing as "not a folder").
pub(super) async fn list(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let folder = match f.str("path")?.filter(|p| !p.trim_matches('/').is_empty()) {
        Some(p) => Some(check_path(&p)?),
        None => None,
    };
    blocking(move || {
        let prefix = folder.as_deref().map(|p| format!("{}/", p.trim_end_matches('/'))).unwrap_or_default();
        let files = shared.engine.store().proxy_files(&prefix)?;
        let mut entries: std::collections::BTreeMap<String, Value> = Default::default();
        for (full, file) in files {
            let rest = &full[prefix.len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    entries.entry(dir.to_string()).or_insert_with(|| json!({ "path": dir, "is_dir": true }));
                }
                None => {
                    entries.insert(
                        rest.to_string(),
                        json!({ "path": rest, "is_dir": false, "file_size": file.size }),
                    );
                }
            }
        }
        if entries.is_empty() {
            return Ok(Json(json!({})));
        }
        Ok(Json(json!({ "files": entries.into_values().collect::<Vec<_>>() })))
    })
    .await
}

/// Reads an artifact-proxy folder's files as a registered version's (a `runs:/<id>/<path>`
/// or `mlflow-artifacts:/<path>` source): the folder's proxy path.
pub(crate) fn proxy_folder_of(
    source: &str,
    run_artifact_uri: impl Fn(&str) -> Option<String>,
) -> MlResult<String> {
    let path = if let Some(rest) = source.strip_prefix("mlflow-artifacts:") {
        // `mlflow-artifacts:/1/R/artifacts/model`, or with a host: `mlflow-artifacts://h:p/1/...`.
        let rest = rest.strip_prefix("//").map_or(rest, |r| r.split_once('/').map_or("", |(_, p)| p));
        rest.trim_start_matches('/').to_string()
    } else if let Some(rest) = source.strip_prefix("runs:/") {
        let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let base = run_artifact_uri(run).ok_or_else(|| {
            MlflowError::not_found(format!("Run with id={} not found", crate::tracking::short(run)))
        })?;
        let base =
            base.strip_prefix("mlflow-artifacts:").unwrap_or(&base).trim_start_matches('/').to_string();
        if sub.is_empty() { base } else { format!("{base}/{sub}") }
    } else if let Some(i) = source.find(PREFIX) {
        source[i + PREFIX.len()..].trim_start_matches('/').to_string()
    } else {
        return Err(MlflowError::invalid(format!(
            "the source `{}` is not in Sluice's artifact store: give `runs:/<run id>/<path>` or `mlflow-artifacts:/<path>` (log the model's files to the run first)",
            crate::tracking::short(source)
        )));
    };
    check_path(&path)
}
