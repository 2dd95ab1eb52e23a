//! What passes between the driver and its callers: notices out (step and run changes), control
//! requests in (start, cancel), and the crash-test hook.

use crate::scheduler::{RunState, StepState};

/// What the driver tells its caller (progress views, the server later).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Step { run: u64, step: String, state: StepState, attempt: u32 },
    Run { run: u64, state: RunState },
}

/// A request about one run, sent to a driving engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop the run for good: running attempts are killed, the rest never start.
    Cancel(u64),
    /// Start (or resume) a stored run; only a driver started with [`Engine::serve`] keeps
    /// taking new runs.
    Start(u64),
}

/// A testing hook that kills the engine (SIGKILL) at a chosen point, to prove crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Right after the n-th group commit, before acting on it.
    AfterCommit(u64),
    /// With the n-th batch written but not yet flushed.
    BeforeCommit(u64),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Fault, String> {
        let (kind, n) = s.split_once(':').ok_or_else(|| format!("`{s}` is not `after:N` or `before:N`"))?;
        let n: u64 = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
        match kind {
            "after" => Ok(Fault::AfterCommit(n)),
            "before" => Ok(Fault::BeforeCommit(n)),
            _ => Err(format!("`{kind}` is not `after` or `before`")),
        }
    }
}

/// Dies at once, as a crash would: SIGKILL to itself.
pub(super) fn crash() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
