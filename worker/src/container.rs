//! The container executor: runs an attempt in a Docker container through the Engine API
//! (bollard), streams its logs, and removes it when it ends, however it ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::{OnceCell, watch};

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal, LogStream,
    wait_for_kill,
};
use crate::outputs::read_outputs_file;

/// When to pull a step's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Use the local image; fail if it is missing.
    Never,
    /// Pull only when the image is not present (the default).
    #[default]
    IfNotPresent,
    /// Pull before every attempt.
    Always,
}

/// A host path mounted into the container.
struct Bind {
    source: PathBuf,
    target: String,
    read_only: bool,
}

/// A `container:` step after templating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// Arguments (the image's `CMD` when empty).
    pub command: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub user: Option<String>,
    /// The working folder inside the container.
    pub workdir: String,
    /// CPU limit in cores (fractions allowed).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Network mode; `none` unless the step asks for another.
    pub network: String,
    pub pull: PullPolicy,
    /// Run an init process (docker-init) as PID 1, so that SIGTERM reaches the command.
    pub init: bool,
}

/// Where the engine's folders appear inside a container.
pub const CONTAINER_ATTEMPT_DIR: &str = "/sluice/attempt";
pub const CONTAINER_RUN_DIR: &str = "/sluice/run";
pub const CONTAINER_INPUTS_DIR: &str = "/sluice/inputs";

/// Labels every container of ours carries.
pub const LABEL_OWNER: &str = "dev.sluice.owner";
pub const LABEL_RUN: &str = "dev.sluice.run";
pub const LABEL_STEP: &str = "dev.sluice.step";
pub const LABEL_ITEM: &str = "dev.sluice.item";
pub const LABEL_ATTEMPT: &str = "dev.sluice.attempt";

/// How to reach the Docker Engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// `unix:///path/docker.sock` or `tcp://host:port`; from `DOCKER_HOST` by default.
    pub host: String,
    /// Names this engine's containers (the data folder), so that reaping spares others'.
    pub owner: String,
}

impl DockerConfig {
    pub fn from_env(owner: impl Into<String>) -> Self {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        Self { host, owner: owner.into() }
    }
}

/// What `sluice doctor` reports about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

/// Runs `container:` steps on a Docker Engine. Cheap to clone: clones share one client.
#[derive(Clone)]
pub struct ContainerExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: DockerConfig,
    client: OnceCell<Docker>,
}

