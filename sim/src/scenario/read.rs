//! Typed reading of a parsed TOML tree, keeping every key's position for precise errors.

use super::error::{line_col, ScenarioError};
use drover_engine::core::labels::{LabelValue, Labels};
use drover_engine::core::Span;
use std::ops::Range;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;
pub(crate) type Result<T> = std::result::Result<T, ScenarioError>;

/// The file being read: its name for messages and its text for positions.
pub(crate) struct Cx<'t> {
    pub file: &'t str,
    pub text: &'t str,
}

impl Cx<'_> {
    pub fn at(&self, offset: usize, field: &str, message: impl Into<String>) -> ScenarioError {
        let (line, column) = line_col(self.text, offset);
        ScenarioError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn toml(&self, error: &toml::de::Error) -> ScenarioError {
        let offset = error.span().map_or(0, |s| s.start);
        self.at(offset, "toml", error.message().trim().to_string())
    }
}

/// Joins a field path: `join("pool[1]", "gpus")` is `pool[1].gpus`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A TOML table being read as one struct: its path, position and the keys it may hold.
pub(crate) struct Obj<'a, 'i> {
    pub cx: &'a Cx<'a>,
    pub path: String,
    pub span: Range<usize>,
    pub table: &'a DeTable<'i>,
}

impl<'a, 'i> Obj<'a, 'i> {
    /// Reads `value` as a table that may hold only `allowed` keys; the first unknown key (by
    /// position) is refused.
    pub fn new(
        cx: &'a Cx<'a>,
        path: String,
        value: &'a Value<'i>,
        allowed: &[&str],
    ) -> Result<Self> {
        let Some(table) = value.get_ref().as_table() else {
            return Err(cx.at(
                value.span().start,
                &path,
                format!("expected a table, found {}", describe(value.get_ref())),
            ));
        };
        let obj = Obj {
            cx,
            path,
            span: value.span(),
            table,
        };
        obj.refuse_unknown(allowed)?;
        Ok(obj)
    }

    fn refuse_unknown(&self, allowed: &[&str]) -> Result<()> {
        let unknown = self
            .table
            .keys()
            .filter(|k| !allowed.contains(&k.get_ref().as_ref()))
            .min_by_key(|k| k.span().start);
        match unknown {
            None => Ok(()),
            Some(key) => {
                let name: &str = key.get_ref();
                let mut message = format!("unknown field `{name}`");
                if let Some(close) = closest(name, allowed) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                message.push_str(&format!("; expected one of: {}", allowed.join(", ")));
                Err(self.cx.at(key.span().start, &self.field(name), message))
            }
        }
    }

    pub fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn entry(&self, key: &str) -> Option<(&'a Spanned<DeString<'i>>, &'a Value<'i>)> {
        self.table.get_key_value(key)
    }

    pub fn value(&self, key: &str) -> Option<&'a Value<'i>> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Offset of `key` in the file, or of this table when the key is absent.
    pub fn key_at(&self, key: &str) -> usize {
        self.entry(key)
            .map_or(self.span.start, |(k, _)| k.span().start)
    }

    /// An error about `key`, at the line of the key.
    pub fn err(&self, key: &str, message: impl Into<String>) -> ScenarioError {
        self.cx.at(self.key_at(key), &self.field(key), message)
    }

    pub fn missing(&self, key: &str, what: &str) -> ScenarioError {
        self.cx.at(
            self.span.start,
            &self.field(key),
            format!("missing required field `{key}` ({what})"),
        )
    }

    pub fn opt<T: Read>(&self, key: &str) -> Result<Option<T>> {
        match self.value(key) {
            Some(v) => T::read(self.cx, &self.field(key), v).map(Some),
            None => Ok(None),
        }
    }

    pub fn req<T: Read>(&self, key: &str, what: &str) -> Result<T> {
        self.opt(key)?.ok_or_else(|| self.missing(key, what))
    }

