//! Lifecycles as enums with explicit transitions: runs, steps and tasks (one per map item).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transition from {from} to {to}")]
pub struct InvalidTransition {
    pub from: String,
    pub to: String,
}

macro_rules! lifecycle {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!("`{other}` is not a {} state", stringify!($name))),
                }
            }
        }
    };
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Running,
    /// Stopping on request: no new attempts start; running ones get a grace period.
    Interrupting,
    /// Stopped with work left; `sluice resume` goes on from here.
    Interrupted,
    Succeeded,
    Failed,
    Cancelled,
}

lifecycle!(RunState {
    Pending => "pending", Running => "running", Interrupting => "interrupting",
    Interrupted => "interrupted", Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled",
});

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }

    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Pending, Running | Cancelled)
                | (Running, Interrupting | Interrupted | Succeeded | Failed | Cancelled)
                | (Interrupting, Interrupted | Succeeded | Failed | Cancelled | Running)
                | (Interrupted, Running | Cancelled)
        )
    }

    pub fn transition(self, next: RunState) -> Result<RunState, InvalidTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(InvalidTransition { from: self.to_string(), to: next.to_string() })
        }
    }
}

/// The state of a step (for a mapped step, the combined state of its items).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its upstream steps.
    Pending,
    /// Its trigger rule holds; waiting for a slot (or for `when:`/`map:` to be evaluated).
    Ready,
    Running,
    /// An attempt failed; the next one waits for its backoff delay.
    Retrying,
    /// Waits for a person's decision (an `approval:` step), holding no slot.
    Waiting,
    Succeeded,
    Failed,
    /// `when:` was false, or its upstream steps were skipped.
    Skipped,
    /// Its trigger rule can no longer hold because upstream steps failed.
    UpstreamFailed,
    Cancelled,
    TimedOut,
}

lifecycle!(StepState {
    Pending => "pending", Ready => "ready", Running => "running", Retrying => "retrying",
    Waiting => "waiting", Succeeded => "succeeded", Failed => "failed", Skipped => "skipped",
    UpstreamFailed => "upstream_failed", Cancelled => "cancelled", TimedOut => "timed_out",
});

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded
                | StepState::Failed
                | StepState::Skipped
                | StepState::UpstreamFailed
                | StepState::Cancelled
                | StepState::TimedOut
        )
    }

    /// Counts as a failure for trigger rules and for the run's outcome.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StepState::Failed | StepState::TimedOut | StepState::UpstreamFailed | StepState::Cancelled
        )
    }

    pub fn can_become(self, next: StepState) -> bool {
        use StepState::*;
        match self {
            Pending => matches!(next, Ready | Skipped | UpstreamFailed | Cancelled),
            Ready => matches!(next, Running | Waiting | Skipped | Succeeded | Failed | Cancelled),
            // A mapped step moves between these while its items run, retry and queue.
            Running => matches!(next, Ready | Retrying | Succeeded | Failed | TimedOut | Cancelled),
            Retrying => matches!(next, Ready | Running | Failed | TimedOut | Cancelled),
            Waiting => matches!(next, Succeeded | Failed | TimedOut | Cancelled),
            Succeeded | Failed | Skipped | UpstreamFailed | Cancelled | TimedOut => false,
        }
    }

    pub fn transition(self, next: StepState) -> Result<StepState, InvalidTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(InvalidTransition { from: self.to_string(), to: next.to_string() })
        }
    }
}

/// The state of one task: a step, or one item of a mapped step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// Waiting for admission (resources, concurrency).
    Queued,
    Running {
        attempt: u32,
        since: i64,
    },
    /// Waiting until `at` before attempt `attempt + 1` is queued.
    Retrying {
        attempt: u32,
        at: i64,
    },
    /// Waiting for a decision (an `approval:` step) since `since`, until `until` (0: no
    /// deadline); holds no slot. The decision arrives as the result of attempt `attempt`.
    Waiting {
        attempt: u32,
        since: i64,
        until: i64,
    },
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled)
    }

    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Queued, Running { .. } | Waiting { .. } | Cancelled | Failed)
                | (Waiting { .. }, Succeeded | Failed | TimedOut | Cancelled)
                | (Running { .. }, Queued | Retrying { .. } | Succeeded | Failed | TimedOut | Cancelled)
                | (Retrying { .. }, Queued | Cancelled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_text() {
        for s in StepState::ALL {
            assert_eq!(s.to_string().parse::<StepState>().unwrap(), *s);
        }
        for s in RunState::ALL {
            assert_eq!(s.to_string().parse::<RunState>().unwrap(), *s);
        }
        assert!("nope".parse::<StepState>().is_err());
    }

    #[test]
    fn terminal_states_never_move() {
        for from in StepState::ALL.iter().filter(|s| s.is_terminal()) {
            for to in StepState::ALL {
                assert!(from.transition(*to).is_err(), "{from} -> {to}");
            }
        }
        for from in RunState::ALL.iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert!(!from.can_become(*to));
            }
        }
    }

    #[test]
    fn step_transition_table() {
        use StepState::*;
        let allowed = [
            (Pending, Ready),
            (Pending, Skipped),
            (Pending, UpstreamFailed),
            (Pending, Cancelled),
            (Ready, Running),
            (Ready, Waiting),
            (Ready, Skipped),
            (Ready, Succeeded),
            (Ready, Failed),
            (Ready, Cancelled),
            (Running, Ready),
            (Running, Retrying),
            (Running, Succeeded),
            (Running, Failed),
            (Running, TimedOut),
            (Running, Cancelled),
            (Retrying, Ready),
            (Retrying, Running),
            (Retrying, Failed),
            (Retrying, TimedOut),
            (Retrying, Cancelled),
            (Waiting, Succeeded),
            (Waiting, Failed),
            (Waiting, TimedOut),
            (Waiting, Cancelled),
        ];
        for from in StepState::ALL {
            for to in StepState::ALL {
                assert_eq!(from.can_become(*to), allowed.contains(&(*from, *to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn run_transition_table() {
        use RunState::*;
        assert!(Pending.transition(Running).is_ok());
        assert!(Running.transition(Interrupting).is_ok());
        assert!(Interrupting.transition(Interrupted).is_ok());
        assert!(Interrupted.transition(Running).is_ok());
        assert!(Pending.transition(Succeeded).is_err());
        assert!(Interrupted.transition(Succeeded).is_err());
    }

    #[test]
    fn task_transition_table() {
        use TaskState::*;
        let r = Running { attempt: 1, since: 0 };
        assert!(Queued.can_become(r));
        assert!(r.can_become(Retrying { attempt: 1, at: 5 }));
        assert!(Retrying { attempt: 1, at: 5 }.can_become(Queued));
        assert!(!Queued.can_become(Succeeded));
        assert!(!Succeeded.can_become(Queued));
        assert!(!Retrying { attempt: 1, at: 5 }.can_become(Succeeded));
        let w = Waiting { attempt: 1, since: 0, until: 0 };
        assert!(w.can_become(Succeeded) && w.can_become(TimedOut) && w.can_become(Cancelled));
        assert!(!w.can_become(Queued) && !w.can_become(r) && Queued.can_become(w));
    }
}
