//! The outputs file protocol: a step writes one JSON object to the path in `SLUICE_OUTPUTS`.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ExecError;

/// Outputs larger than this are refused: outputs are for small values, not data.
pub const MAX_OUTPUTS_BYTES: u64 = 1024 * 1024;

/// Reads the outputs a step wrote. A missing or empty file means no outputs.
///
/// The step controls this path, so it is opened the one way that cannot block or leak: never
/// following a symbolic link (one to a private file would make its content the outputs),
/// non-blocking (a FIFO would wait for a writer forever), and refused unless it is a regular
/// file.
pub fn read_outputs_file(path: &Path) -> Result<Map<String, Value>, ExecError> {
    let file = match open_step_file(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(ExecError::fatal(format!("cannot read outputs file {}: {e}", path.display()))),
    };
    let mut text = Vec::new();
    file.take(MAX_OUTPUTS_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| ExecError::fatal(format!("cannot read outputs file {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_OUTPUTS_BYTES {
        return Err(ExecError::fatal(format!(
            "the step wrote more than {MAX_OUTPUTS_BYTES} bytes to SLUICE_OUTPUTS; outputs are for small values, write data to files"
        )));
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ExecError::fatal(format!(
            "SLUICE_OUTPUTS must hold a JSON object, but the step wrote a {}",
            json_kind(&other)
        ))),
        Err(e) => Err(ExecError::fatal(format!("the step wrote invalid JSON to SLUICE_OUTPUTS: {e}"))),
    }
}

/// Opens a file a step wrote for reading: no symbolic link followed at its last component,
/// non-blocking, and only a regular file.
pub fn open_step_file(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                std::io::Error::other("it is a symbolic link; a step writes its outputs to a regular file")
            } else {
                e
            }
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(std::io::Error::other(format!(
            "it is {what}; a step writes its outputs to a regular file"
        )));
    }
    Ok(file)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_rejects_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.json");
        assert!(read_outputs_file(&p).unwrap().is_empty());
        std::fs::write(&p, br#"{"a": 1}"#).unwrap();
        assert_eq!(read_outputs_file(&p).unwrap()["a"], 1);
        std::fs::write(&p, b"[1]").unwrap();
        assert!(read_outputs_file(&p).unwrap_err().message.contains("a list"));
        std::fs::write(&p, b"{nope").unwrap();
        assert!(read_outputs_file(&p).unwrap_err().message.contains("invalid JSON"));
        std::fs::write(&p, vec![b' '; (MAX_OUTPUTS_BYTES + 2) as usize]).unwrap();
        assert!(read_outputs_file(&p).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn only_a_regular_file_is_read_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, br#"{"token": "s3cret"}"#).unwrap();
        let link = dir.path().join("o.json");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read_outputs_file(&link).unwrap_err();
        assert!(e.message.contains("symbolic link"), "{}", e.message);
        assert!(!e.message.contains("s3cret"));

        let fifo = dir.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Returns at once (a blocking open would wait for a writer forever).
        let e = read_outputs_file(&fifo).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);
        let e = read_outputs_file(dir.path()).unwrap_err();
        assert!(e.message.contains("a folder"), "{}", e.message);
    }
}
