//! YAML the way kubectl reads it, and YAML that kubectl reads back exactly as written.
//!
//! kubectl turns YAML into JSON with go-yaml v2 (through sigs.k8s.io/yaml), which resolves
//! *plain* (unquoted) scalars by YAML 1.1 rules: `0644` is the octal integer 420, `yes`, `on` and
//! `y` are `true`, `~` is null. A YAML 1.2 library reads those as strings (so a manifest with
//! `defaultMode: 0644` would be refused) and writes strings such as `on` or `y` unquoted (so
//! kubectl would read a bool back). Here:
//!
//! - [`read_stream`] takes the syntax from saphyr's event parser (which reports how each scalar
//!   was written) and resolves plain scalars with go-yaml v2's rules ([`resolve_plain`]); quoted
//!   and block scalars are strings, as in kubectl. Anchors, aliases and merge keys (`<<`) work;
//!   a key twice in one mapping, a null, float or collection key, `.inf`/`.nan` (no JSON form)
//!   and unknown aliases are errors with the line.
//! - [`write_document`] writes block YAML whose strings are quoted whenever go-yaml v2, the
//!   YAML 1.1 type specs (sexagesimal `1:30`, timestamps, `0b1`, `=`) or YAML 1.2 could read them
//!   as anything but that string ([`needs_quotes`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Deepest nesting of sequences and mappings accepted (Kubernetes objects stay far below).
pub const MAX_DEPTH: usize = 256;
/// Most nodes that aliases may copy in one stream ("billion laughs" protection).
pub const MAX_ALIAS_NODES: usize = 1_000_000;

/// Why a YAML stream cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("YAML document {document}, line {line}: {message}")]
pub struct YamlError {
    /// 1-based index of the document in the stream.
    pub document: usize,
    pub line: usize,
    pub message: String,
}

/// What go-yaml v2 makes of a plain scalar.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    Str,
    Null,
    Bool(bool),
    Int(Number),
    Float(f64),
}

/// go-yaml v2's `resolve` for an untagged plain scalar: the YAML 1.1 booleans and nulls, then
/// (for text starting with a digit or sign, underscores removed) Go's `ParseInt(s, 0, 64)`
/// (`0644` octal, `0x`, `0o`, `0b`), `ParseUint`, and floats. Timestamps stay strings, as
/// go-yaml v2 keeps them when decoding into JSON; sexagesimal numbers are strings to go-yaml.
pub fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match s.as_bytes()[0] {
        b'.' => match s.parse::<f64>() {
            Ok(f) if f.is_finite() => Resolved::Float(f),
            _ => Resolved::Str,
        },
        b'0'..=b'9' | b'+' | b'-' => {
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int(&plain) {
                return Resolved::Int(i.into());
            }
            if let Some(u) = go_parse_uint(&plain) {
                return Resolved::Int(u.into());
            }
            static GO_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
                Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
                    .expect("valid pattern")
            });
            // Go's ParseFloat fails on overflow, so `1e400` stays a string.
            match plain.parse::<f64>() {
                Ok(f) if f.is_finite() && GO_FLOAT.is_match(&plain) => Resolved::Float(f),
                _ => Resolved::Str,
            }
        }
        _ => Resolved::Str,
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: `0x`/`0o`/`0b` prefixes, a leading `0` means octal.
fn go_parse_uint(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let (radix, digits) = match bytes {
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &s[2..]),
        [b'0', ..] => (8, &s[1..]),
        [] => return None,
        _ => (10, s),
    };
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if digits.is_empty() {
        return Some(0); // "0"
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then [`go_parse_uint`].
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, magnitude) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if magnitude.is_empty() {
        return None;
    }
    let magnitude = i128::from(go_parse_uint(magnitude)?);
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Whether a string written plain could be read back as anything else by go-yaml v2 (kubectl),
/// by the YAML 1.1 type specs (PyYAML and other 1.1 readers), or by YAML 1.2's core schema.
pub fn needs_quotes(s: &str) -> bool {
    static YAML11: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^(?:",
            r"[-+]?0b[01_]+",                                         // binary int
            r"|[-+]?0x[0-9a-fA-F_]+",                                 // hex int
            r"|[-+]?0o[0-7_]+",                                       // YAML 1.2 octal
            r"|[-+]?[0-9][0-9_]*",                                    // decimal and 0-octal int
            r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?",     // sexagesimal int, float
            r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9._]*(?:[eE][-+]?[0-9]+)?", // float
            r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+",                     // float without a dot
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            r"|<<|=|~",                                       // merge, value, null
            r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt \t].*)?", // timestamp
            r")$"
        ))
        .expect("valid pattern")
    });
    resolve_plain(s) != Resolved::Str || YAML11.is_match(s)
}

