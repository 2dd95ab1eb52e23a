//! Where the checks report: the file, its source map and the diagnostics so far; and what
//! every check uses (step pointers, "did you mean" hints).

use std::path::Path;

use super::Diagnostic;
use crate::syntax::{SourceMap, push_pointer};

pub(super) struct Ctx<'a> {
    file: &'a Path,
    pub(super) base_dir: &'a Path,
    map: &'a SourceMap,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        file: &'a Path,
        base_dir: &'a Path,
        map: &'a SourceMap,
        diags: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Ctx { file, base_dir, map, diags }
    }

    pub(super) fn at(&mut self, pointer: &str, message: String) {
        self.diags.push(Diagnostic::new(self.file, self.map.value(pointer), message));
    }
    pub(super) fn at_key(&mut self, pointer: &str, message: String) {
        self.diags.push(Diagnostic::new(self.file, self.map.key(pointer), message));
    }
}

pub(super) fn step_pointer(id: &str) -> String {
    push_pointer("/steps", id)
}

pub(super) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .filter(|c| strsim(name, c) <= 2)
        .min_by_key(|c| strsim(name, c))
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, for "did you mean" hints.
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
