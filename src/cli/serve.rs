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
    /// Requests handled at once; more get 429 Too Many Requests.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(crate) fn serve(data_dir: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.dags.is_dir(), "{} is not a folder of pipeline files", args.dags.display());
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
    let engine = open(data_dir, &args.engine)?;
    let mut opts = ServeOptions::new(&args.dags);
    opts.listen = args.listen;
    opts.body_limit = usize::try_from(args.body_limit).unwrap_or(usize::MAX);
    opts.max_in_flight = args.max_in_flight;
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
