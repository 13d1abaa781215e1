//! The configuration file: one shape for every `drover` process, so one file can serve a fleet.
//!
//! ```toml
//! [engine]              # the engine's knobs (EngineConfig): the namespace holds one set of them
//! retention = "1h"
//! [engine.limits]
//! max_gpus = 8
//!
//! # The agent's own keys, beside [engine]; `drover api` and `drover reaper` check them but
//! # use only [engine].
//! drain_grace = "5m"
//! [labels]
//! region = "eu"
//! [kinds.render]
//! program = "/usr/bin/render"
//! args = ["{input}"]
//! [models.sdxl]         # where a model of the engine's catalog comes from (model_cache)
//! url = "https://models.example.com/sdxl.safetensors"
//! ```
//!
//! A file with engine settings at the top level (the shape `drover api --config` once read) is
//! refused with the file, line and key, and the advice to move them under `[engine]`.

use super::model_cache::{validate_sources, ModelSource, SourceError};
use crate::core::labels::Labels;
use crate::core::{EngineConfig, Span};
use crate::executor::CommandTemplate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// What a configuration file holds. Unknown keys are refused everywhere (a typo is not
/// silently ignored), whichever process reads the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// The engine's knobs. Every process of a namespace must run the same (the namespace
    /// records them: `RedisStore::connect`).
    pub engine: EngineConfig,
    /// The agent's machine labels.
    pub labels: Labels,
    /// The agent's job kinds run as commands.
    pub kinds: BTreeMap<String, CommandTemplate>,
    /// How long an agent's drain lets running jobs finish before releasing them ("5m").
    pub drain_grace: Option<Span>,
    /// Where the agent fetches each model of the engine's catalog from, by name.
    pub models: BTreeMap<String, ModelSource>,
}

/// A configuration file that cannot be used: the file, where (when known), the field, why.
///
/// Displays as `{file}:{line}:{column}: {field}: {message}`, or `{file}: {field}: {message}`
/// when there is no position (the file cannot be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFileError {
    pub file: String,
    /// 1-based line and column (in characters).
    pub position: Option<(usize, usize)>,
    /// Dotted path of the field, such as `engine.retention`; `toml` for a syntax error and
    /// `file` when the file cannot be read.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigFileError {}

impl ConfigFile {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
            file: name.clone(),
            position: None,
            field: "file".into(),
            message: format!("cannot be read: {e}"),
        })?;
        ConfigFile::parse(&name, &text)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<ConfigFile, ConfigFileError> {
        let at = |offset: Option<usize>, field: String, message: String| ConfigFileError {
            file: file.to_string(),
            position: offset.map(|o| line_col(text, o)),
            field,
            message,
        };
        let tree = DeTable::parse(text).map_err(|e| {
            at(
                Some(e.span().map_or(0, |s| s.start)),
                "toml".into(),
                e.message().trim().to_string(),
            )
        })?;
        let tree = tree.get_ref();
        if let Some((offset, field, message)) = top_level_engine_settings(tree, text) {
            return Err(at(Some(offset), field, message));
        }
        let parsed: ConfigFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let field = path_at(tree, offset, "").unwrap_or_else(|| "toml".into());
            at(Some(offset), field, e.message().trim().to_string())
        })?;
        parsed.engine.validate().map_err(|e| {
            let offset = engine_key_offset(tree, e.field);
            at(offset, format!("engine.{}", e.field), e.reason)
        })?;
        validate_sources(&parsed.models, &parsed.engine).map_err(|e| {
            let offset = model_source_offset(tree, &e);
            at(offset, e.path(), e.message)
        })?;
        Ok(parsed)
    }
}

