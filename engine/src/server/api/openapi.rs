//! The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`. Request body schemas
//! are generated from the handlers' own types, so they cannot drift from what is parsed.

use axum::Json;
use serde_json::{Value, json};

use super::artifacts::GcRequest;
use super::pipelines::Backfill;
use super::runs::{RetryRun, StartRun, Waited};
use crate::driver::RunReport;

fn op(summary: &str, params: &[(&str, &str, &str)], body: Option<&str>, answers: &[(&str, &str)]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|(name, place, what)| {
            json!({ "name": name, "in": place, "required": *place == "path", "description": what, "schema": { "type": "string" } })
        })
        .collect();
    let mut responses = serde_json::Map::new();
    for (code, what) in answers {
        responses.insert(code.to_string(), json!({ "description": what }));
    }
    let mut o = json!({ "summary": summary, "parameters": parameters, "responses": responses });
    if let Some(schema) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
        });
    }
    o
}

/// Names the schema of an operation's 200 answer.
fn answers(mut o: Value, schema: &str) -> Value {
    o["responses"]["200"]["content"] =
        json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } });
    o
}

const ERR: (&str, &str) = ("4XX", "An error: `{v, error: {code, message}}`");

/// The schemas of the bodies and answers, each named once under `#/components/schemas`, so
/// that the references between them resolve inside this document.
fn schemas() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    generator.subschema_for::<StartRun>();
    generator.subschema_for::<GcRequest>();
    generator.subschema_for::<RetryRun>();
    generator.subschema_for::<Backfill>();
    generator.subschema_for::<RunReport>();
    generator.subschema_for::<Waited>();
    generator.subschema_for::<super::admin::CreateToken>();
    generator.subschema_for::<super::models::MoveAlias>();
    generator.subschema_for::<super::runs::Decide>();
    generator.subschema_for::<super::runs::SetTags>();
    generator.subschema_for::<super::models::Rollback>();
    generator.subschema_for::<super::models::Protect>();
    generator.subschema_for::<super::rollouts::StartBody>();
    generator.subschema_for::<super::rollouts::ControlBody>();
    generator.subschema_for::<super::session::Login>();
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Event".into(),
        json!({ "type": "object", "description": "Any JSON object; for `alertmanager`, the webhook notification (version 4)." }),
    );
    Value::Object(schemas.into_iter().collect())
}

pub(super) async fn document() -> Json<Value> {
    Json(with_permissions(with_mlflow(paths())))
}

/// MLflow's routes (`/api/2.0/mlflow/...`), described from their own table: their fields and
/// answers are MLflow's (docs/mlflow.md).
fn with_mlflow(mut doc: Value) -> Value {
    for r in super::mlflow::routes() {
        let params: Vec<(&str, &str, &str)> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| (name.trim_start_matches('*'), "path", "a path in the artifact store"))
            .collect();
        let method = r.method.as_str().to_ascii_lowercase();
        doc["paths"][r.path][&method] = op(
            r.summary,
            &params,
            None,
            &[("200", "MLflow's answer"), ("4XX", "an MLflow error: `{error_code, message}`")],
        );
    }
    doc
}

/// Marks every operation with the permission the route table gives it (and the roles that
/// hold it), and the bearer scheme.
fn with_permissions(mut doc: Value) -> Value {
    for e in super::endpoints() {
        let method = e.method.as_str().to_ascii_lowercase();
        let op = &mut doc["paths"][e.path][&method];
        if !op.is_object() {
            // A route the document does not describe: the test of the document finds it.
            continue;
        }
        let roles: Vec<&str> = e.permission.roles().iter().map(|r| r.as_str()).collect();
        op["x-sluice-permission"] = json!(e.permission.as_str());
        op["x-sluice-roles"] = json!(roles);
        op["security"] = if e.permission == crate::security::Permission::Public {
            json!([])
        } else {
            json!([{ "bearer": [] }])
        };
        if e.permission != crate::security::Permission::Public {
            op["responses"]["401"] =
                json!({ "description": "no token, or an invalid, expired or revoked one" });
            op["responses"]["403"] =
                json!({ "description": format!("the token's role is not one of {}", roles.join(", ")) });
        }
    }
    doc["components"]["securitySchemes"] = json!({ "bearer": { "type": "http", "scheme": "bearer" } });
    doc["security"] = json!([{ "bearer": [] }]);
    doc
}

