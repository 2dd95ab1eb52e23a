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
#[derive(Debug)]
pub enum Control {
    /// Stop the run for good: running attempts are killed, the rest never start.
    Cancel(u64),
    /// Start (or resume) a stored run; only a driver started with [`Engine::serve`] keeps
    /// taking new runs.
    Start(u64),
    /// A decision on a waiting step, checked: applied as its attempt's result, recorded in
    /// the batch that logs it; the reply learns whether the run took it, once that is durable.
    Decide(Box<super::Decided>, tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// A testing hook that kills the engine (SIGKILL) at a chosen point, to prove crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Right after the n-th group commit, before acting on it.
    AfterCommit(u64),
    /// With the n-th batch written but not yet flushed.
    BeforeCommit(u64),
    /// With the n-th artifact file of this process hashed and synced under a temporary name,
    /// before it is renamed under its digest.
    Placing(u64),
    /// With the n-th artifact file under its digest, before its record is written.
    Placed(u64),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Fault, String> {
        let (kind, n) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not `after:N`, `before:N`, `placing:N` or `placed:N`"))?;
        let n: u64 = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
        match kind {
            "after" => Ok(Fault::AfterCommit(n)),
            "before" => Ok(Fault::BeforeCommit(n)),
            "placing" => Ok(Fault::Placing(n)),
            "placed" => Ok(Fault::Placed(n)),
            _ => Err(format!("`{kind}` is not `after`, `before`, `placing` or `placed`")),
        }
    }
}

/// How many artifact files this process has placed, for [`Fault::Placing`] and [`Fault::Placed`].
static PLACED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a placement tells the crash hook: dies at the chosen file's chosen stage.
pub(super) fn placement_watch(fault: Option<Fault>) -> impl Fn(crate::artifacts::Stage) + Send + Sync {
    use crate::artifacts::Stage;
    move |stage| match (fault, stage) {
        (Some(Fault::Placing(n)), Stage::Written) | (Some(Fault::Placed(n)), Stage::Stored)
            if PLACED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n =>
        {
            crash()
        }
        _ => {}
    }
}

/// Dies at once, as a crash would: SIGKILL to itself.
pub(super) fn crash() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
