//! The wasm executor against real wasmtime, with the plugins of tests/plugins.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::ErrorKind;
use crate::executor::{AttemptFiles, AttemptId, KillSwitch};

#[derive(Default)]
struct Log {
    chunks: Mutex<Vec<(LogStream, Vec<u8>)>>,
}

impl AttemptSink for Log {
    fn log(&self, stream: LogStream, chunk: &[u8]) {
        self.chunks.lock().unwrap().push((stream, chunk.to_vec()));
    }
    fn started(&self, _pid: u32) -> Result<(), String> {
        Ok(())
    }
}

impl Log {
    fn text(&self, stream: LogStream) -> String {
        let chunks = self.chunks.lock().unwrap();
        chunks
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
            .collect()
    }
}

fn plugin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins").join(name)
}

struct Fixture {
    dir: tempfile::TempDir,
    executor: WasmExecutor,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let executor = WasmExecutor::new(WasmConfig { cache_dir: Some(dir.path().join("cache")) });
        Self { dir, executor }
    }

    fn spec(&self, module: &str) -> WasmSpec {
        WasmSpec {
            module: plugin(module),
            input: json!({"config": {"answer": 42}, "params": {}, "step": "s"}),
            work_dir: self.dir.path().join("work"),
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }

    fn request(&self, spec: WasmSpec) -> AttemptRequest {
        let mut r = AttemptRequest::new(
            AttemptId { run: 1, step: "s".into(), item: 0, attempt: 1 },
            ExecSpec::Wasm(spec),
            AttemptFiles::at(self.dir.path().to_path_buf(), &self.dir.path().join("s.0.1"), false),
        );
        r.env = [("GREETING".to_string(), "hi".to_string())].into();
        r
    }

    async fn run(&self, spec: WasmSpec) -> (AttemptOutcome, Arc<Log>) {
        self.run_request(self.request(spec)).await
    }

    async fn run_request(&self, request: AttemptRequest) -> (AttemptOutcome, Arc<Log>) {
        let log = Arc::new(Log::default());
        let (_switch, rx) = KillSwitch::new();
        (self.executor.execute(request, log.clone(), rx).await, log)
    }
}

fn err(outcome: &AttemptOutcome) -> &ExecError {
    outcome.result.as_ref().expect_err("the attempt should fail")
}

#[tokio::test]
async fn a_plugin_reads_its_input_and_writes_outputs() {
    let f = Fixture::new();
    let (outcome, log) = f.run(f.spec("echo.wat")).await;
    assert_eq!(outcome.result, Ok(()));
    // The document arrives whole; the env is the step's and nothing of the engine's.
    assert_eq!(outcome.outputs["input"]["config"]["answer"], 42);
    assert_eq!(outcome.outputs["input"]["step"], "s");
    assert_eq!(outcome.outputs["env_count"], 1, "{:?}", outcome.outputs);
    assert_eq!(log.text(LogStream::Stderr), "hello from the plugin\n");

    // The trivial plugin: `{}` is success with no outputs.
    let (outcome, _) = f.run(f.spec("noop.wat")).await;
    assert_eq!(outcome.result, Ok(()));
    assert!(outcome.outputs.is_empty());
}

#[tokio::test]
async fn the_sandbox_holds() {
    let f = Fixture::new();
    let work = f.dir.path().join("work");
    std::os::unix::fs::symlink("/etc/passwd", work.join("passwd-link")).unwrap();
    std::fs::write(f.dir.path().join("secret.txt"), "root:x:0:0:secret").unwrap();
    let data = f.dir.path().join("data.csv");
    std::fs::write(&data, "a,b\n1,2\n").unwrap();
    let mut request = f.request(f.spec("escape.wat"));
    request.inputs = vec![InputFile { source: data.clone(), name: "data.csv".into() }];
    let (outcome, log) = f.run_request(request).await;
    assert_eq!(outcome.result, Ok(()), "{}", log.text(LogStream::System));
    for key in ["relative", "absolute", "symlink", "inputs_parent"] {
        let errno: u32 = outcome.outputs[key].as_str().unwrap().parse().unwrap();
        assert_ne!(errno, 0, "{key}: the plugin opened a file outside its folders");
    }
    assert!(!log.text(LogStream::Stderr).contains("root:"), "leaked: {}", log.text(LogStream::Stderr));
    // The inputs folder was for the attempt only; the input itself is untouched.
    assert!(!f.dir.path().join("s.0.1.inputs").exists());
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "a,b\n1,2\n");
}

