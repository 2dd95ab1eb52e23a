//! Executors: what carries out one attempt of one step.
//!
//! Every executor implements [`Executor`]; the engine wraps them with retries, timeouts and
//! tracing, so an executor only runs the work, streams its logs and reports how it ended.
//! Four executors so far: local processes, Docker containers (bollard), WASM plugins
//! (wasmtime) and built-in trainers (CPU, and GPU through cudarc); and one placement: a
//! `process:` step's attempt as a Slurm batch job (`slurm`).
//! This crate knows nothing of the engine.

mod container;
mod error;
mod executor;
mod outputs;
mod process;
mod slurm;
mod train;
mod wasm;

pub use container::{
    CONTAINER_ATTEMPT_DIR, CONTAINER_INPUTS_DIR, CONTAINER_RUN_DIR, ContainerExecutor, ContainerSpec,
    DockerConfig, EngineInfo, LABEL_ATTEMPT, LABEL_ITEM, LABEL_OWNER, LABEL_RUN, LABEL_STEP, PullPolicy,
    container_name,
};
pub use error::{ErrorKind, ExecError};
pub use executor::{
    ATTEMPT_REQUEST_VERSION, AttemptFiles, AttemptId, AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture,
    BuiltinSpec, ExecSpec, Executor, ExecutorSet, InputFile, KillSignal, KillSwitch, LogStream, Placement,
    ProcessSpec,
};
pub use outputs::{MAX_OUTPUTS_BYTES, open_step_file, read_outputs_file};
pub use process::stragglers::adopt_orphans;
pub use process::{ProcessExecutor, process_start_time, reap_process_group};
pub use slurm::{
    Adopt, ClusterInfo, JobState, SlurmConfig, SlurmExecutor, SlurmPlacement, array_spec, cluster_info,
    job_name, parse_array_tasks,
};
pub use train::{
    Device, Model, ModelKind, OptimizerKind, Throughput, TrainExecutor, TrainSpec, Trained, auc, gpu_slots,
    gpu_status, nvidia_driver, throughput, train,
};
pub use wasm::{
    DEFAULT_MAX_MEMORY, MAX_MEMORY_LIMIT, MAX_RESULT_BYTES, MAX_STDERR_BYTES, ModuleReport, WASI_P1,
    WASM_INPUTS_DIR, WASM_WORK_DIR, WasmConfig, WasmExecutor, WasmInfo, WasmSpec, check_module,
    wasmtime_version,
};
