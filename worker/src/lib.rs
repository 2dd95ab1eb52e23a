//! Executors: what carries out one attempt of one step.
//!
//! Every executor implements [`Executor`]; the engine wraps them with retries, timeouts and
//! tracing, so an executor only runs the work, streams its logs and reports how it ended.
//! This crate knows nothing of the engine.

mod error;
mod executor;
mod outputs;
mod process;

pub use error::{ErrorKind, ExecError};
pub use executor::{
    AttemptId, AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, ExecutorSet,
    KillSignal, KillSwitch, LogStream, ProcessSpec,
};
pub use outputs::{MAX_OUTPUTS_BYTES, read_outputs_file};
pub use process::{ProcessExecutor, process_start_time, reap_process_group};
