//! Schema evolution: can the current schema of an event read data written with a
//! committed one, and can the committed one read data written with the current one?
//!
//! The rules are Avro's [schema resolution]: record fields are matched by name (or a
//! reader alias), a reader field the writer lacks needs a default, writer fields the
//! reader lacks are skipped, `int`→`long`→`float`→`double` and `string`↔`bytes` are
//! promotions, a union on either side is resolved branch by branch, arrays and maps
//! resolve their items and values, named types keep their names, enums their symbols and
//! fixed types their sizes. Every problem is reported, with the path of the field.
//!
//! [schema resolution]: https://avro.apache.org/docs/1.11.1/specification/#schema-resolution
//!
//! Why one file of ~700 lines (and its tests): the resolution rules are one recursive
//! walk over a (reader, writer) pair of schemas, each rule a branch of the same match.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::event::registry;

/// Which schema reads and which one wrote the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The current schema reads data written with the committed one (new consumers, data
    /// from old producers).
    CurrentReadsCommitted,
    /// The committed schema reads data written with the current one (old consumers, data
    /// from new producers).
    CommittedReadsCurrent,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::CurrentReadsCommitted => "the current schema cannot read data written with the committed one",
            Direction::CommittedReadsCurrent => "the committed schema cannot read data written with the current one",
        })
    }
}

/// What prevents a reader schema from reading a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The reader has a field the writer lacks, and the field has no default.
    MissingDefault,
    /// The types cannot be resolved (neither equal nor a promotion).
    TypeChanged {
        /// The reader's type.
        reader: String,
        /// The writer's type.
        writer: String,
    },
    /// Named types (records, enums, fixed) of different names.
    NameChanged {
        /// The reader's name.
        reader: String,
        /// The writer's name.
        writer: String,
    },
    /// A branch of the writer's union that no branch of the reader's union can read.
    UnionBranchUnreadable {
        /// The writer's branch.
        writer: String,
    },
    /// A writer enum symbol the reader lacks, and the reader enum has no default.
    EnumSymbolMissing {
        /// The symbol.
        symbol: String,
    },
    /// Fixed types of different sizes.
    FixedSizeChanged {
        /// The reader's size.
        reader: u64,
        /// The writer's size.
        writer: u64,
    },
    /// A schema is not valid Avro (or a file cannot be read or parsed).
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A committed schema names an event type that is not registered in this binary (the
    /// event was removed or renamed, or its crate is not linked).
    UnknownEvent,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingDefault => f.write_str("the writer lacks this field and the reader gives it no default"),
            Problem::TypeChanged { reader, writer } => write!(f, "type changed: reader {reader}, writer {writer}"),
            Problem::NameChanged { reader, writer } => write!(f, "name changed: reader {reader}, writer {writer}"),
            Problem::UnionBranchUnreadable { writer } => {
                write!(f, "the reader's union has no branch for the writer's {writer}")
            }
            Problem::EnumSymbolMissing { symbol } => {
                write!(
                    f,
                    "enum symbol {symbol:?} is missing from the reader and it has no default"
                )
            }
            Problem::FixedSizeChanged { reader, writer } => {
                write!(f, "fixed size changed: reader {reader}, writer {writer}")
            }
            Problem::Invalid { message } => write!(f, "invalid schema: {message}"),
            Problem::UnknownEvent => f.write_str("no event of this type is registered in this binary"),
        }
    }
}

/// One problem found resolving a reader schema against a writer schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Path of the field, fields separated by `.`, `[]` for array items and `{}` for map
    /// values (`enrollment.user.pii.email`); empty for the top of the schema.
    pub field: String,
    /// What is wrong there.
    pub problem: Problem,
}

/// One incompatibility between the current schema of an event and a committed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The event type.
    pub event_type: String,
    /// The committed `.avsc` file.
    pub file: PathBuf,
    /// Which way the data cannot be read; `None` for a file that could not be checked.
    pub direction: Option<Direction>,
    /// Path of the field (see [`Mismatch::field`]).
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.event_type)?;
        if !self.field.is_empty() {
            write!(f, ", field `{}`", self.field)?;
        }
        if let Some(direction) = self.direction {
            write!(f, ": {direction}")?;
        }
        write!(f, ": {} ({})", self.problem, self.file.display())
    }
}