    pub fn or<T: Read>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.opt(key)?.unwrap_or(default))
    }

    /// A whole number in `lo..=hi`.
    pub fn int_in(&self, key: &str, lo: i128, hi: i128) -> Result<Option<i128>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = read_int(self.cx, &self.field(key), v)?;
        if n < lo || n > hi {
            return Err(self.err(key, format!("must be from {lo} to {hi}, found {n}")));
        }
        Ok(Some(n))
    }

    /// A probability: a number in [0, 1].
    pub fn fraction(&self, key: &str, default: f64) -> Result<f64> {
        let f = self.or(key, default)?;
        if !(0.0..=1.0).contains(&f) {
            return Err(self.err(key, format!("must be from 0 to 1, found {f}")));
        }
        Ok(f)
    }

    /// A number above zero.
    pub fn positive(&self, key: &str, default: f64) -> Result<f64> {
        let f = self.or(key, default)?;
        if f <= 0.0 {
            return Err(self.err(key, format!("must be above 0, found {f}")));
        }
        Ok(f)
    }

    /// A duration above zero.
    pub fn positive_span(&self, key: &str, what: &str) -> Result<Span> {
        let s: Span = self.req(key, what)?;
        if s == Span::ZERO {
            return Err(self.err(key, "must be longer than 0s"));
        }
        Ok(s)
    }

    /// A non-empty name of at most 128 bytes.
    pub fn name(&self, key: &str, what: &str) -> Result<String> {
        let name: String = self.req(key, what)?;
        if name.trim().is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        if name.len() > 128 {
            return Err(self.err(key, "must be at most 128 bytes long"));
        }
        Ok(name)
    }

    /// An array, possibly of tables, holding at most `max` items; `None` when absent.
    pub fn array(&self, key: &str, max: usize, plural: &str) -> Result<Option<&'a [Value<'i>]>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let Some(items) = v.get_ref().as_array() else {
            return Err(self.cx.at(
                v.span().start,
                &self.field(key),
                format!(
                    "expected an array ([[{key}]] tables), found {}",
                    describe(v.get_ref())
                ),
            ));
        };
        if items.len() > max {
            return Err(self.err(
                key,
                format!("at most {max} {plural} are allowed, found {}", items.len()),
            ));
        }
        Ok(Some(items))
    }
}

/// The closest allowed name to a misspelt one, if any is close.
fn closest<'s>(name: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A short description of a value for "expected X, found Y" messages.
pub(crate) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        DeValue::String(_) => "a string".to_string(),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(_) => "a datetime".to_string(),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

fn wrong(cx: &Cx<'_>, field: &str, v: &Value<'_>, expected: &str) -> ScenarioError {
    cx.at(
        v.span().start,
        field,
        format!("expected {expected}, found {}", describe(v.get_ref())),
    )
}

fn read_int(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<i128> {
    match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| wrong(cx, field, v, "a whole number")),
        _ => Err(wrong(cx, field, v, "a whole number")),
    }
}

/// A value that can be read from one TOML value.
pub(crate) trait Read: Sized {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self>;
}

impl Read for String {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(wrong(cx, field, v, "a string")),
        }
    }
}

impl Read for bool {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        match v.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(wrong(cx, field, v, "true or false")),
        }
    }
}

macro_rules! read_unsigned {
    ($($t:ty),*) => {$(
        impl Read for $t {
            fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
                let n = read_int(cx, field, v)?;
                <$t>::try_from(n).map_err(|_| {
                    cx.at(
                        v.span().start,
                        field,
                        format!("must be a whole number from 0 to {}, found {n}", <$t>::MAX),
                    )
                })
            }
        }
    )*};
}
read_unsigned!(u8, u32, u64);

impl Read for f64 {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        let f = match v.get_ref() {
            DeValue::Integer(_) => read_int(cx, field, v)? as f64,
            DeValue::Float(f) => f.as_str().parse::<f64>().unwrap_or(f64::NAN),
            _ => return Err(wrong(cx, field, v, "a number")),
        };
        if !f.is_finite() {
            return Err(cx.at(v.span().start, field, "must be a finite number"));
        }
        Ok(f)
    }
}

impl Read for Span {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        match v.get_ref() {
            DeValue::String(s) => {
                Span::parse(s).map_err(|e| cx.at(v.span().start, field, e.to_string()))
            }
            _ => Err(wrong(
                cx,
                field,
                v,
                "a duration string such as \"30s\", \"5m\" or \"2h\"",
            )),
        }
    }
}