// === reading ===

/// Reads every document of a YAML stream into JSON, the way kubectl does. An empty document
/// is `Value::Null`.
pub fn read_stream(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let document = builder.docs.len() + 1;
        let (event, span) = event.map_err(|e| YamlError {
            document,
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        builder.event(event).map_err(|message| YamlError {
            document,
            line: span.start.line(),
            message,
        })?;
    }
    Ok(builder.docs)
}

enum Key {
    Name(String),
    Merge,
}

enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Value>,
    },
    Map {
        anchor: usize,
        entries: Map<String, Value>,
        key: Option<Key>,
        merges: Vec<Map<String, Value>>,
    },
}

/// A finished node: a value, or a plain `<<` (a merge key when it is in key position).
enum Node {
    Value(Value),
    MergeKey,
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Self::Value(v) => v,
            Self::MergeKey => Value::String("<<".to_owned()),
        }
    }
}

#[derive(Default)]
struct Builder {
    docs: Vec<Value>,
    root: Option<Value>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>) -> Result<(), String> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_) => {
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => self.docs.push(self.root.take().unwrap_or(Value::Null)),
            Event::Scalar(text, style, anchor, tag) => {
                let node = scalar(&text, style, tag.as_deref())?;
                if anchor > 0 {
                    let value = match &node {
                        Node::Value(v) => v.clone(),
                        Node::MergeKey => Value::String("<<".to_owned()),
                    };
                    self.anchors.insert(anchor, value);
                }
                self.complete(node)?;
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).ok_or(
                    "an alias refers to an anchor that is not defined before it (or to a node \
                     that contains the alias)",
                )?;
                self.alias_nodes += count_nodes(value);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(format!(
                        "aliases expand to more than {MAX_ALIAS_NODES} nodes"
                    ));
                }
                let value = value.clone();
                self.complete(Node::Value(value))?;
            }
            Event::SequenceStart(anchor, _) => self.push(Frame::Seq {
                anchor,
                items: Vec::new(),
            })?,
            Event::MappingStart(anchor, _) => self.push(Frame::Map {
                anchor,
                entries: Map::new(),
                key: None,
                merges: Vec::new(),
            })?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, value) = match self.stack.pop() {
                    Some(Frame::Seq { anchor, items }) => (anchor, Value::Array(items)),
                    Some(Frame::Map {
                        anchor,
                        mut entries,
                        merges,
                        ..
                    }) => {
                        // Keys written in the mapping win; among merged mappings, the first.
                        for merged in merges {
                            for (k, v) in merged {
                                entries.entry(k).or_insert(v);
                            }
                        }
                        (anchor, Value::Object(entries))
                    }
                    None => return Err("unbalanced YAML events".to_owned()),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.complete(Node::Value(value))?;
            }
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn complete(&mut self, node: Node) -> Result<(), String> {
        match self.stack.last_mut() {
            None => self.root = Some(node.into_value()),
            Some(Frame::Seq { items, .. }) => items.push(node.into_value()),
            Some(Frame::Map {
                entries,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    *key = Some(match node {
                        Node::MergeKey => Key::Merge,
                        Node::Value(v) => Key::Name(key_text(v)?),
                    });
                }
                Some(Key::Merge) => match node.into_value() {
                    Value::Object(map) => merges.push(map),
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        merges.extend(items.into_iter().filter_map(|v| match v {
                            Value::Object(map) => Some(map),
                            _ => None,
                        }));
                    }
                    _ => {
                        return Err(
                            "the value of a merge key << must be a mapping or a list of mappings"
                                .to_owned(),
                        );
                    }
                },
                Some(Key::Name(name)) => {
                    if entries.contains_key(&name) {
                        return Err(format!("key {name:?} appears twice in one mapping"));
                    }
                    entries.insert(name, node.into_value());
                }
            },
        }
        Ok(())
    }
}