/// Checks every committed schema in `dir` (files named as openedx-events names them,
/// `<event type with . replaced by +>_schema.avsc`) against the schema this binary
/// generates for that event type, both ways: the current schema must read data written
/// with the committed one, and the committed one must read data written with the current
/// one. Returns how many schemas were checked, or every incompatibility found.
///
/// Events registered in the binary without a committed file are not checked (commit a
/// file with [`write_schema_files`](super::write_schema_files) when you add an event).
///
/// ```no_run
/// // In a test of your crate, with the files committed under `schemas/`:
/// openedx_events::avro::assert_compatible(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"));
/// ```
pub fn check_compatibility(dir: impl AsRef<Path>) -> Result<usize, Vec<Incompatibility>> {
    let dir = dir.as_ref();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Err(vec![Incompatibility {
                event_type: String::new(),
                file: dir.to_owned(),
                direction: None,
                field: String::new(),
                problem: Problem::Invalid {
                    message: format!("cannot read the directory: {e}"),
                },
            }])
        }
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut checked = 0;
    for file in files {
        let Some(event_type) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix("_schema.avsc"))
            .map(|stem| stem.replace('+', "."))
        else {
            continue;
        };
        checked += 1;
        let report = |direction, field: String, problem| Incompatibility {
            event_type: event_type.clone(),
            file: file.clone(),
            direction,
            field,
            problem,
        };
        let committed = match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(message) => {
                problems.push(report(None, String::new(), Problem::Invalid { message }));
                continue;
            }
        };
        let Some(descriptor) = registry::find(&event_type) else {
            problems.push(report(None, String::new(), Problem::UnknownEvent));
            continue;
        };
        let current = descriptor.ops().schema().json();
        for (direction, reader, writer) in [
            (Direction::CurrentReadsCommitted, current, &committed),
            (Direction::CommittedReadsCurrent, &committed, current),
        ] {
            for m in schema_mismatches(reader, writer) {
                problems.push(report(Some(direction), m.field, m.problem));
            }
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// [`check_compatibility`] for tests: panics listing every incompatibility, one per
/// line; returns how many schemas were checked.
#[track_caller]
pub fn assert_compatible(dir: impl AsRef<Path>) -> usize {
    match check_compatibility(dir.as_ref()) {
        Ok(n) => n,
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            panic!(
                "{} schema incompatibilities against {}:\n{}",
                problems.len(),
                dir.as_ref().display(),
                lines.join("\n")
            )
        }
    }
}

/// Everything that prevents `reader` from reading data written with `writer` (both
/// Avro schemas as JSON); empty when the data can be read.
///
/// ```
/// use openedx_events::avro::{schema_mismatches, Problem};
/// use serde_json::json;
/// let old = json!({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]});
/// let new = json!({"type": "record", "name": "R", "fields": [
///     {"name": "a", "type": "double"},
///     {"name": "b", "type": "string"},
/// ]});
/// let found = schema_mismatches(&new, &old);
/// assert_eq!(found.len(), 1);
/// assert_eq!(found[0].field, "b");
/// assert_eq!(found[0].problem, Problem::MissingDefault);
/// // `long` to `double` is a promotion, the reverse is not.
/// assert_eq!(schema_mismatches(&old, &new)[0].field, "a");
/// ```
pub fn schema_mismatches(reader: &Value, writer: &Value) -> Vec<Mismatch> {
    let (reader, writer) = match (Parsed::new(reader), Parsed::new(writer)) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(message), _) | (_, Err(message)) => {
            return vec![Mismatch {
                field: String::new(),
                problem: Problem::Invalid { message },
            }]
        }
    };
    let mut cx = Resolve {
        reader: &reader,
        writer: &writer,
        out: Vec::new(),
        visiting: HashSet::new(),
    };
    cx.resolve(reader.root, writer.root, &mut String::new());
    cx.out
}

