//! `sluice serve`: run the engine as a service over a folder of pipelines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sluice_engine::server::{ServeOptions, serve as serve_engine};
use sluice_engine::syntax::ByteSize;

use super::run::{EngineArgs, open, signals};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The folder of pipeline files (`*.yaml`, `*.yml`, `*.json`).
    #[arg(long, default_value = "dags")]
    dags: PathBuf,
    /// Where the HTTP API listens; port 0 picks a free port (written to <data dir>/server.json).
    #[arg(long, default_value = "127.0.0.1:8377")]
    listen: SocketAddr,
    /// The largest request body accepted, as `1Mi`.
    #[arg(long, default_value = "1Mi", value_parser = ByteSize::parse)]
    body_limit: u64,
    /// The largest file MLflow's clients may upload through the artifact proxy
    /// (`/api/2.0/mlflow-artifacts/`), as `4Gi`; uploads stream to disk.
    #[arg(long, default_value = "4Gi", value_parser = ByteSize::parse)]
    upload_limit: u64,
    /// Requests handled at once; more get 429 Too Many Requests.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Connections open at once; a new one past this is closed at once.
    #[arg(long, default_value_t = 2048)]
    max_connections: usize,
    /// Connections open at once from one client address.
    #[arg(long, default_value_t = 256)]
    max_connections_per_client: usize,
    /// How long a client has to send a request's headers (and an idle connection stays open).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: std::time::Duration,
    /// How long a client has to send a request's body; then 408.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: std::time::Duration,
    /// How long the listener stays open once shutdown begins, answering /ready with 503, so
    /// that a load balancer stops sending before connections are refused.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    drain_for: std::time::Duration,
    /// A host name the server answers to (besides its addresses and localhost); requests
    /// naming any other host are refused (DNS rebinding). Repeat for several.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Failed authentications one client address may make in a minute before it gets 429
    /// for the rest of that minute.
    #[arg(long, value_name = "N", default_value_t = 20)]
    auth_failure_limit: u32,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen in plain HTTP on a non-loopback address all the same (only behind something
    /// that encrypts the traffic, such as a TLS-terminating proxy on this host).
    #[arg(long)]
    insecure: bool,
    /// An event source that must sign its requests instead of sending a token, and where its
    /// shared secret is read from: `github=env:GITHUB_WEBHOOK_SECRET` or
    /// `ci=file:/run/secrets/ci`. Requests to /api/v1/events/SOURCE then need
    /// `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`. Repeat for several sources.
    #[arg(long = "webhook-secret", value_name = "SOURCE=REF")]
    webhook_secrets: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(crate) fn serve(data_dir: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.dags.is_dir(), "{} is not a folder of pipeline files", args.dags.display());
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
    anyhow::ensure!(
        args.max_connections > 0 && args.max_connections_per_client > 0,
        "--max-connections and --max-connections-per-client must be at least 1"
    );
    // Checked before the engine opens, so that the refusal is the first and only thing said.
    sluice_engine::server::tls::check_listen(args.listen, args.tls_cert.is_some(), args.insecure)?;
    let webhook_keys = sluice_engine::security::webhook::WebhookKeys::from_specs(
        args.webhook_secrets.iter().map(String::as_str),
    )
    .map_err(|e| anyhow::anyhow!("--webhook-secret {e}"))?;
    raise_open_files_limit(args.max_connections);
    let engine = open(data_dir, &args.engine)?;
    let mut opts = ServeOptions::new(&args.dags);
    opts.listen = args.listen;
    opts.body_limit = usize::try_from(args.body_limit).unwrap_or(usize::MAX);
    opts.upload_limit = args.upload_limit;
    opts.max_in_flight = args.max_in_flight;
    opts.max_connections = args.max_connections;
    opts.max_connections_per_client = args.max_connections_per_client;
    opts.header_timeout = args.header_timeout;
    opts.body_timeout = args.body_timeout;
    opts.drain_for = args.drain_for;
    opts.allowed_hosts = args.allow_hosts;
    opts.auth_failure_limit = args.auth_failure_limit;
    opts.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(sluice_engine::server::tls::TlsFiles { cert, key }),
        _ => None,
    };
    opts.insecure = args.insecure;
    opts.webhook_keys = webhook_keys;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let stop = signals()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok(addr) = rx.await {
                eprintln!(
                    "sluice: serving the API on http://{addr}/api/v1 (pipelines from {})",
                    args.dags.display()
                );
            }
        });
        serve_engine(engine, opts, stop, Some(tx)).await?;
        eprintln!("sluice: stopped; runs that were going resume when the server starts again");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft limit on open files to the hard one, so that the connection caps (not the
/// file descriptor limit) are what bounds the server; says so when the hard limit is lower.
fn raise_open_files_limit(connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        return;
    }
    let want = connections as u64 + 256;
    if hard < want {
        tracing::warn!(
            limit = hard,
            "the open-files limit is below --max-connections plus the engine's own files; connections past it wait"
        );
    }
}