fn paths() -> Value {
    let run = ("run", "path", "A run id, such as `12` (`r12` is accepted too)");
    let name = ("name", "path", "A pipeline name");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice API",
            "version": "1",
            "description": "Pipelines, runs, logs and events of a `sluice serve` process. Every answer carries `v`, the payload version. Errors are `{v, error: {code, message}}` with a 4xx or 5xx status; 429 and 503 carry Retry-After."
        },
        "paths": {
            "/api/v1/health": { "get": op("Liveness: the process answers", &[], None, &[("200", "ok")]) },
            "/api/v1/ready": { "get": op("Readiness: pipelines loaded and not shutting down", &[], None, &[("200", "ready"), ("503", "shutting down")]) },
            "/api/v1/openapi.json": { "get": op("This document", &[], None, &[("200", "OpenAPI 3.1")]) },
            "/": { "get": op("The web UI's page (its script and style are under /ui/)", &[], None, &[("200", "HTML")]) },
            "/ui/{file}": { "get": op("The web UI's script (app.js) and style (app.css), embedded in the binary", &[("file", "path", "app.js or app.css")], None, &[("200", "the file"), ERR]) },
            "/ui/login": { "post": op("Opens a web UI session for a token: an HttpOnly, SameSite=Strict cookie; the answer has the session's CSRF token", &[], Some("Login"), &[("200", "`{name, role, permissions, csrf}`"), ERR]) },
            "/ui/logout": { "post": op("Ends the web UI session (needs its X-CSRF-Token)", &[], None, &[("200", "logged out"), ERR]) },
            "/ui/session": { "get": op("Who the session (or token) is, what it may do, and the session's CSRF token", &[], None, &[("200", "`{name, role, permissions, csrf}`"), ERR]) },
            "/api/v1/stream": { "get": op("Server-sent events of run and step changes (`run`, `step`, `lagged`)", &[("run", "query", "only this run's changes"), ("timeout_s", "query", "end the stream after this many seconds")], None, &[("200", "text/event-stream"), ERR]) },
            "/api/v1/pipelines/{name}/graph": { "get": op("The pipeline's DAG laid out in layers (boxes in pixels, edges by step index)", &[("name", "path", "a pipeline")], None, &[("200", "`{nodes, edges, width, height}`"), ERR]) },
            "/api/v1/runs/{run}/graph": { "get": op("The DAG of the version a run runs, laid out", &[("run", "path", "a run id")], None, &[("200", "`{nodes, edges, width, height}`"), ERR]) },
            "/metrics": { "get": op("Prometheus metrics (text format 0.0.4): runs, steps, queue, events, HTTP, cache, serving, drift, process", &[], None, &[("200", "the metrics"), ERR]) },
            "/api/v1/pipelines": { "get": op("Pipelines the server runs, and files it could not load", &[], None, &[("200", "`{pipelines, invalid}`")]) },
            "/api/v1/pipelines/{name}": { "get": op("One pipeline, with its stored versions", &[name], None, &[("200", "the pipeline"), ERR]) },
            "/api/v1/pipelines/{name}/runs": { "post": op("Start a run", &[name], Some("StartRun"), &[("201", "`{run}`"), ("400", "bad params or body"), ("404", "no such pipeline"), ("413", "body too large"), ("503", "shutting down")]) },
            "/api/v1/pipelines/{name}/backfill": { "post": op("Create the runs of the schedule's slots between two instants (slots already run are not run again)", &[name], Some("Backfill"), &[("201", "`{created, existing, failed}`"), ERR]) },
            "/api/v1/runs": { "get": op("Runs, newest first (or as `order_by` says)", &[("pipeline", "query", "only this pipeline"), ("state", "query", "pending, running, succeeded, failed, cancelled, interrupted"), ("trigger", "query", "manual, api, cron, backfill, alert, event, retry"), ("before", "query", "only runs older than this id"), ("limit", "query", "at most this many (default 50, max 1000)"), ("filter", "query", "MLflow's search grammar over metrics (each key's newest value, or `<step>.<key>`), params, tags and attributes (run_id, pipeline, state, trigger, actor, start_time, end_time, duration): `metrics.auc > 0.9 and params.lr = '0.01'`"), ("order_by", "query", "`metrics.auc DESC, attributes.start_time`")], None, &[("200", "`{runs}`"), ("400", "a filter or order that does not parse: the message names the column"), ERR]) },
            "/api/v1/runs/{run}/tags": { "post": op("Set a run's tags (an empty value removes one); audited", &[run], Some("SetTags"), &[("200", "`{run, tags}`"), ERR]) },
            "/api/v1/compare": { "get": op("Runs side by side: params (the differing ones marked), metrics (the best marked: lowest for losses and errors, else highest), step durations", &[("runs", "query", "run ids, comma-separated: `12,14`")], None, &[("200", "`{runs, params, metrics, steps}`"), ERR]) },
            "/api/v1/runs/{run}": { "get": answers(op("The run report: its record, and per step the state, tasks, attempts and outputs (the document `sluice show --output json` prints)", &[run], None, &[("200", "the run"), ERR]), "RunReport") },
            "/api/v1/runs/{run}/wait": { "get": answers(op("Answer when the run has ended, or after `timeout_s` (default 30, max 300); `done` says which", &[run, ("timeout_s", "query", "seconds")], None, &[("200", "the run with `done`"), ERR]), "Waited") },
            "/api/v1/runs/{run}/cancel": { "post": op("Cancel a run", &[run], None, &[("202", "cancel requested"), ("409", "already ended"), ERR]) },
            "/api/v1/runs/{run}/retry": { "post": op("Run again from a step: a new run that reuses the results of the steps before it", &[run], Some("RetryRun"), &[("201", "`{run}`"), ("404", "no such run, or no such step"), ("409", "the run has not ended"), ERR]) },
            "/api/v1/runs/{run}/steps/{step}/logs": { "get": op("A step's log (every attempt) as text; `follow=true` streams until the run ends", &[run, ("step", "path", "a step id"), ("follow", "query", "true to stream"), ("attempt", "query", "only this attempt")], None, &[("200", "text/plain"), ERR]) },
            "/api/v1/artifacts": { "get": op("Artifacts attempts produced, newest first", &[("run", "query", "only this run"), ("step", "query", "only this step"), ("limit", "query", "at most this many (default 100, max 1000)")], None, &[("200", "`{artifacts}`"), ERR]) },
            "/api/v1/artifacts/{digest}": { "get": op("One artifact: size, media type, whether its content still matches its digest, and every attempt that produced it", &[("digest", "path", "sha256:<64 hex digits>")], None, &[("200", "`{digest, size, media_type, check, produced_by}`"), ERR]) },
            "/api/v1/artifacts/{digest}/content": { "get": op("The artifact's bytes, checked against its digest first", &[("digest", "path", "sha256:<64 hex digits>")], None, &[("200", "the content"), ("409", "the stored content no longer matches its digest"), ("410", "the content is gone"), ERR]) },
            "/api/v1/artifacts/{digest}/provenance": { "get": op("The signed provenance of an artifact: the DSSE envelope (in-toto Statement v1, SLSA Provenance v1) of each attempt that produced it", &[("digest", "path", "sha256:<64 hex digits>")], None, &[("200", "`{digest, provenance: [{run, pipeline, step, item, attempt, envelope}]}`"), ERR]) },
            "/api/v1/artifacts/{digest}/verify": { "get": op("Checks an artifact's content against its digest and its provenance's signatures against the instance's key", &[("digest", "path", "sha256:<64 hex digits>")], None, &[("200", "`{digest, ok, content, key_id, attestations}`"), ERR]) },
            "/api/v1/signing-key": { "get": op("The instance's public ed25519 key, which signs provenance and audit checkpoints", &[], None, &[("200", "`{key_id, algorithm, public_pem}`"), ERR]) },
            "/api/v1/lineage/{digest}": { "get": op("The lineage graph of an artifact or dataset version: upstream, what made it and what that read, down to the raw files; downstream, what read it and what that made", &[("digest", "path", "sha256:<64 hex digits>"), ("direction", "query", "upstream (default) or downstream"), ("depth", "query", "attempts away at most (default 20)")], None, &[("200", "`{nodes, edges, runs}`"), ERR]) },
            "/api/v1/gc": { "post": op("Remove stored artifact files that no run within retention (still going, or ended within `keep`) and no cache entry younger than that uses; cache entries older than `keep` are removed first; files placed in the last minute are spared (runs may be recording them)", &[], Some("GcRequest"), &[("200", "`{gc: {dry_run, keep_ms, removed, removed_bytes, kept, kept_bytes, recent, cache_entries_removed}}`"), ("400", "bad body"), ERR]) },
            "/api/v1/runs/{run}/steps/{step}/cache": { "get": op("Why each task of a step reused a cached result or ran: the verdict, the key and its components, and on a miss what changed since the step's newest cached result", &[run, ("step", "path", "a step id")], None, &[("200", "`{tasks: [{run, step, item, attempt, key, verdict, summary, changes, compared_with, components}]}`"), ERR]) },
            "/api/v1/runs/{run}/metrics": { "get": op("A run's metric points in recorded order: what its steps appended to `$SLUICE_METRICS` (read as it grows), and the metrics WASM and train steps report", &[run, ("step", "query", "only this step's")], None, &[("200", "`{run, metrics: [{task, item, attempt, key, value, step, timestamp}]}`"), ERR]) },
            "/api/v1/runs/{run}/steps/{step}/lineage": { "get": op("The lineage graph of a step's attempts in a run", &[run, ("step", "path", "a step id"), ("direction", "query", "upstream (default) or downstream"), ("depth", "query", "attempts away at most (default 20)")], None, &[("200", "`{nodes, edges, runs}`"), ERR]) },
            "/api/v1/runs/{run}/steps/{step}/approve": { "post": op("Approve a waiting `approval:` step (needs its role; never the one who started the run); it succeeds and the run goes on", &[run, ("step", "path", "a step id")], Some("Decide"), &[("200", "`{decision}`"), ("403", "a lower role, or the run's starter"), ("404", "no such run or step"), ("422", "not an approval step, not waiting, or decided already"), ERR]) },
            "/api/v1/runs/{run}/steps/{step}/reject": { "post": op("Reject a waiting `approval:` step: it fails for good, and what needs it does not run", &[run, ("step", "path", "a step id")], Some("Decide"), &[("200", "`{decision}`"), ("403", "a lower role, or the run's starter"), ("404", "no such run or step"), ("422", "not an approval step, not waiting, or decided already"), ERR]) },
            "/api/v1/models": { "get": op("Registered models: versions, aliases, protected aliases", &[], None, &[("200", "`{models}`"), ERR]) },
            "/api/v1/models/{name}": { "get": op("A registered model: its record, versions (newest first) and aliases", &[("name", "path", "a model name")], None, &[("200", "`{model, aliases, versions}`"), ERR]) },
            "/api/v1/models/{name}/versions/{version}": { "get": op("A version whole (files, source run, metrics, params, input schema, signed registration); with `check=true`, whether it checks now: its files against their digests (hashed again), its registration's signature, its attempt's provenance", &[("name", "path", "a model name"), ("version", "path", "a version number"), ("check", "query", "true: check it now")], None, &[("200", "`{version, aliases, check}`"), ERR]) },
            "/api/v1/models/{name}/history": { "get": op("Every move of the model's aliases, oldest first: from, to, actor, time, reason, and the run, gate and approval that caused it", &[("name", "path", "a model name"), ("alias", "query", "only this alias")], None, &[("200", "`{model, moves}`"), ERR]) },
            "/api/v1/models/{name}/diff": { "get": op("Two versions side by side: metrics with their change, params, input schema, the data they were trained on", &[("name", "path", "a model name"), ("from", "query", "a version"), ("to", "query", "a version")], None, &[("200", "`{from, to, metrics, params, schema_changed, data}`"), ERR]) },
            "/api/v1/models/{name}/aliases/{alias}": { "post": op("Point an alias at a version. Refused (422) when the version does not check; a protected alias needs an approver (403). The move is kept and audited.", &[("name", "path", "a model name"), ("alias", "path", "an alias")], Some("MoveAlias"), &[("200", "`{move}`"), ("403", "a protected alias"), ("404", "no such model or version"), ("422", "the version does not check"), ERR]) },
            "/api/v1/models/{name}/aliases/{alias}/rollback": { "post": op("Move an alias back to the version it pointed at before its last move (a protected alias needs an approver)", &[("name", "path", "a model name"), ("alias", "path", "an alias")], Some("Rollback"), &[("200", "`{move}`"), ("404", "no such alias"), ("422", "nothing to go back to, or it does not check"), ERR]) },
            "/api/v1/models/{name}/aliases/{alias}/protect": { "post": op("Protect an alias (only approvers, or a promote step after a passed gate and an approval, move it) or let it go", &[("name", "path", "a model name"), ("alias", "path", "an alias")], Some("Protect"), &[("200", "`{protected}`"), ERR]) },
            "/api/v1/models/{name}/predict": { "post": op("Predictions of a served model: `name` alone is served by its `production` alias (or its rollout's routing), `name@alias` by that alias. Body `{rows: [...]}` (rows as objects by feature name or lists in the feature order; also MLflow's `instances`, `inputs`, `dataframe_records`, `dataframe_split`); one batch per request", &[("name", "path", "a model name, or `name@alias`")], None, &[("200", "`{model, version, alias, request_id, classes, predictions, probabilities}`"), ("404", "no such model, alias or version"), ("409", "the version does not verify, or is not a Sluice-trained model"), ("422", "an input that does not fit the version's features, naming the field"), ERR]) },
            "/api/v1/models/{name}/versions/{version}/predict": { "post": op("Predictions of one version (as `/predict`)", &[("name", "path", "a model name"), ("version", "path", "a version number")], None, &[("200", "`{model, version, request_id, classes, predictions, probabilities}`"), ("422", "an input that does not fit, naming the field"), ERR]) },
            "/api/v1/models/{name}/feedback": { "post": op("Ground truth for an earlier prediction: `{request_id, label}` (or `labels`, one per row); online accuracy and AUC per version", &[("name", "path", "a model name")], None, &[("200", "`{model, version, request_id, rows}`"), ("404", "no prediction with that request id"), ("422", "a label that is not a class"), ERR]) },
            "/api/v1/models/{name}/serving": { "get": op("Each served version's record: requests, rows, failures, error rate, p50 and p99 latency, window of served rows, feedback, online accuracy and AUC", &[("name", "path", "a model name")], None, &[("200", "`{model, versions}`"), ERR]) },
            "/api/v1/rollouts": {
                "get": op("Rollouts, newest first: model, alias, candidate and stable versions, status, the candidate's share, stage, measurements", &[("model", "query", "only this model's")], None, &[("200", "`{rollouts}`"), ERR]),
                "post": op("Start a rollout of a version onto an alias (canary steps or blue-green, in Argo Rollouts' vocabulary). Refused (409) while another rolls out the model", &[], Some("StartBody"), &[("201", "`{rollout}`"), ("404", "no such version"), ("409", "a rollout of the model runs"), ("422", "a strategy that cannot run"), ERR]),
            },
            "/api/v1/rollouts/{target}": { "get": op("One rollout (by id, or a model's newest) with the model's serving records", &[("target", "path", "a rollout id or a model name")], None, &[("200", "`{rollout, serving}`"), ERR]) },
            "/api/v1/rollouts/{target}/pause": { "post": op("Pause a rollout (weights stay)", &[("target", "path", "a rollout id or a model name")], Some("ControlBody"), &[("200", "`{rollout}`"), ERR]) },
            "/api/v1/rollouts/{target}/resume": { "post": op("Resume a paused rollout (an open pause, or after an inconclusive analysis)", &[("target", "path", "a rollout id or a model name")], Some("ControlBody"), &[("200", "`{rollout}`"), ERR]) },
            "/api/v1/rollouts/{target}/abort": { "post": op("Abort: the candidate's share back to 0, the alias on the stable version (switched back at once after a blue-green switch)", &[("target", "path", "a rollout id or a model name")], Some("ControlBody"), &[("200", "`{rollout}`"), ERR]) },
            "/api/v1/rollouts/{target}/promote": { "post": op("Skip what remains: the candidate takes the alias now", &[("target", "path", "a rollout id or a model name")], Some("ControlBody"), &[("200", "`{rollout}`"), ERR]) },
            "/api/v1/models/{name}/drift": { "get": op("The last check of the model's live drift monitor (`monitor:` in a pipeline): per feature the test, statistic, p-value and verdict; the share of drifted features and the verdict", &[("name", "path", "a model name")], None, &[("200", "`{model, drift}`"), ERR]) },
            "/v2": { "get": op("Open Inference Protocol: server metadata", &[], None, &[("200", "`{name, version, extensions}`")]) },
            "/v2/health/live": { "get": op("Open Inference Protocol: liveness", &[], None, &[("200", "live")]) },
            "/v2/health/ready": { "get": op("Open Inference Protocol: readiness", &[], None, &[("200", "ready"), ("503", "shutting down")]) },
            "/v2/models/{name}": { "get": op("Open Inference Protocol: the served version's metadata (inputs, outputs)", &[("name", "path", "a model name, or `name@alias`")], None, &[("200", "`{name, versions, platform, inputs, outputs}`"), ("4XX", "`{error}`")]) },
            "/v2/models/{name}/ready": { "get": op("Open Inference Protocol: whether the served version loads", &[("name", "path", "a model name, or `name@alias`")], None, &[("200", "ready"), ("4XX", "`{error}`")]) },
            "/v2/models/{name}/versions/{version}": { "get": op("Open Inference Protocol: one version's metadata", &[("name", "path", "a model name"), ("version", "path", "a version number")], None, &[("200", "`{name, versions, platform, inputs, outputs}`"), ("4XX", "`{error}`")]) },
            "/v2/models/{name}/versions/{version}/ready": { "get": op("Open Inference Protocol: whether one version loads", &[("name", "path", "a model name"), ("version", "path", "a version number")], None, &[("200", "ready"), ("4XX", "`{error}`")]) },
            "/v2/models/{name}/infer": { "post": op("Open Inference Protocol: inference (JSON tensors or the binary tensor extension); input one [N, features] tensor or one tensor per feature; outputs `probabilities` and `label`", &[("name", "path", "a model name, or `name@alias`")], None, &[("200", "`{model_name, model_version, id, outputs}`"), ("4XX", "`{error}`")]) },
            "/v2/models/{name}/versions/{version}/infer": { "post": op("Open Inference Protocol: inference by one version", &[("name", "path", "a model name"), ("version", "path", "a version number")], None, &[("200", "`{model_name, model_version, id, outputs}`"), ("4XX", "`{error}`")]) },
            "/api/v1/events": { "get": op("Received events, newest first, with what became of each", &[("source", "query", "only this source"), ("status", "query", "matched, deduplicated, accepted, rejected, skipped"), ("before", "query", "only ids below this"), ("limit", "query", "at most this many")], None, &[("200", "`{total, events}`"), ERR]) },
            "/api/v1/tokens": {
                "get": op("Tokens: name, role, state, expiry (never their secrets)", &[], None, &[("200", "`{tokens}`"), ERR]),
                "post": op("Make a token; the answer holds its secret, shown this once", &[], Some("CreateToken"), &[("201", "`{token, record}`"), ("400", "bad name, role or expiry"), ("409", "an active token has that name")])
            },
            "/api/v1/tokens/{name}/revoke": { "post": op("Revoke the active tokens of a name (or id)", &[("name", "path", "a token's name or id")], None, &[("200", "`{revoked}`"), ("404", "no active token of that name")]) },
            "/api/v1/audit": { "get": op("The audit log, oldest first", &[("since", "query", "an instant (RFC 3339), a sequence (`#120`) or a span back from now (`24h`)"), ("actor", "query", "`token:ci`, or just `ci`"), ("action", "query", "`run.start`, or `run` for every run action"), ("limit", "query", "the newest this many (default 1000)")], None, &[("200", "`{entries}`"), ERR]) },
            "/api/v1/audit/verify": { "get": op("Check the audit log's hash chain and signed checkpoints; names the first entry edited, deleted, reordered or cut off", &[], None, &[("200", "`{verdict: {entries, checkpoints, covered_to, problem}}`"), ERR]) },
            "/api/v1/events/{key}": {
                "get": op("One received event by id", &[("key", "path", "the event id")], None, &[("200", "`{event}`"), ERR]),
                "post": op("Send an event. Source `alertmanager` takes Alertmanager's webhook (version 4); any other source takes JSON matched against `on: - webhook: {source}`. An `Idempotency-Key` header makes repeats start nothing more.", &[("key", "path", "the source")], Some("Event"), &[("202", "`{event, status, reason, runs, details}`"), ("400", "malformed"), ("413", "too large"), ("422", "matched but the params are wrong"), ("429", "too many requests in flight")])
            }
        },
        "components": { "schemas": schemas() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_exactly_the_routes_of_the_table_each_with_its_permission() {
        let doc = with_permissions(with_mlflow(paths()));
        let mut described = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["x-sluice-permission"].is_string(), "{method} {path} has no permission");
                described.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let routes: std::collections::BTreeSet<(String, String)> =
            super::super::endpoints().iter().map(|e| (e.method.to_string(), e.path.to_string())).collect();
        assert_eq!(described, routes, "the OpenAPI document and the route table differ");
    }
}