/// A schema node; references to other nodes are indices into [`Parsed::nodes`].
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record {
        name: String,
        aliases: Vec<String>,
        fields: Vec<Field>,
    },
    Enum {
        name: String,
        aliases: Vec<String>,
        symbols: Vec<String>,
        has_default: bool,
    },
    Fixed {
        name: String,
        aliases: Vec<String>,
        size: u64,
    },
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    aliases: Vec<String>,
    ty: usize,
    has_default: bool,
}

/// A schema parsed into a graph, named types resolved.
struct Parsed {
    nodes: Vec<Node>,
    root: usize,
}

fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Parsed {
    fn new(schema: &Value) -> Result<Self, String> {
        let mut p = Parser {
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = p.parse(schema, "", 0)?;
        Ok(Parsed { nodes: p.nodes, root })
    }
}

struct Parser {
    nodes: Vec<Node>,
    named: HashMap<String, usize>,
}

/// Deeper schemas are refused rather than risk the stack.
const MAX_DEPTH: usize = 128;

impl Parser {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn primitive(name: &str) -> Option<Node> {
        Some(match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::String,
            _ => return None,
        })
    }

    fn reference(&self, name: &str, ns: &str) -> Result<usize, String> {
        let full = if name.contains('.') || ns.is_empty() {
            name.to_owned()
        } else {
            format!("{ns}.{name}")
        };
        self.named
            .get(&full)
            .or_else(|| self.named.get(name))
            .copied()
            .ok_or_else(|| format!("unknown type {name:?}"))
    }

    fn parse(&mut self, schema: &Value, ns: &str, depth: usize) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err("schema nested too deeply".to_owned());
        }
        match schema {
            Value::String(name) => match Self::primitive(name) {
                Some(node) => Ok(self.push(node)),
                None => self.reference(name, ns),
            },
            Value::Array(branches) => {
                let mut ids = Vec::with_capacity(branches.len());
                for b in branches {
                    ids.push(self.parse(b, ns, depth + 1)?);
                }
                Ok(self.push(Node::Union(ids)))
            }
            Value::Object(obj) => {
                let ty = obj.get("type").ok_or("a schema object without \"type\"")?;
                let Some(ty_name) = ty.as_str() else {
                    return self.parse(ty, ns, depth + 1);
                };
                match ty_name {
                    "array" => {
                        let items = self.parse(obj.get("items").ok_or("an array without \"items\"")?, ns, depth + 1)?;
                        Ok(self.push(Node::Array(items)))
                    }
                    "map" => {
                        let values = self.parse(obj.get("values").ok_or("a map without \"values\"")?, ns, depth + 1)?;
                        Ok(self.push(Node::Map(values)))
                    }
                    "record" | "error" | "enum" | "fixed" => self.parse_named(obj, ty_name, ns, depth),
                    other => match Self::primitive(other) {
                        Some(node) => Ok(self.push(node)),
                        None => self.reference(other, ns),
                    },
                }
            }
            other => Err(format!("{other} is not a schema")),
        }
    }

    fn parse_named(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        kind: &str,
        ns: &str,
        depth: usize,
    ) -> Result<usize, String> {
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("a {kind} without a name"))?;
        let own_ns = obj.get("namespace").and_then(Value::as_str).unwrap_or(ns);
        let full = if name.contains('.') || own_ns.is_empty() {
            name.to_owned()
        } else {
            format!("{own_ns}.{name}")
        };
        let inner_ns = full.rsplit_once('.').map_or("", |(n, _)| n).to_owned();
        let aliases = strings(obj.get("aliases"));
        // Registered before the fields are parsed, so a record may refer to itself.
        let id = self.push(Node::Null);
        if self.named.insert(full.clone(), id).is_some() {
            return Err(format!("type {full} is defined twice"));
        }
        let node = match kind {
            "enum" => Node::Enum {
                name: full,
                aliases,
                symbols: strings(obj.get("symbols")),
                has_default: obj.contains_key("default"),
            },
            "fixed" => Node::Fixed {
                name: full,
                aliases,
                size: obj
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or("a fixed type without a size")?,
            },
            _ => {
                let raw = obj
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("record {full} without fields"))?;
                let mut fields = Vec::with_capacity(raw.len());
                for f in raw {
                    let fname = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("a field of {full} without a name"))?;
                    let ty = f
                        .get("type")
                        .ok_or_else(|| format!("field {fname} of {full} without a type"))?;
                    fields.push(Field {
                        name: fname.to_owned(),
                        aliases: strings(f.get("aliases")),
                        ty: self.parse(ty, &inner_ns, depth + 1)?,
                        has_default: f.get("default").is_some(),
                    });
                }
                Node::Record {
                    name: full,
                    aliases,
                    fields,
                }
            }
        };
        self.nodes[id] = node;
        Ok(id)
    }
}

