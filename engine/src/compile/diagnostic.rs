//! A compile error with its place in the file.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::syntax::Location;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub location: Location,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, location: Location, message: impl Into<String>) -> Self {
        let location = if location.line == 0 { Location { line: 1, column: 1 } } else { location };
        Self { file: file.to_path_buf(), location, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.location.line, self.location.column, self.message)
    }
}
