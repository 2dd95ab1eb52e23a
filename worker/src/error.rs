//! The one error classification every executor shares.

use std::fmt;

/// What the engine should do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The work failed but may succeed if tried again (non-zero exit, crash).
    Retryable,
    /// Trying again cannot help (command not found, bad outputs, bad spec).
    Fatal,
    /// The attempt ran past its deadline and was stopped.
    Timeout,
    /// The attempt was stopped on request (cancel or shutdown).
    Cancelled,
}

/// A failed attempt: its classification and a sentence saying what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ExecError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ExecError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Retryable, message: message.into() }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Fatal, message: message.into() }
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Cancelled, message: message.into() }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