struct Resolve<'a> {
    reader: &'a Parsed,
    writer: &'a Parsed,
    out: Vec<Mismatch>,
    /// Record pairs being resolved, so recursive types end.
    visiting: HashSet<(usize, usize)>,
}

/// How well a reader node can take a writer node, for picking a union branch.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    No,
    Promotion,
    Same,
}

fn describe(p: &Parsed, id: usize) -> String {
    match &p.nodes[id] {
        Node::Null => "null".into(),
        Node::Boolean => "boolean".into(),
        Node::Int => "int".into(),
        Node::Long => "long".into(),
        Node::Float => "float".into(),
        Node::Double => "double".into(),
        Node::Bytes => "bytes".into(),
        Node::String => "string".into(),
        Node::Array(items) => format!("array<{}>", describe(p, *items)),
        Node::Map(values) => format!("map<{}>", describe(p, *values)),
        Node::Union(branches) => {
            let b: Vec<String> = branches.iter().map(|b| describe(p, *b)).collect();
            format!("[{}]", b.join(", "))
        }
        Node::Record { name, .. } => format!("record {}", short_name(name)),
        Node::Enum { name, .. } => format!("enum {}", short_name(name)),
        Node::Fixed { name, size, .. } => format!("fixed {}({size})", short_name(name)),
    }
}

fn names_match(reader: &str, reader_aliases: &[String], writer: &str) -> bool {
    short_name(reader) == short_name(writer) || reader_aliases.iter().any(|a| short_name(a) == short_name(writer))
}