#[tokio::test]
async fn hostile_plugins_fail_cleanly() {
    let f = Fixture::new();
    let mut spec = f.spec("grow.wat");
    spec.max_memory = 2 * 1024 * 1024;
    let (outcome, _) = f.run(spec).await;
    let e = err(&outcome);
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(e.message.contains("ran out of memory") && e.message.contains("limit of 2Mi"), "{}", e.message);

    let (outcome, _) = f.run(f.spec("flood.wat")).await;
    let e = err(&outcome);
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(e.message.contains("more than 1Mi to stdout"), "{}", e.message);

    let (outcome, _) = f.run(f.spec("nonjson.wat")).await;
    let e = err(&outcome);
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(
        e.message.contains("not a result document") && e.message.contains("hello, this is not JSON"),
        "{}",
        e.message
    );

    let (outcome, _) = f.run(f.spec("crash.wat")).await;
    let e = err(&outcome);
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(e.message.contains("crashed") && e.message.contains("unreachable"), "{}", e.message);

    let (outcome, _) = f.run(f.spec("exit3.wat")).await;
    assert_eq!(outcome.exit_code, Some(3));
    assert!(err(&outcome).message.contains("exited with code 3"));

    let (outcome, _) = f.run(f.spec("imports-env.wat")).await;
    let e = err(&outcome);
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(e.message.contains("may import only WASI preview 1"), "{}", e.message);
}

#[tokio::test]
async fn a_looping_plugin_stops_when_asked_and_blocks_nothing() {
    let f = Fixture::new();
    let (switch_a, rx_a) = KillSwitch::new();
    let (switch_b, rx_b) = KillSwitch::new();
    let log = Arc::new(Log::default());
    let started = Instant::now();
    let a = tokio::spawn(f.executor.execute(f.request(f.spec("loop.wat")), log.clone(), rx_a));
    let b = tokio::spawn(f.executor.execute(f.request(f.spec("loop.wat")), log.clone(), rx_b));
    // Two plugins spin on other threads; this (single-threaded) runtime still keeps time.
    let tick = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tick.elapsed() < Duration::from_secs(2), "the runtime was blocked for {:?}", tick.elapsed());
    assert!(!a.is_finished() && !b.is_finished(), "both plugins should still be running");
    switch_a.kill(Duration::from_secs(5));
    switch_b.kill(Duration::from_secs(5));
    for handle in [a, b] {
        let outcome = handle.await.unwrap();
        assert_eq!(err(&outcome).kind, ErrorKind::Cancelled);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
}

#[tokio::test]
async fn attempts_that_start_together_share_one_compilation() {
    let f = Fixture::new();
    let runs: Vec<_> = (0..16)
        .map(|_| {
            let (_switch, rx) = KillSwitch::new();
            tokio::spawn(f.executor.execute(f.request(f.spec("noop.wat")), Arc::new(Log::default()), rx))
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.unwrap().result, Ok(()));
    }
    assert_eq!(f.executor.runtime().unwrap().compilations.load(Ordering::Relaxed), 1);
}

