//! Reading a spec file into a JSON value plus a map from every node to its line and column.
//!
//! YAML goes through yaml-rust2's event parser, which reports positions; JSON is parsed by
//! serde_json (strict JSON, exact error positions) and, being YAML too, located the same way.
//! Both formats then share one deserialization and one set of error messages.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a spec file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy)]
struct NodeLoc {
    key: Option<Location>,
    value: Location,
}

/// Where each node of a parsed file came from, by JSON pointer (`/steps/train/needs/0`).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    nodes: HashMap<String, NodeLoc>,
}

impl SourceMap {
    /// The location of the value at `pointer`, or of its nearest located ancestor.
    pub fn value(&self, pointer: &str) -> Location {
        self.lookup(pointer, false)
    }

    /// The location of the key naming the value at `pointer` (for unknown or duplicate keys).
    pub fn key(&self, pointer: &str) -> Location {
        self.lookup(pointer, true)
    }

    fn lookup(&self, pointer: &str, key: bool) -> Location {
        let mut p = pointer;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return if key { n.key.unwrap_or(n.value) } else { n.value };
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Location { line: 1, column: 1 },
            }
        }
    }
}

/// Appends one segment to a JSON pointer.
pub fn push_pointer(base: &str, segment: &str) -> String {
    let mut p = String::with_capacity(base.len() + segment.len() + 1);
    p.push_str(base);
    p.push('/');
    for c in segment.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

/// A problem found while reading the file itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub location: Location,
    pub message: String,
}

/// The file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// The most values a spec may hold once its aliases are expanded: a pipeline of 10,000 steps
/// holds about 200,000. A YAML "billion laughs" file (anchors that each repeat the previous
/// one) stops here instead of growing without bound.
pub const MAX_NODES: usize = 1_000_000;
/// The most scalar text a spec may hold once its aliases are expanded.
pub const MAX_TEXT_BYTES: usize = 64 * 1024 * 1024;
/// How deeply lists and maps may nest.
pub const MAX_DEPTH: usize = 64;

/// Parses `text`; on success also returns non-fatal problems (duplicate keys). A leading
/// UTF-8 byte-order mark is ignored. What a file may expand to is bounded ([`MAX_NODES`],
/// [`MAX_TEXT_BYTES`], [`MAX_DEPTH`]); past a bound the file is an error at the node that
/// crossed it.
pub fn parse(text: &str, format: Format) -> Result<(Value, SourceMap, Vec<SyntaxError>), SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Json => {
            let value: Value = serde_json::from_str(text).map_err(|e| SyntaxError {
                location: Location { line: e.line().max(1), column: e.column().max(1) },
                message: format!("invalid JSON: {}", strip_position(&e.to_string())),
            })?;
            let (map, dups) = match parse_yaml(text) {
                Ok((_, map, dups)) => (map, dups),
                Err(_) => (SourceMap::default(), Vec::new()),
            };
            Ok((value, map, dups))
        }
        Format::Yaml => parse_yaml(text),
    }
}

fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

fn parse_yaml(text: &str) -> Result<(Value, SourceMap, Vec<SyntaxError>), SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        location: loc(e.marker()),
        message: format!("invalid YAML: {}", e.info()),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    let value = builder.root.unwrap_or(Value::Null);
    Ok((value, SourceMap { nodes: builder.nodes }, builder.duplicates))
}

fn loc(m: &Marker) -> Location {
    Location { line: m.line().max(1), column: m.col() + 1 }
}

enum Frame {
    Seq { items: Vec<Value>, pointer: String, anchor: usize },
    Map { map: Map<String, Value>, pointer: String, anchor: usize, key: Option<(String, Location)> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    nodes: HashMap<String, NodeLoc>,
    /// Each anchored value, with the values and scalar bytes it holds.
    anchors: HashMap<usize, (Value, Size)>,
    duplicates: Vec<SyntaxError>,
    error: Option<SyntaxError>,
    /// Values and scalar bytes so far, aliases expanded.
    total: Size,
}

/// How much a value holds: values (itself included) and scalar text bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    /// How deeply it nests (a scalar: 0).
    depth: usize,
}

impl Size {
    fn of(value: &Value) -> Size {
        let mut size = Size::default();
        let mut stack = vec![(value, 0)];
        while let Some((v, depth)) = stack.pop() {
            size.nodes += 1;
            size.depth = size.depth.max(depth);
            match v {
                Value::String(s) => size.bytes += s.len(),
                Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
                Value::Object(map) => {
                    size.bytes += map.keys().map(String::len).sum::<usize>();
                    stack.extend(map.values().map(|i| (i, depth + 1)));
                }
                _ => {}
            }
        }
        size
    }
}