impl Read for Vec<String> {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        let Some(items) = v.get_ref().as_array() else {
            return Err(wrong(cx, field, v, "an array of strings"));
        };
        if items.len() > 1024 {
            return Err(cx.at(v.span().start, field, "at most 1024 items are allowed"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| String::read(cx, &format!("{field}[{i}]"), item))
            .collect()
    }
}

impl Read for Labels {
    fn read(cx: &Cx<'_>, field: &str, v: &Value<'_>) -> Result<Self> {
        let Some(table) = v.get_ref().as_table() else {
            return Err(wrong(
                cx,
                field,
                v,
                "a table of labels, such as { region = \"eu\" }",
            ));
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut labels = Labels::new();
        for (key, value) in entries {
            let name: &str = key.get_ref();
            let field = join(field, name);
            if name.is_empty() {
                return Err(cx.at(key.span().start, &field, "a label name must not be empty"));
            }
            let label = match value.get_ref() {
                DeValue::Boolean(b) => LabelValue::Bool(*b),
                DeValue::String(s) => LabelValue::Text(s.to_string()),
                DeValue::Integer(_) | DeValue::Float(_) => {
                    LabelValue::Number(f64::read(cx, &field, value)?)
                }
                DeValue::Array(_) => {
                    let mut list = Vec::<String>::read(cx, &field, value)?;
                    list.sort();
                    list.dedup();
                    LabelValue::List(list)
                }
                _ => {
                    return Err(wrong(
                        cx,
                        &field,
                        value,
                        "a boolean, number, string or array of strings",
                    ))
                }
            };
            labels.insert(name.to_string(), label);
        }
        Ok(labels)
    }
}

/// Reads the `tag` key of a tagged table (`dist`, `kind`), which must be one of `variants`, and
/// then the table itself, allowing `common` keys plus that variant's keys.
pub(crate) fn tagged<'a, 'i>(
    cx: &'a Cx<'a>,
    path: String,
    value: &'a Value<'i>,
    tag: &str,
    common: &[&str],
    variants: &[(&str, &[&str])],
) -> Result<(usize, Obj<'a, 'i>)> {
    let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
    let Some(table) = value.get_ref().as_table() else {
        return Err(cx.at(
            value.span().start,
            &path,
            format!("expected a table, found {}", describe(value.get_ref())),
        ));
    };
    let tag_field = join(&path, tag);
    let Some(tag_value) = table.get(tag) else {
        return Err(cx.at(
            value.span().start,
            &tag_field,
            format!(
                "missing required field `{tag}` (one of: {})",
                names.join(", ")
            ),
        ));
    };
    let chosen = String::read(cx, &tag_field, tag_value)?;
    // Fault kinds are spelled with underscores (`redis_restart`); hyphens are accepted too.
    let chosen = if tag == "kind" {
        chosen.replace('-', "_")
    } else {
        chosen
    };
    let Some(index) = names.iter().position(|n| *n == chosen) else {
        let mut message = format!("unknown {tag} {chosen:?}");
        if let Some(close) = closest(&chosen, &names) {
            message.push_str(&format!(" (did you mean {close:?}?)"));
        }
        message.push_str(&format!("; expected one of: {}", names.join(", ")));
        return Err(cx.at(tag_value.span().start, &tag_field, message));
    };
    let mut allowed: Vec<&str> = vec![tag];
    allowed.extend_from_slice(common);
    allowed.extend_from_slice(variants[index].1);
    let obj = Obj::new(cx, path, value, &allowed)?;
    Ok((index, obj))
}

/// The dotted path (below `prefix`) of the deepest key or value of `table` at `offset`.
pub(crate) fn path_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    fn contains(span: &Range<usize>, offset: usize) -> bool {
        span.start <= offset && (offset < span.end || offset == span.start)
    }
    fn in_value(v: &Value<'_>, offset: usize, path: String) -> Option<String> {
        match v.get_ref() {
            DeValue::Table(t) => {
                if let Some(p) = path_at(t, offset, &path) {
                    return Some(p);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(p) = in_value(item, offset, format!("{path}[{i}]")) {
                        return Some(p);
                    }
                }
            }
            _ => {}
        }
        contains(&v.span(), offset).then_some(path)
    }
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        if contains(&key.span(), offset) {
            return Some(path);
        }
        if let Some(p) = in_value(value, offset, path) {
            return Some(p);
        }
    }
    None
}
