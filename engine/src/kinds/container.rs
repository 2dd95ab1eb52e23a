//! `container:`: run the step in a Docker container through the Engine API, with the run's
//! folder and the attempt's own folder mounted, and no network unless the step asks for one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_worker::{CONTAINER_INPUTS_DIR, CONTAINER_RUN_DIR, ContainerSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::syntax::ByteSize;

/// When a container step's image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Never,
    /// Pull only when the image is missing (the default).
    #[default]
    IfNotPresent,
    Always,
}

/// A `container:` block: run the step in a Docker container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerBlock {
    /// The image, as `name:tag` (templated).
    pub image: String,
    /// Arguments; the image's `CMD` when left out (templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's `ENTRYPOINT` (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `user`, `uid` or `uid:gid` to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The working folder inside the container (default `/sluice/run`, the run's shared folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// CPU limit in cores, fractions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit: `256Mi`, `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Network mode (default `none`: no network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default)]
    pub pull: PullPolicy,
    /// Run an init process as PID 1 so that the command gets signals (default true); without
    /// it a command that ignores SIGTERM as PID 1 is only stopped by SIGKILL after the grace.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub init: bool,
    /// Files the step reads, relative to the pipeline file's folder (templated); each is
    /// mounted read-only at `/sluice/inputs/<file name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Kind for ContainerBlock {
    fn check(&self, cx: &mut Check<'_>) {
        if self.image.trim().is_empty() {
            cx.at("image", "`image` is empty");
        }
        if let Some(cpus) = self.cpus
            && (cpus.is_nan() || cpus <= 0.0)
        {
            cx.at("cpus", format!("`cpus` must be more than 0, not {cpus}"));
        }
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            cx.at("workdir", "the container `workdir` must be an absolute path");
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.text("image", &self.image);
        out.list("command", &self.command);
        if let Some(e) = &self.entrypoint {
            out.list("entrypoint", e);
        }
        out.list("inputs", &self.inputs);
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a container step sets its folder with `container.workdir`")
    }

    fn attempt_folder(&self) -> bool {
        true
    }

    fn input_folder(&self) -> Option<&'static str> {
        Some(CONTAINER_INPUTS_DIR)
    }

    fn uses_docker(&self) -> bool {
        true
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let all = |list: &[String]| list.iter().map(|a| (cx.text)(a)).collect::<Result<Vec<_>, _>>();
        let inputs = self.inputs.iter().map(|i| cx.input(i)).collect::<Result<Vec<_>, _>>()?;
        let spec = ContainerSpec {
            image: (cx.text)(&self.image)?,
            command: all(&self.command)?,
            entrypoint: self.entrypoint.as_deref().map(all).transpose()?,
            user: self.user.clone(),
            workdir: self.workdir.clone().unwrap_or_else(|| CONTAINER_RUN_DIR.to_string()),
            cpus: self.cpus,
            memory: self.memory.map(|m| m.0),
            network: self.network.clone().unwrap_or_else(|| "none".to_string()),
            pull: match self.pull {
                PullPolicy::Never => sluice_worker::PullPolicy::Never,
                PullPolicy::IfNotPresent => sluice_worker::PullPolicy::IfNotPresent,
                PullPolicy::Always => sluice_worker::PullPolicy::Always,
            },
            init: self.init,
        };
        // Its `/sluice/run` is the run's folder on the host.
        let work_folder = Some(cx.run_dir.to_path_buf());
        Ok(Rendered { spec: ExecSpec::Container(spec), inputs, work_folder, artifacts: Vec::new() })
    }
}
