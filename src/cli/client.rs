//! Commands that talk to a running `sluice serve`: `trigger`, `status`, `retry`, `backfill`
//! and (when a server owns the data folder) `cancel`. The server is `--server URL`, else
//! `$SLUICE_SERVER`, else the address the server wrote to `<data dir>/server.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use sluice_engine::driver::RunReport;
use sluice_engine::scheduler::RunState;

use super::parse_run_id;
use crate::Output;

/// A client of one server.
pub(crate) struct Api {
    base: String,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The bearer token sent with every request.
    token: Option<String>,
}

/// The token the CLI sends: `$SLUICE_TOKEN`, else the first admin token the server left in
/// the data folder (readable by the folder's owner only).
pub(crate) fn token(data_dir: &Path) -> Option<String> {
    if let Ok(t) = std::env::var("SLUICE_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let file = data_dir.join(sluice_engine::server::ADMIN_TOKEN_FILE);
    std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The server's address, if one can be found.
pub(crate) fn server_url(data_dir: &Path, flag: Option<&str>) -> Option<String> {
    server(data_dir, flag).map(|(url, _)| url)
}

/// The server's address, and the certificate its `server.json` names when it serves HTTPS
/// (trusted for that address, a self-signed one included).
fn server(data_dir: &Path, flag: Option<&str>) -> Option<(String, Option<PathBuf>)> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Some((url.trim_end_matches('/').to_string(), None));
    }
    let text = std::fs::read_to_string(data_dir.join(sluice_engine::server::SERVER_FILE)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let url = v["url"].as_str()?.to_string();
    Some((url, v["tls_cert"].as_str().map(PathBuf::from)))
}

/// The TLS set-up of the client: the system's roots, `$SLUICE_CA_CERT` (a PEM file of
/// certificates to trust besides) and the certificate the local server named. Only an
/// https address loads the roots.
fn tls_config(https: bool, server_cert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let extra = std::env::var_os("SLUICE_CA_CERT").filter(|v| !v.is_empty()).map(PathBuf::from);
        for file in extra.iter().map(PathBuf::as_path).chain(server_cert) {
            for cert in sluice_engine::server::tls::read_certs(file)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{} holds a certificate rustls cannot use", file.display()))?;
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Api {
    pub(crate) fn new(data_dir: &Path, flag: Option<&str>) -> anyhow::Result<Api> {
        let (base, cert) = server(data_dir, flag).with_context(|| {
            format!(
                "no server found: start `sluice serve` (with --data-dir {}), or pass --server URL",
                data_dir.display()
            )
        })?;
        let tls = tls_config(base.starts_with("https://"), cert.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Api { base, http: Client::builder(TokioExecutor::new()).build(connector), token: token(data_dir) })
    }

    /// Sends a request; returns the status and the JSON answer.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut req = Request::builder().method(method).uri(&url).header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(bytes)).with_context(|| format!("bad request URL {url}"))?;
        let resp = self.http.request(req).await.with_context(|| {
            format!("cannot reach the Sluice server at {} (is `sluice serve` running?)", self.base)
        })?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("the server's answer broke off")?.to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status, value))
    }

    /// [`Api::call`], turning an error answer into an error with the server's sentence.
    pub(crate) async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(v)
    }

    /// A GET whose answer is bytes (an artifact's content); an error answer is an error.
    pub(crate) async fn bytes(&self, path: &str) -> anyhow::Result<Bytes> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(Method::GET).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).with_context(|| format!("bad request URL {url}"))?;
        let resp = self.http.request(req).await.with_context(|| {
            format!("cannot reach the Sluice server at {} (is `sluice serve` running?)", self.base)
        })?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("the server's answer broke off")?.to_bytes();
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }

    /// Waits for the run to end; returns its final report.
    async fn wait(&self, run: u64) -> anyhow::Result<Value> {
        loop {
            let v = self.ok(Method::GET, &format!("/api/v1/runs/{run}/wait?timeout_s=30"), None).await?;
            if v["done"].as_bool() == Some(true) {
                return Ok(v);
            }
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A run report from the server's answer (a report, with `done` when it came from a wait).
fn report(v: Value) -> anyhow::Result<RunReport> {
    serde_json::from_value(v).context("the server's answer is not a run report")
}

fn exit_for(state: RunState) -> ExitCode {
    match state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Interrupted => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// Starts a run (or a retry) and, with `wait`, follows it to the end.
async fn started(api: &Api, output: Output, answer: Value, wait: bool) -> anyhow::Result<ExitCode> {
    let run = answer["run"]["id"].as_u64().context("the server's answer names no run")?;
    if !wait {
        match output {
            Output::Json => println!("{}", answer["run"]),
            Output::Text => println!("started {run}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if output == Output::Text {
        eprintln!("started {run}; waiting for it to end");
    }
    let v = api.wait(run).await?;
    // The state decides the exit code; the rest is printed as the server sent it.
    let state: RunState = v["state"].as_str().and_then(|s| s.parse().ok()).unwrap_or(RunState::Failed);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Text => super::report::print(&report(v)?),
    }
    Ok(exit_for(state))
}

/// A `NAME=VALUE` argument.
type KeyValue = (String, String);

pub(crate) fn trigger(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    pipeline: &str,
    (params, tags): (&[KeyValue], &[KeyValue]),
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    let params: serde_json::Map<String, Value> =
        params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let tags = super::run::tags_of(tags)?;
    runtime()?.block_on(async {
        let answer = api
            .ok(
                Method::POST,
                &format!("/api/v1/pipelines/{pipeline}/runs"),
                Some(json!({ "params": params, "tags": tags })),
            )
            .await?;
        started(&api, output, answer, wait).await
    })
}

pub(crate) fn retry(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    run: &str,
    from: &str,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    let id = parse_run_id(run)?;
    runtime()?.block_on(async {
        let answer =
            api.ok(Method::POST, &format!("/api/v1/runs/{id}/retry"), Some(json!({ "from": from }))).await?;
        started(&api, output, answer, wait).await
    })
}

pub(crate) fn status(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    run: &str,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    let id = parse_run_id(run)?;
    let v = runtime()?.block_on(api.ok(Method::GET, &format!("/api/v1/runs/{id}"), None))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Text => super::report::print(&report(v)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cancel(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    runs: &[String],
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    runtime()?.block_on(async {
        for text in runs {
            let id = parse_run_id(text)?;
            let v = api.ok(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None).await?;
            // Cancelling takes the grace period of running steps; report the end state.
            let end = api.wait(id).await?;
            match output {
                Output::Json => println!("{}", json!({ "run": id, "requested": v, "state": end["state"] })),
                Output::Text => println!("{id}: {}", end["state"].as_str().unwrap_or("?")),
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The newest runs, through the server (`sluice runs` while it holds the folder).
pub(crate) fn runs(
    data_dir: &Path,
    server: Option<&str>,
    limit: usize,
    (filter, order_by): (Option<&str>, Option<&str>),
) -> anyhow::Result<Vec<sluice_engine::store::RunRecord>> {
    let api = Api::new(data_dir, server)?;
    let limit = limit.clamp(1, 1000);
    let mut path = format!("/api/v1/runs?limit={limit}");
    if let Some(f) = filter {
        path.push_str(&format!("&filter={}", super::artifacts::urlencode(f)));
    }
    if let Some(o) = order_by {
        path.push_str(&format!("&order_by={}", super::artifacts::urlencode(o)));
    }
    let v = runtime()?.block_on(api.ok(Method::GET, &path, None))?;
    serde_json::from_value(v["runs"].clone()).context("the server's run list")
}

/// A step's log, through the server (`sluice logs` while it holds the folder).
pub(crate) fn logs(
    data_dir: &Path,
    server: Option<&str>,
    run: u64,
    step: &str,
    attempt: Option<u32>,
) -> anyhow::Result<Bytes> {
    let api = Api::new(data_dir, server)?;
    let mut path = format!("/api/v1/runs/{run}/steps/{}/logs", super::artifacts::urlencode(step));
    if let Some(a) = attempt {
        path.push_str(&format!("?attempt={a}"));
    }
    runtime()?.block_on(api.bytes(&path))
}

/// `sluice resume` while a server holds the folder: the server resumed the runs a stopped
/// engine left when it started, and drives them; this follows them to their end.
pub(crate) fn resume(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    runs: &[String],
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    runtime()?.block_on(async {
        let ids: Vec<u64> = if runs.is_empty() {
            let v = api.ok(Method::GET, "/api/v1/runs?limit=1000", None).await?;
            let open = |r: &&Value| {
                r["state"].as_str().and_then(|s| s.parse::<RunState>().ok()).is_some_and(|s| !s.is_terminal())
            };
            let mut ids: Vec<u64> = v["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(open)
                .filter_map(|r| r["id"].as_u64())
                .collect();
            ids.sort_unstable();
            ids
        } else {
            let mut ids = Vec::new();
            for text in runs {
                let id = parse_run_id(text)?;
                let v = api.ok(Method::GET, &format!("/api/v1/runs/{id}"), None).await?;
                let state: Option<RunState> = v["state"].as_str().and_then(|s| s.parse().ok());
                if let Some(state) = state.filter(|s| s.is_terminal()) {
                    bail!("run {id} already {state}; there is nothing to resume");
                }
                ids.push(id);
            }
            ids
        };
        if ids.is_empty() {
            match output {
                Output::Json => println!("[]"),
                Output::Text => println!("nothing to resume: the server is driving no run"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        if output == Output::Text {
            eprintln!(
                "the server at {} drives these runs (it resumed them when it started); following them",
                api.base
            );
        }
        let mut worst = ExitCode::SUCCESS;
        let mut ended = Vec::new();
        for id in ids {
            let v = api.wait(id).await?;
            let state: RunState =
                v["state"].as_str().and_then(|s| s.parse().ok()).unwrap_or(RunState::Failed);
            if state != RunState::Succeeded {
                worst = exit_for(state);
            }
            match output {
                Output::Json => ended.push(json!({ "run": id, "state": state })),
                Output::Text => println!("{id}: {state}"),
            }
        }
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&ended)?);
        }
        Ok(worst)
    })
}

pub(crate) fn backfill(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    pipeline: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    let v = runtime()?.block_on(api.ok(
        Method::POST,
        &format!("/api/v1/pipelines/{pipeline}/backfill"),
        Some(json!({ "from": from, "to": to })),
    ))?;
    if output == Output::Json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    for c in v["created"].as_array().into_iter().flatten() {
        println!("{}  started {}", c["slot"].as_str().unwrap_or("?"), c["run"]);
    }
    for c in v["existing"].as_array().into_iter().flatten() {
        println!("{}  already ran as {}", c["slot"].as_str().unwrap_or("?"), c["run"]);
    }
    let failed = v["failed"].as_array().map_or(0, Vec::len);
    for c in v["failed"].as_array().into_iter().flatten() {
        println!("{}  failed: {}", c["slot"].as_str().unwrap_or("?"), c["error"].as_str().unwrap_or("?"));
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