/// A mapping key as sigs.k8s.io/yaml makes it a JSON key: text, integers and booleans as
/// their text; anything else cannot be a JSON key.
fn key_text(key: Value) -> Result<String, String> {
    match key {
        Value::String(s) => Ok(s),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if !n.is_f64() => Ok(n.to_string()),
        Value::Number(n) => Err(format!(
            "mapping key {n} reads as a floating-point number; quote it"
        )),
        Value::Null => Err("a mapping key is empty or null; quote it if it is text".to_owned()),
        Value::Array(_) | Value::Object(_) => {
            Err("a mapping key is a list or a mapping; JSON keys are text".to_owned())
        }
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// One scalar: quoted and block scalars are strings; plain ones are resolved; core-schema tags
/// (`!!str`, `!!int`, ...) force a type as in go-yaml; other tags leave the text a string.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Node, String> {
    let Some(tag) = tag else {
        return Ok(match style {
            ScalarStyle::Plain if text == "<<" => Node::MergeKey,
            ScalarStyle::Plain => Node::Value(resolved_value(text, resolve_plain(text))?),
            _ => Node::Value(Value::String(text.to_owned())),
        });
    };
    if !tag.is_yaml_core_schema() {
        return Ok(Node::Value(Value::String(text.to_owned())));
    }
    let resolved = resolve_plain(text);
    let wrong = |what: &str| Err(format!("{text:?} tagged !!{} is not {what}", tag.suffix));
    let value = match (tag.suffix.as_str(), &resolved) {
        ("str" | "timestamp", _) => Value::String(text.to_owned()),
        ("merge", _) if text == "<<" => return Ok(Node::MergeKey),
        ("null", Resolved::Null)
        | ("bool", Resolved::Bool(_))
        | ("int", Resolved::Int(_))
        | ("float", Resolved::Int(_) | Resolved::Float(_)) => resolved_value(text, resolved)?,
        ("null", _) => return wrong("null"),
        ("bool", _) => return wrong("a YAML 1.1 boolean"),
        ("int", _) => return wrong("an integer"),
        ("float", _) => return wrong("a number"),
        (other, _) => return Err(format!("tag !!{other} is not supported on a scalar")),
    };
    Ok(Node::Value(value))
}

/// The JSON value kubectl sends for a resolved scalar: Go's encoding/json writes an integral
/// float without a fraction (`1e3` becomes `1000`), so such floats become integers here too.
fn resolved_value(text: &str, resolved: Resolved) -> Result<Value, String> {
    Ok(match resolved {
        Resolved::Str => Value::String(text.to_owned()),
        Resolved::Null => Value::Null,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(n) => Value::Number(n),
        Resolved::Float(f) if !f.is_finite() => {
            return Err(format!(
                "{text} is not a finite number and has no JSON form; quote it if it is text"
            ));
        }
        // An integral f64 below 2^63 is exactly an i64, so the cast loses nothing.
        Resolved::Float(f) if f.fract() == 0.0 && (-9.2e18..9.2e18).contains(&f) => {
            Value::Number(Number::from(f as i64))
        }
        Resolved::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
    })
}

// === writing ===

/// One document as block YAML (keys in the order of the map, 2-space indentation, sequences in
/// mappings not indented, as kubectl writes them), ending with a newline.
pub fn write_document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        scalar => {
            out.push_str(&scalar_text(scalar, 2));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A mapping whose keys start at column `n`; `inline` when the first key goes on the current
/// line (after `- `).
fn write_mapping(out: &mut String, map: &Map<String, Value>, n: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, n);
        }
        let key = flow_string(key);
        // An implicit key is limited to 1024 characters; longer ones need the explicit form.
        if key.chars().count() > 1000 {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            indent(out, n);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_mapping(out, m, n + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, n, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar, n + 2));
                out.push('\n');
            }
        }
    }
}

/// A sequence whose dashes are at column `n`.
fn write_sequence(out: &mut String, items: &[Value], n: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, n);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, n + 2, true),
            Value::Array(inner) if !inner.is_empty() => write_sequence(out, inner, n + 2, true),
            scalar => {
                out.push_str(&scalar_text(scalar, n + 2));
                out.push('\n');
            }
        }
    }
}

/// A scalar or empty collection; block scalars put their lines at column `n`.
fn scalar_text(value: &Value, n: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(num) if num.is_f64() => float_text(&num.to_string()),
        Value::Number(num) => num.to_string(),
        Value::String(s) => literal_block(s, n).unwrap_or_else(|| flow_string(s)),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// YAML 1.1 floats need a dot and a signed exponent (`1e20` is a string to PyYAML).
fn float_text(text: &str) -> String {
    let Some((mantissa, exponent)) = text.split_once(['e', 'E']) else {
        return text.to_owned();
    };
    let mantissa = if mantissa.contains('.') {
        mantissa.to_owned()
    } else {
        format!("{mantissa}.0")
    };
    let exponent = if exponent.starts_with(['-', '+']) {
        exponent.to_owned()
    } else {
        format!("+{exponent}")
    };
    format!("{mantissa}e{exponent}")
}

/// Characters that may appear unescaped in plain and quoted scalars: YAML 1.1 printable
/// characters less tabs, line breaks (YAML 1.1 also breaks lines at U+0085, U+2028, U+2029)
/// and the byte order mark.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

/// Whether `s` can be written unquoted and be read back as this very string.
fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let second = chars.next();
    let indicator = match first {
        '[' | ']' | '{' | '}' | ',' | '#' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%'
        | '@' | '`' | ' ' => true,
        // Allowed first when followed by a non-space (`-v`, `:x`).
        '-' | '?' | ':' => second.is_none_or(|c| c == ' '),
        _ => false,
    };
    !indicator
        && !s.ends_with([' ', ':'])
        && !s.starts_with("---")
        && !s.starts_with("...")
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(printable)
        && !needs_quotes(s)
}