impl Resolve<'_> {
    fn fit(&self, r: usize, w: usize) -> Fit {
        use Node::*;
        match (&self.reader.nodes[r], &self.writer.nodes[w]) {
            (Null, Null)
            | (Boolean, Boolean)
            | (Int, Int)
            | (Long, Long)
            | (Float, Float)
            | (Double, Double)
            | (Bytes, Bytes)
            | (String, String)
            | (Array(_), Array(_))
            | (Map(_), Map(_)) => Fit::Same,
            (Long | Float | Double, Int)
            | (Float | Double, Long)
            | (Double, Float)
            | (Bytes, String)
            | (String, Bytes) => Fit::Promotion,
            (Record { name: rn, aliases, .. }, Record { name: wn, .. })
            | (Enum { name: rn, aliases, .. }, Enum { name: wn, .. })
            | (Fixed { name: rn, aliases, .. }, Fixed { name: wn, .. })
                if names_match(rn, aliases, wn) =>
            {
                Fit::Same
            }
            _ => Fit::No,
        }
    }

    fn push(&mut self, path: &str, problem: Problem) {
        self.out.push(Mismatch {
            field: path.to_owned(),
            problem,
        });
    }

    fn type_changed(&mut self, path: &str, r: usize, w: usize) {
        let problem = Problem::TypeChanged {
            reader: describe(self.reader, r),
            writer: describe(self.writer, w),
        };
        self.push(path, problem);
    }

    /// The reader branch that reads writer node `w`: the first of the same type, else the
    /// first it promotes to.
    fn pick_branch(&self, branches: &[usize], w: usize) -> Option<usize> {
        let first_with = |fit: Fit| branches.iter().copied().find(|&b| self.fit(b, w) == fit);
        first_with(Fit::Same).or_else(|| first_with(Fit::Promotion))
    }

    fn resolve(&mut self, r: usize, w: usize, path: &mut String) {
        let (reader, writer) = (self.reader, self.writer);
        match (&reader.nodes[r], &writer.nodes[w]) {
            (Node::Union(rb), Node::Union(wb)) => {
                for &b in wb {
                    match self.pick_branch(rb, b) {
                        Some(target) => self.resolve(target, b, path),
                        None => {
                            let writer = describe(writer, b);
                            self.push(path, Problem::UnionBranchUnreadable { writer });
                        }
                    }
                }
            }
            (_, Node::Union(wb)) => {
                // Every branch the writer may have written must be readable.
                if wb.iter().any(|&b| self.fit(r, b) == Fit::No) {
                    return self.type_changed(path, r, w);
                }
                for &b in wb {
                    self.resolve(r, b, path);
                }
            }
            (Node::Union(rb), _) => match self.pick_branch(rb, w) {
                Some(target) => self.resolve(target, w, path),
                None => self.type_changed(path, r, w),
            },
            (rn, wn) => {
                if self.fit(r, w) == Fit::No {
                    return match (rn, wn) {
                        (Node::Record { name: a, .. }, Node::Record { name: b, .. })
                        | (Node::Enum { name: a, .. }, Node::Enum { name: b, .. })
                        | (Node::Fixed { name: a, .. }, Node::Fixed { name: b, .. }) => {
                            let problem = Problem::NameChanged {
                                reader: a.clone(),
                                writer: b.clone(),
                            };
                            self.push(path, problem)
                        }
                        _ => self.type_changed(path, r, w),
                    };
                }
                match (rn, wn) {
                    (Node::Array(ri), Node::Array(wi)) => self.nested(path, "[]", |s, p| s.resolve(*ri, *wi, p)),
                    (Node::Map(rv), Node::Map(wv)) => self.nested(path, "{}", |s, p| s.resolve(*rv, *wv, p)),
                    (Node::Record { fields: rf, .. }, Node::Record { fields: wf, .. }) => {
                        if !self.visiting.insert((r, w)) {
                            return;
                        }
                        for field in rf {
                            let found = wf
                                .iter()
                                .find(|x| x.name == field.name || field.aliases.contains(&x.name));
                            let segment = if path.is_empty() {
                                field.name.clone()
                            } else {
                                format!(".{}", field.name)
                            };
                            match found {
                                Some(x) => self.nested(path, &segment, |s, p| s.resolve(field.ty, x.ty, p)),
                                None if field.has_default => {}
                                None => self.nested(path, &segment, |s, p| s.push(p, Problem::MissingDefault)),
                            }
                        }
                        self.visiting.remove(&(r, w));
                    }
                    (
                        Node::Enum {
                            symbols: rs,
                            has_default,
                            ..
                        },
                        Node::Enum { symbols: ws, .. },
                    ) if !has_default => {
                        for symbol in ws.iter().filter(|s| !rs.contains(s)) {
                            let problem = Problem::EnumSymbolMissing { symbol: symbol.clone() };
                            self.push(path, problem);
                        }
                    }
                    (Node::Fixed { size: rs, .. }, Node::Fixed { size: ws, .. }) if rs != ws => {
                        let problem = Problem::FixedSizeChanged {
                            reader: *rs,
                            writer: *ws,
                        };
                        self.push(path, problem);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs `f` with `segment` appended to `path`.
    fn nested(&mut self, path: &mut String, segment: &str, f: impl FnOnce(&mut Self, &mut String)) {
        let len = path.len();
        path.push_str(segment);
        f(self, path);
        path.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(fields: Value) -> Value {
        json!({"type": "record", "name": "CloudEvent", "namespace": "org.x.v1", "fields": fields})
    }

    #[test]
    fn promotions_go_one_way() {
        for (w, r) in [
            ("int", "long"),
            ("int", "double"),
            ("long", "float"),
            ("float", "double"),
            ("string", "bytes"),
            ("bytes", "string"),
        ] {
            assert!(schema_mismatches(&json!(r), &json!(w)).is_empty(), "{w} -> {r}");
        }
        for (w, r) in [
            ("long", "int"),
            ("double", "float"),
            ("string", "long"),
            ("boolean", "string"),
        ] {
            let found = schema_mismatches(&json!(r), &json!(w));
            assert!(
                matches!(
                    found[..],
                    [Mismatch {
                        problem: Problem::TypeChanged { .. },
                        ..
                    }]
                ),
                "{w} -> {r}: {found:?}"
            );
        }
    }

    #[test]
    fn unions_resolve_branch_by_branch() {
        // A field made optional: new readers read old data; old readers cannot read a null.
        let old = record(json!([{"name": "a", "type": "string"}]));
        let new = record(json!([{"name": "a", "type": ["null", "string"], "default": null}]));
        assert!(schema_mismatches(&new, &old).is_empty());
        let found = schema_mismatches(&old, &new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "a");
        // A union branch removed.
        let wide = json!(["null", "string", "long"]);
        let narrow = json!(["null", "string"]);
        assert!(schema_mismatches(&wide, &narrow).is_empty());
        assert_eq!(
            schema_mismatches(&narrow, &wide)[0].problem,
            Problem::UnionBranchUnreadable { writer: "long".into() }
        );
        // A long written, a union with double read: promotion picks the branch.
        assert!(schema_mismatches(&json!(["null", "double"]), &json!("long")).is_empty());
    }

    #[test]
    fn nested_paths_arrays_maps_and_references() {
        let inner = |extra: Value| {
            let mut fields = vec![json!({"name": "id", "type": "long"})];
            if !extra.is_null() {
                fields.push(extra);
            }
            json!({"type": "record", "name": "UserData", "fields": fields})
        };
        let old = record(json!([
            {"name": "user", "type": inner(Value::Null)},
            {"name": "others", "type": {"type": "array", "items": "UserData"}},
            {"name": "by_id", "type": {"type": "map", "values": "UserData"}},
        ]));
        let new = record(json!([
            {"name": "user", "type": inner(json!({"name": "email", "type": "string"}))},
            {"name": "others", "type": {"type": "array", "items": "UserData"}},
            {"name": "by_id", "type": {"type": "map", "values": "UserData"}},
        ]));
        let fields: Vec<String> = schema_mismatches(&new, &old).into_iter().map(|m| m.field).collect();
        assert_eq!(fields, ["user.email", "others[].email", "by_id{}.email"]);
        assert!(
            schema_mismatches(&old, &new).is_empty(),
            "extra writer fields are skipped"
        );
    }

    #[test]
    fn names_enums_fixed_and_recursion() {
        let a = json!({"type": "record", "name": "A", "fields": []});
        let b = json!({"type": "record", "name": "B", "fields": []});
        assert!(matches!(
            schema_mismatches(&a, &b)[0].problem,
            Problem::NameChanged { .. }
        ));
        let aliased = json!({"type": "record", "name": "A", "aliases": ["B"], "fields": []});
        assert!(schema_mismatches(&aliased, &b).is_empty());
        let e1 = json!({"type": "enum", "name": "E", "symbols": ["X", "Y"]});
        let e2 = json!({"type": "enum", "name": "E", "symbols": ["X"]});
        let e3 = json!({"type": "enum", "name": "E", "symbols": ["X"], "default": "X"});
        assert!(schema_mismatches(&e1, &e2).is_empty());
        assert_eq!(
            schema_mismatches(&e2, &e1)[0].problem,
            Problem::EnumSymbolMissing { symbol: "Y".into() }
        );
        assert!(schema_mismatches(&e3, &e1).is_empty());
        let f1 = json!({"type": "fixed", "name": "F", "size": 16});
        let f2 = json!({"type": "fixed", "name": "F", "size": 8});
        assert!(matches!(
            schema_mismatches(&f1, &f2)[0].problem,
            Problem::FixedSizeChanged { .. }
        ));
        let list = json!({"type": "record", "name": "Node", "fields": [
            {"name": "next", "type": ["null", "Node"], "default": null},
        ]});
        assert!(schema_mismatches(&list, &list).is_empty());
        assert!(matches!(
            schema_mismatches(&json!("Nope"), &json!("long"))[0].problem,
            Problem::Invalid { .. }
        ));
    }
}