impl ContainerExecutor {
    pub fn new(config: DockerConfig) -> Self {
        Self { inner: Arc::new(Inner { config, client: OnceCell::new() }) }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ExecError {
        ExecError::retryable(format!(
            "no Docker engine answers at {} ({e}); start dockerd or set DOCKER_HOST",
            self.inner.config.host
        ))
    }

    /// The client, connected and with its API version agreed on the first use.
    async fn docker(&self) -> Result<&Docker, ExecError> {
        self.inner
            .client
            .get_or_try_init(|| async {
                // No request timeout: attempts are bounded by the engine's own timeouts.
                const NO_TIMEOUT: u64 = 365 * 24 * 3600;
                let host = &self.inner.config.host;
                let docker = if let Some(path) = host.strip_prefix("unix://") {
                    Docker::connect_with_unix(path, NO_TIMEOUT, bollard::API_DEFAULT_VERSION)
                } else if host.starts_with("tcp://") || host.starts_with("http://") {
                    Docker::connect_with_http(host, NO_TIMEOUT, bollard::API_DEFAULT_VERSION)
                } else {
                    return Err(ExecError::fatal(format!(
                        "DOCKER_HOST `{host}` is not unix:///path or tcp://host:port"
                    )));
                }
                .map_err(|e| self.unreachable(e))?;
                docker.negotiate_version().await.map_err(|e| self.unreachable(e))
            })
            .await
    }

    /// The engine's version, or why it cannot be reached.
    pub async fn probe(&self) -> Result<EngineInfo, ExecError> {
        let v = self.docker().await?.version().await.map_err(|e| self.unreachable(e))?;
        Ok(EngineInfo {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
        })
    }

    /// Removes every container this engine (its `owner`) left behind, running or not: after
    /// a crash they belong to attempts no longer running. Returns their names.
    pub async fn reap(&self) -> Result<Vec<String>, ExecError> {
        let docker = self.docker().await?;
        let filters: HashMap<&str, Vec<String>> =
            HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.inner.config.owner)])]);
        let list = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut reaped = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            if docker.remove_container(&id, Some(force)).await.is_ok() {
                reaped.push(c.names.and_then(|n| n.into_iter().next()).unwrap_or(id));
            }
        }
        Ok(reaped)
    }

    /// The id (`sha256:…`) the Docker engine gives `image` now (what a tag resolves to), or
    /// `None` when the engine does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, ExecError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(found) => Ok(found.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.unreachable(docker_message(&e))),
        }
    }

    async fn ensure_image(
        &self,
        docker: &Docker,
        spec: &ContainerSpec,
        sink: &dyn AttemptSink,
    ) -> Result<(), ExecError> {
        let present = docker.inspect_image(&spec.image).await.is_ok();
        let pull = match spec.pull {
            PullPolicy::Never if !present => {
                return Err(ExecError::fatal(format!(
                    "image `{}` is not on the Docker engine and the pull policy is `never`",
                    spec.image
                )));
            }
            PullPolicy::Never => false,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Always => true,
        };
        if !pull {
            return Ok(());
        }
        sink.log(LogStream::System, format!("sluice: pulling {}\n", spec.image).as_bytes());
        let (name, tag) = split_image(&spec.image);
        let opts = CreateImageOptionsBuilder::new().from_image(name).tag(tag).build();
        let mut progress = docker.create_image(Some(opts), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(ExecError::fatal(format!(
                    "cannot pull image `{}`: {}",
                    spec.image,
                    docker_message(&e)
                )));
            }
        }
        Ok(())
    }

    async fn run(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        mut kill: watch::Receiver<Option<KillSignal>>,
    ) -> AttemptOutcome {
        let ExecSpec::Container(spec) = &request.spec else {
            return AttemptOutcome::failed(ExecError::fatal("not a container step"));
        };
        // The attempt's folder, mounted read-write; the outputs file must be inside it, where
        // the container can write it.
        let files = &request.files;
        let Ok(outputs) = files.outputs_file.strip_prefix(&files.attempt_dir) else {
            return AttemptOutcome::failed(ExecError::fatal(format!(
                "a container step's outputs file must be in its attempt folder {}, not at {}",
                files.attempt_dir.display(),
                files.outputs_file.display()
            )));
        };
        let outputs_in_container = format!("{CONTAINER_ATTEMPT_DIR}/{}", outputs.display());
        if let Err(e) = std::fs::create_dir_all(&files.attempt_dir) {
            return AttemptOutcome::failed(ExecError::fatal(format!(
                "cannot create the attempt folder {}: {e}",
                files.attempt_dir.display()
            )));
        }
        let docker = match self.docker().await {
            Ok(d) => d,
            Err(e) => return AttemptOutcome::failed(e),
        };
        if let Err(e) = self.ensure_image(docker, spec, sink.as_ref()).await {
            return AttemptOutcome::failed(e);
        }

        let name = container_name(&self.inner.config.owner, &request);
        // A container of this very attempt can only be a leftover of a crash: replace it.
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker.remove_container(&name, Some(force.clone())).await;
        let body = self.body(&request, spec, &outputs_in_container);
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await;
        if let Err(e) = created {
            let msg = docker_message(&e);
            // The Engine API answers 404 when the image is missing (and the pull policy did
            // not fetch it).
            let err = match e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                    ExecError::fatal(format!("image `{}` does not exist: {msg}", spec.image))
                }
                _ => ExecError::retryable(format!("cannot create the container: {msg}")),
            };
            return AttemptOutcome::failed(err);
        }
        let outcome = self.start_and_wait(docker, &name, &request, spec, &sink, &mut kill).await;
        if docker.remove_container(&name, Some(force)).await.is_err() {
            sink.log(LogStream::System, format!("sluice: could not remove container {name}\n").as_bytes());
        }
        outcome
    }

    fn body(&self, request: &AttemptRequest, spec: &ContainerSpec, outputs: &str) -> ContainerCreateBody {
        let id = &request.id;
        let mut env: Vec<String> = request.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("SLUICE_OUTPUTS={outputs}"));
        if let Ok(m) = request.files.metrics_file.strip_prefix(&request.files.attempt_dir) {
            env.push(format!("SLUICE_METRICS={CONTAINER_ATTEMPT_DIR}/{}", m.display()));
        }
        env.push(format!("SLUICE_RUN_ID={}", id.run));
        env.push(format!("SLUICE_STEP={}", id.step));
        env.push(format!("SLUICE_ITEM={}", id.item));
        env.push(format!("SLUICE_ATTEMPT={}", id.attempt));
        env.push(format!("SLUICE_RUN_DIR={CONTAINER_RUN_DIR}"));
        let files = &request.files;
        let mut binds = vec![
            Bind {
                source: files.attempt_dir.clone(),
                target: CONTAINER_ATTEMPT_DIR.into(),
                read_only: false,
            },
            Bind { source: files.run_dir.clone(), target: CONTAINER_RUN_DIR.into(), read_only: false },
        ];
        binds.extend(request.inputs.iter().map(|i| Bind {
            source: i.source.clone(),
            target: format!("{CONTAINER_INPUTS_DIR}/{}", i.name),
            read_only: true,
        }));
        let mounts = binds
            .into_iter()
            .map(|b| Mount {
                target: Some(b.target),
                source: Some(b.source.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(b.read_only),
                ..Default::default()
            })
            .collect();
        let labels = HashMap::from([
            (LABEL_OWNER.to_string(), self.inner.config.owner.clone()),
            (LABEL_RUN.to_string(), id.run.to_string()),
            (LABEL_STEP.to_string(), id.step.clone()),
            (LABEL_ITEM.to_string(), id.item.to_string()),
            (LABEL_ATTEMPT.to_string(), id.attempt.to_string()),
        ]);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            entrypoint: spec.entrypoint.clone(),
            user: spec.user.clone(),
            working_dir: Some(spec.workdir.clone()),
            env: Some(env),
            labels: Some(labels),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                init: Some(spec.init),
                memory: spec.memory.map(|m| m as i64),
                nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
                mounts: Some(mounts),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn start_and_wait(
        &self,
        docker: &Docker,
        name: &str,
        request: &AttemptRequest,
        spec: &ContainerSpec,
        sink: &Arc<dyn AttemptSink>,
        kill: &mut watch::Receiver<Option<KillSignal>>,
    ) -> AttemptOutcome {
        if kill.borrow().is_some() {
            return AttemptOutcome::failed(ExecError::cancelled(
                "the step was stopped before its container started",
            ));
        }
        if let Err(e) =
            docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await
        {
            return AttemptOutcome::failed(ExecError::retryable(format!(
                "cannot start the container of image `{}`: {}",
                spec.image,
                docker_message(&e)
            )));
        }
        let logs_opts = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut logs = docker.logs(name, Some(logs_opts));
        let log_sink = sink.clone();
        let pump = tokio::spawn(async move {
            while let Some(Ok(chunk)) = logs.next().await {
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        log_sink.log(LogStream::Stderr, &message)
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        log_sink.log(LogStream::Stdout, &message)
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
        });
        let wait_opts = WaitContainerOptionsBuilder::new().condition("not-running").build();
        let mut wait = docker.wait_container(name, Some(wait_opts));
        let mut killed = false;
        let status = loop {
            tokio::select! {
                status = wait.next() => break status,
                grace = wait_for_kill(kill), if !killed => {
                    killed = true;
                    // SIGTERM, then SIGKILL after the grace period: the engine's stop.
                    let stop = StopContainerOptionsBuilder::new().t(grace.as_secs().max(1) as i32).build();
                    let _ = docker.stop_container(name, Some(stop)).await;
                }
            }
        };
        let _ = pump.await;
        let exit_code = match status {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            Some(Err(e)) => {
                return AttemptOutcome::failed(ExecError::retryable(format!(
                    "lost the container while waiting: {}",
                    docker_message(&e)
                )));
            }
            None => {
                return AttemptOutcome::failed(ExecError::retryable(
                    "the Docker engine closed the wait for the container",
                ));
            }
        };
        let exit_code = exit_code.map(|c| c as i32);
        if killed {
            return AttemptOutcome {
                result: Err(ExecError::cancelled("the step was stopped")),
                outputs: Default::default(),
                exit_code,
            };
        }
        match exit_code {
            Some(0) => match read_outputs_file(&request.files.outputs_file) {
                Ok(outputs) => AttemptOutcome { result: Ok(()), outputs, exit_code },
                Err(e) => AttemptOutcome { result: Err(e), outputs: Default::default(), exit_code },
            },
            Some(137) if spec.memory.is_some() => AttemptOutcome {
                result: Err(ExecError::retryable(
                    "the container was killed (exit 137): out of memory or SIGKILL",
                )),
                outputs: Default::default(),
                exit_code,
            },
            Some(code) => AttemptOutcome {
                result: Err(ExecError::retryable(format!(
                    "the container of `{}` exited with code {code}",
                    spec.image
                ))),
                outputs: Default::default(),
                exit_code,
            },
            None => AttemptOutcome::failed(ExecError::retryable("the container ended without an exit code")),
        }
    }
}

impl Executor for ContainerExecutor {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        let this = self.clone();
        Box::pin(async move { this.run(request, sink, kill).await })
    }
}

