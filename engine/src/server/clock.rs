//! The server's clock, injectable so that schedule tests run on paused tokio time.

/// Wall-clock time in ms since the epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that starts at a chosen time and moves with tokio's clock: under
/// `tokio::time::pause` it jumps exactly as far as the runtime's timers do.
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
