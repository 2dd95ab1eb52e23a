//! A plugin's output streams, bounded: stdout into a buffer (its result), stderr into the
//! step log. Writing past the bound traps the plugin.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::runtime::human_bytes;
use crate::executor::{AttemptSink, LogStream};

/// One of a plugin's output streams: a bounded buffer (stdout) or the step log (stderr).
/// Writing past the bound traps the plugin.
#[derive(Clone)]
pub(super) struct Capture {
    inner: Arc<CaptureInner>,
}

struct CaptureInner {
    name: &'static str,
    limit: usize,
    written: AtomicUsize,
    overflowed: AtomicBool,
    target: CaptureTarget,
}

enum CaptureTarget {
    Buffer(Mutex<Vec<u8>>),
    Log(Arc<dyn AttemptSink>),
}

impl Capture {
    pub(super) fn buffer(limit: usize) -> Self {
        Self::new("stdout", limit, CaptureTarget::Buffer(Mutex::new(Vec::new())))
    }

    pub(super) fn log(sink: Arc<dyn AttemptSink>, limit: usize) -> Self {
        Self::new("stderr", limit, CaptureTarget::Log(sink))
    }

    fn new(name: &'static str, limit: usize, target: CaptureTarget) -> Self {
        Self {
            inner: Arc::new(CaptureInner {
                name,
                limit,
                written: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
                target,
            }),
        }
    }

    fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let before = self.inner.written.fetch_add(bytes.len(), Ordering::Relaxed);
        if before + bytes.len() > self.inner.limit {
            self.inner.overflowed.store(true, Ordering::Relaxed);
            return Err(self.overflow_message());
        }
        match &self.inner.target {
            CaptureTarget::Buffer(buf) => {
                buf.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes)
            }
            CaptureTarget::Log(sink) => sink.log(LogStream::Stderr, bytes),
        }
        Ok(())
    }

    fn overflow_message(&self) -> String {
        format!(
            "the plugin wrote more than {} to {}; the limit keeps a runaway plugin from filling the disk",
            human_bytes(self.inner.limit as u64),
            self.inner.name
        )
    }

    pub(super) fn overflow(&self) -> Option<String> {
        self.inner.overflowed.load(Ordering::Relaxed).then(|| self.overflow_message())
    }

    /// What was written to a buffer, taken out of it.
    pub(super) fn take(&self) -> Vec<u8> {
        match &self.inner.target {
            CaptureTarget::Buffer(buf) => {
                std::mem::take(&mut *buf.lock().unwrap_or_else(PoisonError::into_inner))
            }
            CaptureTarget::Log(_) => Vec::new(),
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Capture {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        Capture::write(self, &bytes).map_err(|m| wasmtime_wasi::p2::StreamError::trap(&m))
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Capture::write(&self, buf).map(|_| buf.len()).map_err(std::io::Error::other))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