/// The deterministic name of an attempt's container. Container names are global to a Docker
/// engine, so the name carries a hash of the owner (the data folder): two engines with runs of
/// the same number never touch each other's containers.
pub fn container_name(owner: &str, request: &AttemptRequest) -> String {
    let id = &request.id;
    let step = crate::slurm::name_part(&id.step);
    let owner = crate::slurm::owner_hash(owner);
    format!("sluice-{owner}-r{}-{step}-{}-{}", id.run, id.item, id.attempt)
}

fn split_image(image: &str) -> (&str, &str) {
    // `registry:5000/name:tag` has a colon in the host part; the tag follows the last `/`.
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outputs_file_outside_the_attempt_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ContainerSpec {
            image: "busybox:1".into(),
            command: vec![],
            entrypoint: None,
            user: None,
            workdir: CONTAINER_RUN_DIR.into(),
            cpus: None,
            memory: None,
            network: "none".into(),
            pull: PullPolicy::Never,
            init: true,
        };
        let request = AttemptRequest::new(
            crate::AttemptId { run: 1, step: "s".into(), item: 0, attempt: 1 },
            ExecSpec::Container(spec),
            crate::AttemptFiles::at(dir.path().to_path_buf(), &dir.path().join("s.0.1"), false),
        );
        let executor =
            ContainerExecutor::new(DockerConfig { host: "unix:///nonexistent".into(), owner: "t".into() });
        let (_switch, rx) = crate::KillSwitch::new();
        struct Quiet;
        impl AttemptSink for Quiet {
            fn log(&self, _: LogStream, _: &[u8]) {}
            fn started(&self, _: u32) -> Result<(), String> {
                Ok(())
            }
        }
        let outcome = executor.execute(request, Arc::new(Quiet), rx).await;
        let e = outcome.result.unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Fatal);
        assert!(e.message.contains("must be in its attempt folder"), "{}", e.message);
    }

    #[test]
    fn image_names_split_into_name_and_tag() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("sluice-test/busybox:1"), ("sluice-test/busybox", "1"));
        assert_eq!(split_image("registry:5000/team/img"), ("registry:5000/team/img", "latest"));
        assert_eq!(split_image("registry:5000/team/img:v2"), ("registry:5000/team/img", "v2"));
    }
}
