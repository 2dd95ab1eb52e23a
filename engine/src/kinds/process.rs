//! `process:`: run a local program, as argv or as a shell script (`sh -c`), in its own process
//! group.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_worker::{ExecSpec, ProcessSpec};

use super::{Check, Kind, Render, Rendered, Templates};

/// A `process:` block: a command as argv, or a shell script run by `sh -c`. Each element of
/// `command` is one argument, never split again; values in `shell` are quoted as shell words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessBlock {
    /// The program and its arguments (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A script for `sh -c` (templated); use instead of `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

impl Kind for ProcessBlock {
    fn runs_on_slurm(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut Check<'_>) {
        match (&self.command, &self.shell) {
            (None, None) => cx.at("", "`process:` needs `command:` (a list) or `shell:` (a script)"),
            (Some(_), Some(_)) => cx.at("", "`process:` takes `command:` or `shell:`, not both"),
            (Some(c), None) if c.is_empty() => cx.at("command", "`command:` is empty"),
            _ => {}
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        if let Some(cmd) = &self.command {
            out.list("command", cmd);
        }
        if let Some(s) = &self.shell {
            out.text("shell", s);
        }
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let argv = match (&self.command, &self.shell) {
            (Some(cmd), _) => cmd.iter().map(|a| (cx.text)(a)).collect::<Result<Vec<_>, _>>()?,
            (None, Some(script)) => vec!["sh".into(), "-c".into(), (cx.shell)(script)?],
            (None, None) => return Err("the step has no command".into()),
        };
        let mut rendered: Rendered = ExecSpec::Process(ProcessSpec { argv }).into();
        // Artifacts are what a step writes: in its own `workdir:`, or else in the run's folder
        // (its default working folder is the pipeline's, which is source, not output).
        rendered.work_folder = Some(cx.workdir.unwrap_or(cx.run_dir).to_path_buf());
        Ok(rendered)
    }
}
