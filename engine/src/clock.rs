//! The one clock of an engine process. The driver (timers, run times, cooldown windows) and
//! the server (schedules, received events) read time only through it, so that tests run on
//! paused tokio time; the scheduler core reads none at all (time is an argument).

/// Wall-clock time in ms since the epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that starts at a chosen time and moves with tokio's clock: under
/// `tokio::time::pause` it jumps exactly as far as the runtime's timers do.
#[derive(Debug)]
pub struct TokioClock {
    base_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_ms: i64) -> Self {
        TokioClock { base_ms, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}