impl Builder {
    /// The pointer and key location the next node will have; `None` when it is a mapping key.
    fn next_slot(&self) -> Option<(String, Option<Location>)> {
        match self.stack.last() {
            None => Some((String::new(), None)),
            Some(Frame::Seq { items, pointer, .. }) => {
                Some((push_pointer(pointer, &items.len().to_string()), None))
            }
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { key: Some((k, kloc)), pointer, .. }) => {
                Some((push_pointer(pointer, k), Some(*kloc)))
            }
        }
    }

    fn complete(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            let size = Size::of(&value);
            self.anchors.insert(anchor, (value.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, pointer, .. }) => {
                if let Some((k, kloc)) = key.take() {
                    if map.contains_key(&k) {
                        self.duplicates.push(SyntaxError {
                            location: kloc,
                            message: format!("duplicate key `{k}` in `{}`", display_pointer(pointer)),
                        });
                    }
                    map.insert(k, value);
                }
            }
        }
    }

    /// Counts `size` more values and bytes; past a bound, the file is an error at `mark`.
    fn grow(&mut self, mark: Marker, size: Size, alias: bool) -> bool {
        self.total.nodes += size.nodes;
        self.total.bytes += size.bytes;
        let how = if alias { "with its aliases expanded, " } else { "" };
        if self.total.nodes > MAX_NODES {
            self.fail(mark, &format!("{how}the file holds more than {MAX_NODES} values, the most a spec may hold (anchors that repeat each other, a YAML alias bomb, stop here)"));
        } else if self.total.bytes > MAX_TEXT_BYTES {
            self.fail(
                mark,
                &format!(
                    "{how}the file holds more than {MAX_TEXT_BYTES} bytes of text, the most a spec may hold"
                ),
            );
        }
        self.error.is_none()
    }

    fn fail(&mut self, mark: Marker, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { location: loc(&mark), message: message.to_string() });
        }
    }
}

