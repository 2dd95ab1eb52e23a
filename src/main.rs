//! `sluice`: the command-line interface to the Sluice engine.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Workflow DAG orchestration for machine-learning operations")]
struct Cli {
    /// The data folder holding the state database.
    #[arg(long, global = true, env = "SLUICE_HOME", default_value = ".sluice")]
    data_dir: PathBuf,
    /// Output format for commands whose output a script may parse.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The `sluice serve` to talk to (default: the one that owns --data-dir, found in its
    /// server.json).
    #[arg(long, global = true, env = "SLUICE_SERVER")]
    server: Option<String>,
    /// What to log to stderr: a level (error, warn, info, debug, trace) or a filter such as
    /// `sluice_engine=debug,warn` (default: RUST_LOG, else SLUICE_LOG, else warn; Sluice's own
    /// lines at info for `serve`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// How log lines look: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = cli::logging::LogFormat::Text)]
    log_format: cli::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline in the foreground; exits non-zero if the run fails.
    Run(cli::run::RunArgs),
    /// Resume runs that were interrupted or left running by a stopped engine.
    Resume(cli::run::ResumeArgs),
    /// Cancel runs: through the server when one owns the data folder, else directly (runs
    /// that were interrupted or left by a stopped engine).
    Cancel {
        #[arg(required = true)]
        runs: Vec<String>,
    },
    /// Run the engine as a service: schedules, event triggers and the HTTP API.
    Serve(cli::serve::ServeArgs),
    /// Start a run on the server; with --wait, follow it and exit non-zero if it fails.
    Trigger {
        pipeline: String,
        /// A parameter value, as NAME=VALUE (parsed by the parameter's type).
        #[arg(long = "param", short = 'p', value_parser = cli::run::parse_kv)]
        params: Vec<(String, String)>,
        /// A tag of the run, as KEY=VALUE (repeat for several).
        #[arg(long = "tag", value_parser = cli::run::parse_kv)]
        tags: Vec<(String, String)>,
        /// Wait for the run to end; exit 0 if it succeeded, 1 if not.
        #[arg(long)]
        wait: bool,
    },
    /// Show a run's state and steps, from the server.
    Status { run: String },
    /// Run a finished run again from a step on the server, reusing the results before it.
    Retry {
        run: String,
        /// The step to start from; it and every step after it run again.
        #[arg(long)]
        from: String,
        #[arg(long)]
        wait: bool,
    },
    /// Create the runs of a pipeline's schedule slots between two times (RFC 3339 or dates).
    Backfill {
        pipeline: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// List runs, newest first.
    Runs {
        /// Show at most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs that match, in MLflow's search grammar: `metrics.auc > 0.9 and
        /// params.lr = '0.01'` (metrics: each key's newest value in the run, or
        /// `metrics.STEP.KEY`; tags; attributes: run_id, pipeline, state, trigger, actor,
        /// start_time, end_time, duration).
        #[arg(long)]
        filter: Option<String>,
        /// The order: `metrics.auc DESC, attributes.start_time` (newest first otherwise).
        #[arg(long)]
        order_by: Option<String>,
    },
    /// Runs side by side: params that differ, metrics (the best of each marked), step
    /// durations.
    Compare {
        #[arg(required = true, num_args = 1..)]
        runs: Vec<String>,
    },
    /// Compare a current table (CSV) with a reference, column by column, with Evidently's
    /// tests and SciPy's statistics: each column's test, statistic, p-value and verdict, and
    /// the table's (`--output json`: the whole report).
    Drift {
        reference: PathBuf,
        current: PathBuf,
        /// Only these columns (comma-separated; default: every column both tables have).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// auto, ks, psi, chi2, wasserstein, jensen_shannon or z.
        #[arg(long, default_value = "auto")]
        method: String,
        /// Overrides the method's threshold (a p-value for ks, chi2 and z; a distance otherwise).
        #[arg(long)]
        threshold: Option<f64>,
        /// The share of drifted columns at which the table drifts.
        #[arg(long, default_value_t = 0.5)]
        drift_share: f64,
        /// Also write the report as a self-contained HTML page.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Show a run's steps with their states, attempts and durations.
    Show { run: String },
    /// Print a step's logs (every attempt).
    Logs {
        run: String,
        step: String,
        /// Only this attempt.
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// A run's metric series: per step and key the last value, its training step, the lowest
    /// and highest and how many points (`--output json`: every point). Steps append them to
    /// `$SLUICE_METRICS` as JSON lines (`{"key": "loss", "value": 0.3, "step": 2}`); WASM and
    /// train steps report theirs.
    Metrics {
        run: String,
        /// Only this step's.
        step: Option<String>,
    },
    /// Approve (or with --reject, reject) a step of a run that waits for a decision (an
    /// `approval:` step); never as the one who started the run.
    Approve {
        run: String,
        step: String,
        #[arg(long)]
        reject: bool,
        /// Why, kept with the decision and in the audit log.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Registered models: their latest version and aliases.
    Models,
    /// One registered model: show it (a version, the alias history), move an alias, roll one
    /// back, compare two versions, protect an alias.
    Model {
        #[command(subcommand)]
        command: cli::models::ModelCommand,
    },
    /// Rollouts of served models (canary, blue-green) under `sluice serve`: list, status,
    /// pause, resume, abort, promote.
    Rollout {
        #[command(subcommand)]
        command: cli::rollout::RolloutCommand,
    },
    /// List the artifacts steps produced, newest first.
    Artifacts {
        /// Only this run's.
        #[arg(long)]
        run: Option<String>,
        /// Only this step's.
        #[arg(long)]
        step: Option<String>,
    },
    /// Look at one artifact, or copy it out (its content checked against its digest).
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Where an artifact came from (down to the raw files, DAG version and params), or what
    /// used a dataset version or an artifact.
    Lineage {
        /// An artifact's or dataset version's digest (8 or more hex digits do for an
        /// artifact), or RUN/STEP.
        target: String,
        /// What it came from (the default).
        #[arg(long, conflicts_with = "downstream")]
        upstream: bool,
        /// What used it.
        #[arg(long)]
        downstream: bool,
        /// How many attempts away to go at most.
        #[arg(long, default_value_t = 20)]
        depth: usize,
        /// Draw the graph as Graphviz DOT or Mermaid instead.
        #[arg(long, value_enum)]
        format: Option<cli::lineage::GraphFormat>,
    },
    /// Remove stored artifact files that no run within retention and no cache entry uses.
    /// Through the server while one owns the data folder.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Keep what runs that ended within this long (and runs still going) use, as `30d`.
        #[arg(long, default_value = "30d", value_parser = cli::run::humantime_duration)]
        keep: std::time::Duration,
    },
    /// The step cache: why a step did or did not reuse a result.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Bearer tokens for the API: make one (its secret is printed once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The data folder's encryption key: make one, or re-seal what is encrypted with another.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The audit log of every state-changing action, oldest first; `audit verify` checks it.
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        /// Entries from this instant (RFC 3339), sequence (`#120`) or span back (`24h`) on.
        #[arg(long)]
        since: Option<String>,
        /// Only this actor's (`token:ci`, or `ci`; `local:alice`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (`run.start`), or every one of a kind (`run`).
        #[arg(long)]
        action: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Check pipeline files; reports every error with file:line:column.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a pipeline's DAG as Graphviz DOT (or Mermaid).
    Graph {
        file: PathBuf,
        #[arg(long)]
        mermaid: bool,
    },
    /// Print the JSON Schema of pipeline files, for editors.
    Schema,
    /// Work with WASM plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Report what this machine can run: processes, Docker containers, WASM, GPUs.
    Doctor {
        /// The Docker Engine to check (default: DOCKER_HOST, else the local socket).
        #[arg(long)]
        docker_host: Option<String>,
    },
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// Its size, media type, whether it still matches its digest, and who produced it.
    Show {
        /// The digest (`sha256:…`, or its first 8 or more hex digits).
        digest: String,
    },
    /// Copy its content to a file, checking it against its digest on the way.
    Get {
        digest: String,
        #[arg(short = 'o', long = "output-file", value_name = "FILE")]
        out: PathBuf,
    },
    /// Check its content against its digest and the signature of its provenance (exit 1 when
    /// either fails).
    Verify {
        digest: String,
        /// The public key to check signatures with (SPKI PEM, or 64 hex digits; default: the
        /// instance's own, `<data dir>/keys/signing.pub`).
        #[arg(long, value_name = "PUB")]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token with a role: viewer, runner, editor, approver, admin, or events (may only
    /// post events).
    Create {
        name: String,
        #[arg(long)]
        role: String,
        /// How long it lasts, as `90d` (default: no expiry).
        #[arg(long, value_parser = cli::run::humantime_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke the active token of a name (or id); requests with it get 401 at once.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new random 32-byte key (64 hex digits, mode 0600) to FILE, which must not
    /// exist; prints its id. Keep a copy: what it encrypts cannot be read without it.
    Generate { file: PathBuf },
    /// Re-encrypt the folder's step logs and artifacts (and any kept in clear) with NEW; the
    /// current key comes from --encryption-key-file or SLUICE_ENCRYPTION_KEY_FILE. Needs the
    /// folder free (no server running). An interrupted rotation is finished by running it
    /// again with the same keys.
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// The folder's current key (not needed for a folder that is not encrypted yet).
        #[arg(long, value_name = "FILE", env = "SLUICE_ENCRYPTION_KEY_FILE")]
        encryption_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; names the first entry edited,
    /// deleted, reordered or cut off. Exits 1 if the log was tampered with.
    Verify {
        /// The public key to check signatures with (SPKI PEM or hex; default: the data folder's).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The checkpoint file kept outside the store (default: the data folder's
        /// audit/checkpoints.jsonl).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Why a step of a run reused a cached result or ran: its key's components, and on a
    /// miss what changed since the step's newest cached result, in words.
    Explain { run: String, step: String },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Check that files are plugins Sluice can run (WASI preview 1 commands); says what is
    /// wrong otherwise.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command that only prints ends quietly when its reader goes (`sluice runs | head`),
    // as other command-line tools do (exit 141, as a SIGPIPE would give): std's `println!`
    // panics on a broken pipe, and that one panic is not a bug to report.
    if !matches!(cli.command, Command::Serve(_) | Command::Run(_) | Command::Resume(_)) {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
                std::process::exit(141);
            }
            default(info)
        }));
    }
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "warn,sluice=info,sluice_engine=info,sluice_worker=info"
    } else {
        "warn"
    };
    if let Err(e) = cli::logging::init(cli.log_level.as_deref(), cli.log_format, default_level) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    // Processes a step leaves behind, outside its group, are re-parented to this engine, which
    // kills them when their step ends.
    if let Err(e) = sluice_worker::adopt_orphans() {
        tracing::warn!("{e}; processes that leave a step's process group are found more slowly");
    }
    let result = match cli.command {
        Command::Run(args) => cli::run::run(&cli.data_dir, cli.output, args),
        Command::Resume(args) => cli::run::resume(&cli.data_dir, cli.server.as_deref(), cli.output, args),
        Command::Cancel { runs } => {
            if cli::client::server_url(&cli.data_dir, cli.server.as_deref()).is_some() {
                cli::client::cancel(&cli.data_dir, cli.server.as_deref(), cli.output, &runs)
            } else {
                cli::run::cancel(&cli.data_dir, cli.output, &runs)
            }
        }
        Command::Serve(args) => cli::serve::serve(&cli.data_dir, args),
        Command::Trigger { pipeline, params, tags, wait } => cli::client::trigger(
            &cli.data_dir,
            cli.server.as_deref(),
            cli.output,
            &pipeline,
            (&params, &tags),
            wait,
        ),
        Command::Status { run } => {
            cli::client::status(&cli.data_dir, cli.server.as_deref(), cli.output, &run)
        }
        Command::Retry { run, from, wait } => {
            cli::client::retry(&cli.data_dir, cli.server.as_deref(), cli.output, &run, &from, wait)
        }
        Command::Backfill { pipeline, from, to } => {
            cli::client::backfill(&cli.data_dir, cli.server.as_deref(), cli.output, &pipeline, &from, &to)
        }
        Command::Runs { limit, filter, order_by } => cli::inspect::runs(
            &cli.data_dir,
            cli.server.as_deref(),
            cli.output,
            limit,
            (filter.as_deref(), order_by.as_deref()),
        ),
        Command::Compare { runs } => {
            cli::metrics::compare(&cli.data_dir, cli.server.as_deref(), cli.output, &runs)
        }
        Command::Drift { reference, current, columns, method, threshold, drift_share, html } => {
            cli::drift::run(
                cli.output,
                &reference,
                &current,
                columns,
                &method,
                threshold,
                drift_share,
                html.as_deref(),
            )
        }
        Command::Show { run } => cli::inspect::show(&cli.data_dir, cli.server.as_deref(), cli.output, &run),
        Command::Logs { run, step, attempt } => {
            cli::inspect::logs(&cli.data_dir, cli.server.as_deref(), &run, &step, attempt)
        }
        Command::Metrics { run, step } => {
            cli::metrics::show(&cli.data_dir, cli.server.as_deref(), cli.output, &run, step.as_deref())
        }
        Command::Approve { run, step, reject, comment } => cli::approve::approve(
            &cli.data_dir,
            cli.server.as_deref(),
            cli.output,
            (&run, &step),
            reject,
            &comment,
        ),
        Command::Models => cli::models::list(&cli.data_dir, cli.server.as_deref(), cli.output),
        Command::Rollout { command } => {
            cli::rollout::run(&cli.data_dir, cli.server.as_deref(), cli.output, command)
        }
        Command::Model { command } => {
            cli::models::run(&cli.data_dir, cli.server.as_deref(), cli.output, command)
        }
        Command::Artifacts { run, step } => cli::artifacts::list(
            &cli.data_dir,
            cli.server.as_deref(),
            cli.output,
            cli::artifacts::Filter { run: run.as_deref(), step: step.as_deref() },
        ),
        Command::Artifact { command: ArtifactCommand::Show { digest } } => {
            cli::artifacts::show(&cli.data_dir, cli.server.as_deref(), cli.output, &digest)
        }
        Command::Artifact { command: ArtifactCommand::Get { digest, out } } => {
            cli::artifacts::get(&cli.data_dir, cli.server.as_deref(), &digest, &out)
        }
        Command::Artifact { command: ArtifactCommand::Verify { digest, key } } => {
            cli::artifacts::verify(&cli.data_dir, cli.server.as_deref(), cli.output, &digest, key.as_deref())
        }
        Command::Lineage { target, upstream: _, downstream, depth, format } => {
            let direction = if downstream {
                sluice_engine::store::Direction::Downstream
            } else {
                sluice_engine::store::Direction::Upstream
            };
            cli::lineage::lineage(
                &cli.data_dir,
                cli.server.as_deref(),
                cli.output,
                &target,
                direction,
                depth,
                format,
            )
        }
        Command::Gc { dry_run, keep } => {
            cli::cache::gc(&cli.data_dir, cli.server.as_deref(), cli.output, keep, dry_run)
        }
        Command::Cache { command: CacheCommand::Explain { run, step } } => {
            cli::cache::explain(&cli.data_dir, cli.server.as_deref(), cli.output, &run, &step)
        }
        Command::Token { command } => match command {
            TokenCommand::Create { name, role, expires } => {
                cli::security::create(&cli.data_dir, cli.server.as_deref(), cli.output, &name, &role, expires)
            }
            TokenCommand::List => cli::security::list(&cli.data_dir, cli.server.as_deref(), cli.output),
            TokenCommand::Revoke { name } => {
                cli::security::revoke(&cli.data_dir, cli.server.as_deref(), cli.output, &name)
            }
        },
        Command::Key { command: KeyCommand::Generate { file } } => cli::security::key_generate(&file),
        Command::Key { command: KeyCommand::Rotate { new_key_file, encryption_key_file } } => {
            cli::security::key_rotate(&cli.data_dir, encryption_key_file.as_deref(), &new_key_file)
        }
        Command::Audit { command: Some(AuditCommand::Verify { key, checkpoints }), .. } => {
            cli::security::verify(
                &cli.data_dir,
                cli.server.as_deref(),
                cli.output,
                key.as_deref(),
                checkpoints.as_deref(),
            )
        }
        Command::Audit { command: None, since, actor, action, limit } => cli::security::audit(
            &cli.data_dir,
            cli.server.as_deref(),
            cli.output,
            cli::security::AuditQuery {
                since: since.as_deref(),
                actor: actor.as_deref(),
                action: action.as_deref(),
                limit,
            },
        ),
        Command::Validate { files } => cli::spec::validate(&files, cli.output),
        Command::Graph { file, mermaid } => cli::spec::graph(&file, mermaid),
        Command::Schema => cli::spec::schema(),
        Command::Plugin { command: PluginCommand::Check { files } } => cli::plugin::check(&files, cli.output),
        Command::Doctor { docker_host } => cli::doctor::doctor(&cli.data_dir, cli.output, docker_host),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
