//! The web UI: a page and its script and style, embedded in the binary (engine/ui/), served
//! at `/`; the DAG layout it draws (`.../graph`, laid out here with `rust-sugiyama` and kept
//! per DAG version); and the live stream of run and step changes it listens to
//! (`/api/v1/stream`, server-sent events from the driver's notices). Everything else the
//! page shows comes from the same JSON API as the CLI's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::runs::blocking;
use super::{ApiError, ApiResult, access, run_id};
use crate::compile::Plan;
use crate::driver::Notice;
use crate::server::Shared;

const INDEX: &str = include_str!("../../../ui/index.html");
const SCRIPT: &str = include_str!("../../../ui/app.js");
const STYLE: &str = include_str!("../../../ui/app.css");

/// What the page may load and do: its own script and style only, nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn file(Path(name): Path<String>) -> ApiResult<Response> {
    match name.as_str() {
        "app.js" => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        "app.css" => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::not_found(format!("the UI has no file `{name}`"))),
    }
}

/// Layouts by DAG version (a version never changes, so neither does its layout).
#[derive(Default)]
pub(crate) struct Layouts {
    by_version: Mutex<HashMap<String, Arc<Value>>>,
}

/// A step's box in the drawing, in pixels.
const NODE: (f64, f64) = (170.0, 36.0);
const GAP: f64 = 40.0;

/// Lays a plan out: each step a box (a mapped step is one box; its items are counted by the
/// page from the run), layers top to bottom, and the graph's separate parts packed in rows.
pub(crate) fn layout(plan: &Plan) -> Value {
    let n = plan.ids.len();
    let vertices: Vec<(u32, (f64, f64))> = (0..n as u32).map(|i| (i, NODE)).collect();
    let edges: Vec<(u32, u32)> = plan
        .core
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.upstream.iter().map(move |u| (*u, i as u32)))
        .collect();
    // Layers by longest path from the top (`Up`): the crate's default ranking (network
    // simplex, which shortens edges) took minutes on a connected 10,000-step DAG; this takes
    // about 60 ms in a release build (docs/benchmarks.md).
    let config = rust_sugiyama::configure::Config {
        vertex_spacing: GAP,
        ranking_type: rust_sugiyama::configure::RankingType::Up,
        ..Default::default()
    };
    let parts = rust_sugiyama::from_vertices_and_edges(&vertices, &edges, &config);
    // Pack the parts (a wide DAG of independent steps has thousands) left to right in rows.
    let area: f64 = parts.iter().map(|(_, w, h)| (w + NODE.0 + GAP) * (h + NODE.1 + GAP)).sum();
    // Rows about twice as wide as the whole is tall, and never narrower than the widest part.
    let widest = parts.iter().map(|(_, w, _)| w + NODE.0).fold(0.0, f64::max);
    let row_width = (area * 2.0).sqrt().max(widest).max(1600.0);
    let mut at = vec![(0.0, 0.0); n];
    let (mut x, mut y, mut row_height, mut width) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (coords, _, _) in &parts {
        // A part's extent from its boxes (the crate's width and height leave the boxes out).
        let (min_x, min_y, max_x, max_y) =
            coords.iter().fold((f64::MAX, f64::MAX, f64::MIN, f64::MIN), |(a, b, c, d), (_, (x, y))| {
                (a.min(*x), b.min(*y), c.max(*x), d.max(*y))
            });
        let (w, h) = (max_x - min_x + NODE.0, max_y - min_y + NODE.1);
        if x > 0.0 && x + w > row_width {
            x = 0.0;
            y += row_height + GAP * 2.0;
            row_height = 0.0;
        }
        for (v, (cx, cy)) in coords {
            at[*v] = (x + cx - min_x, y + cy - min_y);
        }
        x += w + GAP * 2.0;
        width = width.max(x);
        row_height = row_height.max(h);
    }
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let step = &plan.steps[i];
            json!({
                "id": plan.ids[i],
                "kind": step.kind.key(),
                "map": step.spec.map.is_some(),
                "x": at[i].0.round(),
                "y": at[i].1.round(),
            })
        })
        .collect();
    json!({
        "v": 1,
        "version": plan.hash,
        "node": { "width": NODE.0, "height": NODE.1 },
        "width": width.max(NODE.0).round(),
        "height": (y + row_height).max(NODE.1).round(),
        "nodes": nodes,
        "edges": edges,
    })
}

fn laid_out(shared: &Shared, plan: &Plan) -> Arc<Value> {
    let lock = || shared.layouts.by_version.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = lock().get(&plan.hash) {
        return v.clone();
    }
    // Made without the lock: other graphs are served meanwhile.
    let v = Arc::new(layout(plan));
    // A 10,000-step layout is about a megabyte: a few dozen versions are kept at most.
    let mut map = lock();
    if map.len() >= 32 {
        map.clear();
    }
    map.insert(plan.hash.clone(), v.clone());
    v
}

/// `GET /api/v1/pipelines/{name}/graph`: the pipeline's DAG as loaded now.
pub(super) async fn pipeline_graph(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = shared.catalog();
    let Some(e) = c.pipelines.get(&name) else {
        return Err(ApiError::not_found(format!("there is no pipeline `{name}`")));
    };
    let plan = e.plan.clone();
    blocking(move || Ok(Json((*laid_out(&shared, &plan)).clone()))).await
}

