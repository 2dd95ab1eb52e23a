//! Deserializing the parsed value into spec types while collecting every type error.
//!
//! serde stops at the first error, so after each one the offending node is removed and
//! deserialization runs again; each error is located through the source map.

use std::path::Path;

use serde_json::Value;

use super::Diagnostic;
use crate::spec::Pipeline;
use crate::syntax::{SourceMap, display_pointer, push_pointer};

const MAX_ERRORS: usize = 100;

/// Returns the pipeline (with bad nodes pruned when there were errors) and whether the
/// pruned pipeline is still whole enough for the semantic checks (no step or parameter lost).
pub(super) fn deserialize(
    value: &Value,
    map: &SourceMap,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<(Pipeline, bool)> {
    if !value.is_object() {
        diags.push(Diagnostic::new(
            file,
            map.value(""),
            "a pipeline file must hold a map with `name` and `steps`",
        ));
        return None;
    }
    let mut value = value.clone();
    let mut removed: Vec<String> = Vec::new();
    let start = diags.len();
    for _ in 0..MAX_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, Pipeline>(&value) {
            Ok(p) => {
                let whole = diags.len() == start
                    || !removed.iter().any(|r| {
                        let depth = r.matches('/').count();
                        depth <= 2 && (r.starts_with("/steps") || r.starts_with("/params"))
                    });
                return Some((p, whole));
            }
            Err(e) => e,
        };
        let mut pointer = String::new();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Map { key } => pointer = push_pointer(&pointer, key),
                serde_path_to_error::Segment::Seq { index } => {
                    pointer = push_pointer(&pointer, &index.to_string())
                }
                _ => break,
            }
        }
        let message = err.inner().to_string();
        if let Some(field) = quoted_after(&message, "unknown field `") {
            let target = if pointer.ends_with(&format!("/{field}")) {
                pointer.clone()
            } else {
                push_pointer(&pointer, &field)
            };
            let expected =
                message.split_once(", expected ").map(|(_, e)| format!("; expected {e}")).unwrap_or_default();
            let parent = display_pointer(target.rsplit_once('/').map_or("", |(p, _)| p));
            diags.push(Diagnostic::new(
                file,
                map.key(&target),
                format!("unknown field `{field}` in {parent}{expected}"),
            ));
            if !remove(&mut value, &target) {
                break;
            }
            removed.push(target);
            continue;
        }
        if let Some(field) = quoted_after(&message, "missing field `") {
            // A field already reported as a bad value and removed is not missing a second
            // time. Either way, drop the object holding it and look for errors elsewhere.
            if !removed.contains(&push_pointer(&pointer, &field)) {
                diags.push(Diagnostic::new(
                    file,
                    map.value(&pointer),
                    format!("{} is missing the required field `{field}`", display_pointer(&pointer)),
                ));
            }
            if pointer.is_empty() || !remove(&mut value, &pointer) {
                break;
            }
            removed.push(pointer);
            continue;
        }
        diags.push(Diagnostic::new(
            file,
            map.value(&pointer),
            format!("{}: {}", display_pointer(&pointer), plain(&message)),
        ));
        if pointer.is_empty() || !remove(&mut value, &pointer) {
            break;
        }
        removed.push(pointer);
    }
    None
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// serde's wording, in the words a pipeline author uses.
fn plain(message: &str) -> String {
    message
        .replace("invalid type: ", "wrong type: found ")
        .replace("expected u32", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("expected i32", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("a sequence", "a list")
        .replace("expected a string", "expected text")
        .replace("string ", "text ")
        .replace("unknown variant", "unknown value")
}

fn remove(value: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return false };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(m)) => m.shift_remove(&last).is_some(),
        // Removing one element would shift the positions of the others away from the
        // source map, so a bad list element takes its whole list with it.
        Some(Value::Array(_)) => remove(value, parent),
        _ => false,
    }
}