/// The names of the engine's settings (EngineConfig's fields), as a file spells them.
pub fn engine_setting_names() -> Vec<String> {
    match serde_json::to_value(EngineConfig::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Engine settings at the top level of the file (the old `drover api --config` shape): where
/// the first is, its name, and a message naming the others.
fn top_level_engine_settings(tree: &DeTable<'_>, text: &str) -> Option<(usize, String, String)> {
    let names = engine_setting_names();
    let mut found: Vec<(usize, String)> = tree
        .iter()
        .filter(|(key, value)| {
            let name = key.get_ref().as_ref();
            // A table of models is the agent's `[models.NAME]` sources; the engine's catalog
            // at the top level would be an array (`[[models]]`).
            let sources = name == "models" && matches!(value.get_ref(), DeValue::Table(_));
            !sources && names.iter().any(|n| n.as_str() == name)
        })
        .map(|(key, _)| (key.span().start, key.get_ref().to_string()))
        .collect();
    found.sort();
    let (offset, first) = found.first()?.clone();
    let mut message = format!(
        "an engine setting at the top level of the file: engine settings go in the [engine] \
         table (one file shape serves `drover api`, `drover reaper` and `drover agent`), so \
         move `{first}` under [engine]"
    );
    if found.len() > 1 {
        let others: Vec<String> = found[1..]
            .iter()
            .map(|(o, name)| format!("{name} (line {})", line_col(text, *o).0))
            .collect();
        message.push_str(&format!(", and with it {}", others.join(", ")));
    }
    Some((offset, first, message))
}

/// Where `engine.<field>` is written (its key), or the `[engine]` header, if anywhere.
fn engine_key_offset(tree: &DeTable<'_>, field: &str) -> Option<usize> {
    let (engine_key, engine) = entry(tree, "engine")?;
    if let DeValue::Table(table) = engine.get_ref() {
        if let Some((key, _)) = entry(table, field) {
            return Some(key.span().start);
        }
    }
    Some(engine_key.span().start)
}

/// Where `models.<model>.<field>` is written (its key), or the deepest part of it that is.
fn model_source_offset(tree: &DeTable<'_>, error: &SourceError) -> Option<usize> {
    let (models_key, models) = entry(tree, "models")?;
    let DeValue::Table(models) = models.get_ref() else {
        return Some(models_key.span().start);
    };
    let Some((model_key, model)) = entry(models, &error.model) else {
        return Some(models_key.span().start);
    };
    let field = match (model.get_ref(), error.field) {
        (DeValue::Table(fields), Some(field)) => entry(fields, field),
        _ => None,
    };
    Some(field.map_or(model_key.span().start, |(key, _)| key.span().start))
}

type Entry<'a, 'i> = (
    &'a Spanned<toml::de::DeString<'i>>,
    &'a Spanned<DeValue<'i>>,
);

fn entry<'a, 'i>(table: &'a DeTable<'i>, name: &str) -> Option<Entry<'a, 'i>> {
    table.iter().find(|(key, _)| key.get_ref().as_ref() == name)
}

/// The dotted path (below `prefix`) of the deepest key or value of `table` at `offset`.
fn path_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    fn contains(span: &Range<usize>, offset: usize) -> bool {
        span.start <= offset && (offset < span.end || offset == span.start)
    }
    fn in_value(v: &Spanned<DeValue<'_>>, offset: usize, path: String) -> Option<String> {
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
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if contains(&key.span(), offset) {
            return Some(path);
        }
        if let Some(p) = in_value(value, offset, path) {
            return Some(p);
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset into `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_holds_the_engine_and_the_agent() {
        let text = r#"
drain_grace = "1m"
[engine]
retention = "3s"
[engine.limits]
max_gpus = 8
[labels]
region = "eu"
[kinds.echo]
program = "/bin/echo"
args = ["{input}"]
"#;
        let file = ConfigFile::parse("fleet.toml", text).unwrap();
        assert_eq!(file.engine.retention, Span::from_secs(3));
        assert_eq!(file.engine.limits.max_gpus, 8);
        assert_eq!(file.drain_grace, Some(Span::from_secs(60)));
        assert!(file.kinds.contains_key("echo"));
        assert_eq!(file.labels.len(), 1);
    }

    #[test]
    fn top_level_engine_settings_say_where_they_belong() {
        let text = "# the old API shape\nretention = \"1h\"\n\n[limits]\nmax_gpus = 8\n";
        let error = ConfigFile::parse("api.toml", text).unwrap_err();
        assert_eq!(error.position, Some((2, 1)));
        assert_eq!(error.field, "retention");
        let shown = error.to_string();
        assert!(
            shown.starts_with("api.toml:2:1: retention: an engine setting at the top level"),
            "{shown}"
        );
        assert!(shown.contains("under [engine]"), "{shown}");
        assert!(shown.contains("limits (line 4)"), "{shown}");
    }

    #[test]
    fn bad_values_and_broken_relations_are_located() {
        let text = "[engine]\nlease_ttl = \"30s\"\nretention = \"3 parsecs\"\n";
        let error = ConfigFile::parse("f.toml", text).unwrap_err();
        assert_eq!(error.field, "engine.retention", "{error}");
        assert_eq!(error.position.map(|p| p.0), Some(3), "{error}");

        let text = "[engine]\nlease_ttl = \"5s\"\nheartbeat = \"10s\"\n";
        let error = ConfigFile::parse("f.toml", text).unwrap_err();
        assert_eq!(error.field, "engine.heartbeat", "{error}");
        assert_eq!(error.position, Some((3, 1)), "{error}");

        let error = ConfigFile::parse("f.toml", "[engine]\nretension = \"1h\"\n").unwrap_err();
        assert_eq!(error.field, "engine.retension", "{error}");
        assert!(error.message.contains("unknown field"), "{error}");

        let error = ConfigFile::parse("f.toml", "[engine\n").unwrap_err();
        assert_eq!(error.field, "toml", "{error}");
        assert_eq!(error.position.map(|p| p.0), Some(1), "{error}");
    }

    const CATALOG: &str = "[[engine.models]]\nname = \"sdxl\"\nsize_gb = 7\n";

    #[test]
    fn model_sources_sit_beside_the_catalog() {
        let text = format!(
            "{CATALOG}[models.sdxl]\nurl = \"https://example.com/sdxl\"\nsha256 = \"{}\"\n",
            "0f".repeat(32)
        );
        let file = ConfigFile::parse("agent.toml", &text).unwrap();
        let source = &file.models["sdxl"];
        assert_eq!(source.url.as_deref(), Some("https://example.com/sdxl"));
        assert_eq!(source.sha256(), Some("0f".repeat(32)));
    }

    #[test]
    fn a_model_source_the_catalog_lacks_or_cannot_fetch_is_located() {
        let text = format!("{CATALOG}\n[models.sdlx]\nurl = \"https://example.com/x\"\n");
        let error = ConfigFile::parse("agent.toml", &text).unwrap_err();
        assert_eq!(error.field, "models.sdlx", "{error}");
        assert_eq!(error.position, Some((5, 9)), "{error}");
        assert!(error.message.contains("catalog"), "{error}");

        let text = format!("{CATALOG}[models.sdxl]\nsha256 = \"00\"\nurl = \"s3://b/k\"\n");
        let error = ConfigFile::parse("agent.toml", &text).unwrap_err();
        assert_eq!(error.field, "models.sdxl.url", "{error}");
        assert_eq!(error.position, Some((6, 1)), "{error}");

        let text = format!("{CATALOG}[models.sdxl]\nurl = \"https://x/y\"\ncolor = 1\n");
        let error = ConfigFile::parse("agent.toml", &text).unwrap_err();
        assert_eq!(error.field, "models.sdxl.color", "{error}");

        // The engine's catalog at the top level is still the old shape, refused as such.
        let error = ConfigFile::parse("api.toml", "[[models]]\nname = \"x\"\n").unwrap_err();
        assert_eq!(error.field, "models", "{error}");
        assert!(error.message.contains("[engine]"), "{error}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let error = ConfigFile::load(Path::new("/nonexistent/drover.toml")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/drover.toml: file: cannot be read"),
            "{error}"
        );
    }
}