/// `GET /api/v1/runs/{run}/graph`: the DAG of the version a run runs.
pub(super) async fn run_graph(
    State(shared): State<Arc<Shared>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = run_id(&run)?;
    blocking(move || {
        let record = shared.engine.store().run(id)?;
        let plan = shared.engine.plan_of(&record)?;
        Ok(Json((*laid_out(&shared, &plan)).clone()))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Only this run's changes.
    run: Option<String>,
    /// End the stream after this many seconds (default: when the server stops).
    timeout_s: Option<u64>,
}

/// How often a stream says it is alive (a comment line, so that proxies keep it open) and
/// checks that its credentials still hold.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The longest `timeout_s` taken.
const MAX_STREAM: u64 = 24 * 3600;
/// Event streams open at once; past it, a new one gets 503 (each open page holds one).
pub(crate) const MAX_STREAMS: usize = 512;

/// `GET /api/v1/stream`: server-sent events, `run` (`{run, state}`) and `step` (`{run, step,
/// state, attempt}`), as the driver makes the changes durable. A client that falls behind
/// gets a `lagged` event and should read what it shows again. Ends when the server stops,
/// after `timeout_s`, when the token is revoked or the session ends, and (with `?run=`) once
/// that run has ended.
pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let only = q.run.as_deref().map(run_id).transpose()?;
    let Ok(slot) = shared.streams.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{MAX_STREAMS} event streams are open; retry shortly"),
        ));
    };
    let rx = shared.notices.subscribe();
    let end = q.timeout_s.map(|t| tokio::time::Instant::now() + Duration::from_secs(t.min(MAX_STREAM)));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    struct Live {
        rx: tokio::sync::broadcast::Receiver<Notice>,
        stopping: tokio::sync::watch::Receiver<u32>,
        beat: tokio::time::Interval,
        shared: Arc<Shared>,
        headers: axum::http::HeaderMap,
        first: bool,
        over: bool,
        /// Given back when the stream ends.
        _slot: tokio::sync::OwnedSemaphorePermit,
    }
    let state = Live {
        rx,
        stopping: shared.stopping.clone(),
        beat,
        shared,
        headers,
        first: true,
        over: false,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(state, move |mut s| async move {
        if s.first {
            s.first = false;
            return Some((
                Ok::<Bytes, std::io::Error>(Bytes::from_static(b"retry: 2000\n: connected\n\n")),
                s,
            ));
        }
        if s.over {
            return None;
        }
        loop {
            let frame = tokio::select! {
                n = s.rx.recv() => match n {
                    Ok(Notice::Run { run, state }) if only.is_none_or(|o| o == run) => {
                        // A stream of one run ends with it.
                        s.over = only.is_some() && state.is_terminal();
                        format!("event: run\ndata: {}\n\n", json!({ "run": run, "state": state }))
                    }
                    Ok(Notice::Step { run, step, state, attempt }) if only.is_none_or(|o| o == run) => {
                        format!(
                            "event: step\ndata: {}\n\n",
                            json!({ "run": run, "step": step, "state": state, "attempt": attempt })
                        )
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {}\n\n", json!({ "missed": n })),
                    Err(RecvError::Closed) => return None,
                },
                _ = s.beat.tick() => {
                    if !access::still_authenticated(&s.shared, &s.headers) {
                        return None;
                    }
                    ": alive\n\n".to_string()
                }
                _ = s.stopping.changed() => return None,
                _ = tokio::time::sleep_until(end.unwrap_or_else(tokio::time::Instant::now)), if end.is_some() => return None,
            };
            return Some((Ok(Bytes::from(frame)), s));
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(events),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, yaml).unwrap();
        crate::compile::compile_file(&path).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn layers_go_down_the_edges_and_boxes_do_not_overlap() {
        let p = plan(
            "name: g\nsteps:\n  a: {process: {command: [\"true\"]}}\n  b: {process: {command: [\"true\"]}, needs: [a]}\n  c: {process: {command: [\"true\"]}, needs: [a], map: [1, 2, 3]}\n  d: {process: {command: [\"true\"]}, needs: [b, c]}\n  lone: {process: {command: [\"true\"]}}\n",
        );
        let g = layout(&p);
        let nodes = g["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 5);
        let at = |id: &str| {
            let n = nodes.iter().find(|n| n["id"] == id).unwrap();
            (n["x"].as_f64().unwrap(), n["y"].as_f64().unwrap())
        };
        for (from, to) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
            assert!(at(from).1 < at(to).1, "{from} is above {to}: {g}");
        }
        assert_eq!(nodes.iter().find(|n| n["id"] == "c").unwrap()["map"], true);
        for (i, m) in nodes.iter().enumerate() {
            for n in &nodes[i + 1..] {
                let dx = (m["x"].as_f64().unwrap() - n["x"].as_f64().unwrap()).abs();
                let dy = (m["y"].as_f64().unwrap() - n["y"].as_f64().unwrap()).abs();
                assert!(dx >= NODE.0 || dy >= NODE.1, "{} and {} overlap: {g}", m["id"], n["id"]);
            }
        }
        assert_eq!(g["edges"].as_array().unwrap().len(), 4);
    }
}