/// A string on one line: plain when safe, else single-quoted, else double-quoted with escapes.
fn flow_string(s: &str) -> String {
    if plain_ok(s) {
        return s.to_owned();
    }
    if s.chars().all(printable) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// A multi-line string as a literal block (`|`, or `|-` without a final newline) with its lines
/// at column `n`, when that reads back exactly: no leading space or break (the indentation
/// would be misread), no space before a line break or at the end, only printable characters,
/// at most one final newline.
fn literal_block(s: &str, n: usize) -> Option<String> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let fits = body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with([' ', '\n'])
        && !body.ends_with(' ')
        && !body.contains(" \n")
        && body.chars().all(|c| c == '\n' || printable(c));
    if !fits {
        return None;
    }
    let mut out = String::from(if body.len() == s.len() { "|-" } else { "|" });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', n));
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read_one(text: &str) -> Value {
        read_stream(text).unwrap().remove(0)
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2_does() {
        let doc = read_one(concat!(
            "octal: 0644\nzero: 0\nhex: 0x1F\nbinary: 0b101\nnew_octal: 0o17\n",
            "underscores: 1_000\nsigned: -0644\nplus: +12\nfloat: 1.5\nexp: 1e3\n",
            "dot: .5\neight: 08\nyes_word: yes\non_word: On\ny: y\nN: N\noff_word: off\n",
            "tilde: ~\nempty:\nnull_word: Null\nsexagesimal: 1:30\n",
            "date: 2026-01-01\nversion: 1.0.0\nhuge: 18446744073709551615\n",
            "too_big: 1e400\ntext: 8443=8080\n",
        ));
        assert_eq!(
            doc,
            json!({
                "octal": 420, "zero": 0, "hex": 31, "binary": 5, "new_octal": 15,
                "underscores": 1000, "signed": -420, "plus": 12, "float": 1.5, "exp": 1000,
                "dot": 0.5, "eight": 8, "yes_word": true, "on_word": true, "true": true,
                "false": false, "off_word": false, "tilde": null, "empty": null, "null_word": null,
                "sexagesimal": "1:30", "date": "2026-01-01", "version": "1.0.0",
                "huge": 18_446_744_073_709_551_615_u64, "too_big": "1e400", "text": "8443=8080",
            })
        );
    }

    #[test]
    fn quoted_block_and_str_tagged_scalars_stay_strings() {
        let doc = read_one(concat!(
            "a: \"0644\"\nb: 'on'\nc: !!str yes\nd: |\n  y\ne: >-\n  0x1F\n",
            "f: !!int \"0644\"\ng: !custom 12\n"
        ));
        assert_eq!(
            doc,
            json!({"a": "0644", "b": "on", "c": "yes", "d": "y\n", "e": "0x1F", "f": 420, "g": "12"})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let doc = read_one(concat!(
            "base: &base {a: 1, b: 2}\nother: &other {b: 20, c: 30}\n",
            "merged:\n  <<: [*base, *other]\n  a: 10\n",
            "list: &l [x, z]\ncopy: *l\n"
        ));
        assert_eq!(doc["merged"], json!({"a": 10, "b": 2, "c": 30}));
        assert_eq!(doc["copy"], json!(["x", "z"]));
    }

    #[test]
    fn refuses_what_kubectl_cannot_send_with_the_line() {
        let cases = [
            ("a: 1\nb: 2\na: 3\n", 3, "key \"a\" appears twice"),
            ("a: .inf\n", 1, "no JSON form"),
            ("x: 1\n1.5: float key\n", 2, "floating-point"),
            ("~: null key\n", 1, "null"),
            ("a: *nowhere\n", 1, "anchor"),
            ("a: !!int twelve\n", 1, "is not an integer"),
            ("a: [unclosed\n", 2, ""),
            ("<<: 5\n", 1, "merge key"),
        ];
        for (text, line, needle) in cases {
            let e = read_stream(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
        let e = read_stream("ok: 1\n---\na: 1\na: 2\n").unwrap_err();
        assert_eq!(e.document, 2, "{e}");
    }

    #[test]
    fn alias_expansion_and_depth_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let e = read_stream(&text).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{e}");
        let deep: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect();
        let e = read_stream(&deep).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
    }

    #[test]
    fn empty_documents_are_null() {
        let docs = read_stream("---\n---\na: 1\n---\n").unwrap();
        assert_eq!(docs, [Value::Null, json!({"a": 1}), Value::Null]);
    }

    /// Strings that are something else to some YAML reader when written plain.
    const AMBIGUOUS: &[&str] = &[
        "on",
        "On",
        "ON",
        "off",
        "yes",
        "Yes",
        "no",
        "NO",
        "y",
        "Y",
        "n",
        "N",
        "true",
        "False",
        "~",
        "null",
        "Null",
        "",
        "0644",
        "0",
        "-1",
        "+12",
        "0x1F",
        "0o17",
        "0b101",
        "1_000",
        "1:30",
        "190:20:30",
        "1:30.5",
        "1.5",
        ".5",
        "1.",
        "1e3",
        "1.0e+3",
        "1.2.3",
        ".inf",
        "-.Inf",
        ".nan",
        "<<",
        "=",
        "2026-01-01",
        "2001-12-14t21:59:43.10-05:00",
        "08",
    ];

    #[test]
    fn ambiguous_strings_are_quoted_and_read_back_as_strings() {
        for s in AMBIGUOUS {
            let text = write_document(&json!({ "k": s }));
            assert!(
                text.contains(&format!("k: '{s}'")) || text.contains(&format!("k: \"{s}\"")),
                "{s:?} not quoted: {text}"
            );
            assert_eq!(read_one(&text)["k"], json!(s), "{text}");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "8443=8080",
            "0.0.0.0:15700",
            "registry.example.com/web:1.0.0",
            "--log-level=debug",
            "-v",
            "100m",
            "64Mi",
            "spiffe://cluster.local/ns/a/sa/b",
            "a,b",
            "Always",
        ] {
            let text = write_document(&json!({ "k": s }));
            assert_eq!(text, format!("k: {s}\n"));
        }
    }

    #[test]
    fn any_string_reads_back_unchanged() {
        let strings = [
            "multi\nline\n",
            "multi\nline",
            "two trailing\n\n",
            " leading space\nx",
            "\nleading break",
            "trailing space \nx",
            "tab\there",
            "quote ' and \" and \\",
            "key: value",
            "a #comment",
            "# comment",
            "- item",
            "---",
            "...",
            "nel\u{85}line",
            "ls\u{2028}line",
            "bell\u{7}",
            "bom\u{FEFF}",
            "ünïcødé ✓ 😀",
            "ends with colon:",
            "  ",
            "[flow]",
            "{flow}",
            "&anchor",
            "*alias",
            "!tag",
            "|",
            ">",
            "%",
            "@",
            "`",
            "? x",
            ": x",
            "crlf\r\nline",
        ];
        for &s in strings.iter().chain(AMBIGUOUS) {
            for doc in [
                json!({ "k": s }),
                json!({ s: "v" }),
                json!({"l": [s, {"m": s}]}),
            ] {
                let text = write_document(&doc);
                assert_eq!(read_one(&text), doc, "{s:?} wrote\n{text}");
            }
        }
        let long_key = "k".repeat(2000);
        let doc = json!({ long_key: 1 });
        assert_eq!(read_one(&write_document(&doc)), doc);
    }

    #[test]
    fn writes_block_style_like_kubectl_keeping_the_key_order() {
        let doc = json!({
            "apiVersion": "v1",
            "spec": {
                "containers": [{"name": "a", "args": ["--x", "y"]}, {"name": "b", "ports": []}],
                "nested": [[1, 2], []],
                "empty": {},
                "script": "set -e\necho hi\n",
                "number": 1.5e20,
            }
        });
        let text = write_document(&doc);
        assert_eq!(
            text,
            concat!(
                "apiVersion: v1\n",
                "spec:\n",
                "  containers:\n",
                "  - name: a\n",
                "    args:\n",
                "    - --x\n",
                "    - 'y'\n",
                "  - name: b\n",
                "    ports: []\n",
                "  nested:\n",
                "  - - 1\n",
                "    - 2\n",
                "  - []\n",
                "  empty: {}\n",
                "  script: |\n",
                "    set -e\n",
                "    echo hi\n",
                "  number: 1.5e+20\n",
            )
        );
        assert_eq!(read_one(&text), doc);
    }
}