/// A pointer as people write paths: `steps.train.needs[0]`.
pub fn display_pointer(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() { "the top level".to_string() } else { out }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => match self.next_slot() {
                None => {
                    let key_loc = loc(&mark);
                    if !self.grow(mark, Size { nodes: 0, bytes: text.len(), depth: 0 }, false) {
                        return;
                    }
                    if let Some(Frame::Map { key, pointer, map, .. }) = self.stack.last_mut() {
                        // A block map's own mark lies after its first key; point at the key.
                        if map.is_empty()
                            && let Some(n) = self.nodes.get_mut(pointer.as_str())
                            && (key_loc.line, key_loc.column) < (n.value.line, n.value.column)
                        {
                            n.value = key_loc;
                        }
                        *key = Some((text, key_loc));
                    }
                }
                Some((pointer, key)) => {
                    if !self.grow(mark, Size { nodes: 1, bytes: text.len(), depth: 0 }, false) {
                        return;
                    }
                    self.nodes.insert(pointer, NodeLoc { key, value: loc(&mark) });
                    let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                    let value = if style != TScalarStyle::Plain || is_str_tag {
                        Value::String(text)
                    } else {
                        resolve_plain(text)
                    };
                    self.complete(value, anchor);
                }
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let Some((pointer, key)) = self.next_slot() else {
                    return self.fail(mark, "a list or map cannot be a mapping key");
                };
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(
                        mark,
                        &format!("lists and maps nest more than {MAX_DEPTH} deep, the most a spec may"),
                    );
                }
                if !self.grow(mark, Size { nodes: 1, bytes: 0, depth: 0 }, false) {
                    return;
                }
                self.nodes.insert(pointer.clone(), NodeLoc { key, value: loc(&mark) });
                if matches!(ev, Event::SequenceStart(..)) {
                    self.stack.push(Frame::Seq { items: Vec::new(), pointer, anchor });
                } else {
                    self.stack.push(Frame::Map { map: Map::new(), pointer, anchor, key: None });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { items, anchor, .. }) => self.complete(Value::Array(items), anchor),
                Some(Frame::Map { map, anchor, .. }) => self.complete(Value::Object(map), anchor),
                None => {}
            },
            Event::Alias(id) => match self.next_slot() {
                None => self.fail(mark, "an alias cannot be a mapping key"),
                Some((pointer, key)) => {
                    let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                        return self.fail(mark, "an alias names no anchor before it");
                    };
                    // Aliases of aliases nest deeper with each one.
                    if self.stack.len() + size.depth >= MAX_DEPTH {
                        return self.fail(mark, &format!("with its aliases expanded, lists and maps nest more than {MAX_DEPTH} deep, the most a spec may"));
                    }
                    if !self.grow(mark, size, true) {
                        return;
                    }
                    self.nodes.insert(pointer, NodeLoc { key, value: loc(&mark) });
                    let value = self.anchors[&id].0.clone();
                    self.complete(value, 0);
                }
            },
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let t = text.as_str();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = t.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = t.trim_start_matches('+').parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = t.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = t.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float
        && let Ok(f) = t.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_and_locations() {
        let text = "name: x\nsteps:\n  a:\n    needs: [b, 'c']\n    n: 3\n    f: 0.5\n    t: true\n    z: ~\n    s: \"3\"\n";
        let (v, map, dups) = parse(text, Format::Yaml).unwrap();
        assert!(dups.is_empty());
        assert_eq!(v["steps"]["a"]["n"], 3);
        assert_eq!(v["steps"]["a"]["f"], 0.5);
        assert_eq!(v["steps"]["a"]["t"], true);
        assert!(v["steps"]["a"]["z"].is_null());
        assert_eq!(v["steps"]["a"]["s"], "3");
        assert_eq!(map.key("/steps/a"), Location { line: 3, column: 3 });
        assert_eq!(map.value("/steps/a/needs/1"), Location { line: 4, column: 16 });
        assert_eq!(map.key("/steps/a/n"), Location { line: 5, column: 5 });
        assert_eq!(map.value("/steps/a/missing/deeper"), map.value("/steps/a"));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let (_, _, dups) = parse("a: 1\nb: 2\na: 3\n", Format::Yaml).unwrap();
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].location, Location { line: 3, column: 1 });
        let (_, _, dups) = parse("{\"a\": 1,\n \"a\": 2}", Format::Json).unwrap();
        assert_eq!(dups[0].location.line, 2);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n", Format::Yaml).unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
        let e = parse("{\"a\": 1,,}", Format::Json).unwrap_err();
        assert_eq!(e.location, Location { line: 1, column: 9 });
    }

    #[test]
    fn anchors_and_aliases() {
        let (v, _, _) = parse("x: &e {A: 1}\ny: *e\n", Format::Yaml).unwrap();
        assert_eq!(v["y"]["A"], 1);
    }

    /// Anchors that each repeat the previous one ten times: 10^9 values if expanded.
    fn alias_bomb() -> String {
        let mut text = String::from(
            "name: bomb\nsteps:\n  a:\n    process: {command: [\"true\"]}\nx0: &x0 [a,a,a,a,a,a,a,a,a,a]\n",
        );
        for i in 1..=8 {
            let p = i - 1;
            text.push_str(&format!(
                "x{i}: &x{i} [*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p}]\n"
            ));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_a_located_error() {
        let text = alias_bomb();
        assert!(text.len() < 600, "{}", text.len());
        let e = parse(&text, Format::Yaml).unwrap_err();
        assert!(e.message.contains("more than 1000000 values"), "{}", e.message);
        assert!(e.message.contains("aliases expanded"), "{}", e.message);
        // At the alias that crossed the bound: on x5's line (x4 holds 10^5 values).
        assert_eq!(e.location.line, 10, "{e:?}");
    }

    #[test]
    fn nesting_is_bounded_directly_and_through_aliases() {
        let deep = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep, Format::Yaml).unwrap_err();
        assert!(e.message.contains("nest more than 64 deep"), "{}", e.message);
        let mut chain = String::from("a0: &a0 [x]\n");
        for i in 1..80 {
            chain.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let e = parse(&chain, Format::Yaml).unwrap_err();
        assert!(e.message.contains("aliases expanded, lists and maps nest"), "{}", e.message);
        let e = parse("a: *nowhere\n", Format::Yaml).unwrap_err();
        assert!(e.message.contains("anchor"), "{}", e.message);
        // Ordinary sharing still works.
        let (v, _, _) = parse("d: &d {n: 1}\nx: [*d, *d]\n", Format::Yaml).unwrap();
        assert_eq!(v["x"][1]["n"], 1);
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let (v, map, _) = parse("\u{feff}name: x\n", Format::Yaml).unwrap();
        assert_eq!(v["name"], "x");
        assert_eq!(map.key("/name"), Location { line: 1, column: 1 });
        let (v, _, _) = parse("\u{feff}{\"name\": \"x\"}", Format::Json).unwrap();
        assert_eq!(v["name"], "x");
    }

    #[test]
    fn pointers_display_as_paths() {
        assert_eq!(display_pointer("/steps/a/needs/0"), "steps.a.needs[0]");
        assert_eq!(display_pointer(""), "the top level");
    }
}
