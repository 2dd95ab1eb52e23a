//! Writing (and, for tests, reading) the safetensors format: an 8-byte little-endian header
//! length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
//! little-endian data. What PyTorch, JAX and Hugging Face tools load.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Encodes `f32` tensors (name, shape, data) with string metadata.
pub(crate) fn encode(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let end = offset + data.len() * 4;
        header.insert(name.clone(), json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut text = serde_json::to_vec(&Value::Object(header)).unwrap_or_default();
    // The data starts 8-byte aligned.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for (_, _, data) in tensors {
        for v in *data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A decoded tensor: its shape and its values.
#[cfg(test)]
pub(crate) type Tensor = (Vec<usize>, Vec<f32>);

/// Decodes what [`encode`] wrote: tensors by name.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, String> {
    let len =
        u64::from_le_bytes(bytes.get(..8).ok_or("short file")?.try_into().map_err(|_| "short")?) as usize;
    let header: Map<String, Value> =
        serde_json::from_slice(bytes.get(8..8 + len).ok_or("short header")?).map_err(|e| e.to_string())?;
    let data = &bytes[8 + len..];
    let mut out = BTreeMap::new();
    for (name, t) in header {
        if name == "__metadata__" {
            continue;
        }
        if t["dtype"] != "F32" {
            return Err(format!("{name}: dtype {}", t["dtype"]));
        }
        let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).map_err(|e| e.to_string())?;
        let range: [usize; 2] =
            serde_json::from_value(t["data_offsets"].clone()).map_err(|e| e.to_string())?;
        let raw = data.get(range[0]..range[1]).ok_or("bad offsets")?;
        let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (shape, values));
    }
    Ok(out)
}