#[test]
fn results_are_parsed_strictly() {
    let log = Log::default();
    let ok =
        parse_result(br#"{"outputs": {"n": 1}, "metrics": {"auc": 0.9}, "message": "fine"}"#, &log).unwrap();
    assert_eq!(ok["n"], 1);
    assert_eq!(ok["metrics"]["auc"], 0.9);
    assert!(log.text(LogStream::System).contains("plugin says: fine"));
    assert!(parse_result(b"  \n", &log).unwrap().is_empty());
    let failed = parse_result(br#"{"status": "failed", "message": "3 nulls in id"}"#, &log).unwrap_err();
    assert_eq!(failed.kind, ErrorKind::Fatal);
    assert!(failed.message.contains("3 nulls in id"));
    let unknown = parse_result(br#"{"output": {}}"#, &log).unwrap_err();
    assert!(unknown.message.contains("unknown field `output`"), "{}", unknown.message);
    let wrong = parse_result(br#"{"status": "maybe"}"#, &log).unwrap_err();
    assert!(wrong.message.contains("not a result document"), "{}", wrong.message);
}

#[test]
fn check_module_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ok = check_module(&plugin("echo.wat")).unwrap();
    assert_eq!(ok.imports, ["fd_read", "fd_write", "environ_sizes_get"]);
    assert_eq!(ok.initial_memory, 2 * 65536);

    let cases: Vec<(PathBuf, &str)> = vec![
        (write("empty.wasm", b""), "does not start with the `\\0asm` header"),
        (write("text.wasm", b"hello world"), "does not start with the `\\0asm` header"),
        (write("short.wasm", b"\0asm\x01\0"), "not a valid WebAssembly module"),
        // A type section that promises five bytes and holds two.
        (write("cut.wasm", b"\0asm\x01\0\0\0\x01\x05\x01\x60"), "not a valid WebAssembly module"),
        (write("bad.wat", b"(module (func (export \"_start\") (i32.add)))"), "not valid WebAssembly text"),
        (write("binary.wat", &[0xff, 0xfe, 0x00]), "neither a WebAssembly binary nor WebAssembly text"),
        (write("empty-module.wasm", b"\0asm\x01\0\0\0"), "does not export `_start`"),
        (
            write("nomem.wat", b"(module (func (export \"_start\")))"),
            "does not export its memory as `memory`",
        ),
        (
            write("unknown.wat", b"(module (import \"wasi_snapshot_preview1\" \"no_such_call\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))"),
            "no_such_call",
        ),
        (
            write("huge.wat", b"(module (memory (export \"memory\") 8192) (func (export \"_start\")))"),
            "over the default limit",
        ),
        (plugin("imports-env.wat"), "imports `env::host_secret`"),
        (plugin("reactor.wat"), "is a WASI reactor"),
        (dir.path().join("missing.wasm"), "cannot read the module"),
    ];
    for (path, want) in cases {
        let e = check_module(&path).expect_err(&path.display().to_string());
        assert!(e.message.contains(want), "{}: {}", path.display(), e.message);
    }
}

#[tokio::test]
async fn modules_are_compiled_once_and_cached_on_disk() {
    let f = Fixture::new();
    let module = f.dir.path().join("noop.wat");
    std::fs::copy(plugin("noop.wat"), &module).unwrap();
    f.executor.prepare(&module).unwrap();
    let cached = |dir: &Path| walk(dir).len();
    assert!(cached(&f.dir.path().join("cache")) > 0, "nothing in the disk cache");
    // In memory: the same template, without reading the file again.
    let rt = f.executor.runtime().unwrap();
    assert_eq!(rt.by_path.lock().unwrap().len(), 1);
    f.executor.instantiate(&module).unwrap();
    // A changed file is compiled again; a broken one is reported, not served from memory.
    std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"_start\") nop))  ")
        .unwrap();
    f.executor.prepare(&module).unwrap();
    std::fs::write(&module, "(module").unwrap();
    assert!(f.executor.prepare(&module).unwrap_err().message.contains("not valid WebAssembly text"));
}

#[tokio::test]
async fn a_panic_while_the_module_cache_is_locked_breaks_no_later_attempt() {
    let f = Fixture::new();
    let rt = f.executor.runtime().unwrap();
    for which in 0..2 {
        let held = rt.clone();
        let _ = std::thread::spawn(move || {
            let _cache = held.by_path.lock();
            let _compiling = (which == 1).then(|| held.compiling.lock());
            panic!("a panic while the module cache is locked");
        })
        .join();
        assert!(rt.by_path.is_poisoned());
        let (outcome, _) = f.run(f.spec("noop.wat")).await;
        assert_eq!(outcome.result, Ok(()), "after poisoning #{which}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn the_reported_wasmtime_version_is_the_one_built() {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap();
    let built = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'))
        .unwrap();
    assert_eq!(wasmtime_version(), built);
}
