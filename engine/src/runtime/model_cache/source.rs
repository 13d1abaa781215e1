//! Where each catalog model comes from, as the agent's config file declares it:
//!
//! ```toml
//! [models.sdxl]
//! url = "https://models.example.com/sdxl.safetensors"
//! sha256 = "5b1c…"                      # optional: the file is refused unless it matches
//!
//! [models.llama]
//! command = ["/usr/local/bin/fetch-model", "{name}", "{dest}"]
//! timeout = "2h"                        # optional, default 6h
//! ```
//!
//! The engine's catalog (`[[engine.models]]`) names the models and their sizes; this table
//! says how this agent gets them. A name the catalog lacks is an error, so a typo fails at
//! start, not when the first job needs the model.

use crate::core::{EngineConfig, Span};
use serde::Deserialize;
use std::collections::BTreeMap;

/// How long a fetch may take when its source does not say.
pub const DEFAULT_FETCH_TIMEOUT: Span = Span::from_secs(6 * 3600);

/// Where one model comes from: exactly one of `url` and `command`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// An `https://` or `http://` URL the file is downloaded from.
    pub url: Option<String>,
    /// A program and its arguments that write the model to `{dest}` (a file, or a directory
    /// for models that are several files); `{name}` is the model's name. No shell runs.
    pub command: Option<Vec<String>>,
    /// The file's SHA-256, lower- or upper-case hex; a download that differs is refused.
    pub sha256: Option<String>,
    /// The longest a fetch may take.
    pub timeout: Option<Span>,
}

/// How to fetch, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    Url(String),
    Command(Vec<String>),
}

impl ModelSource {
    pub fn fetch(&self) -> Fetch {
        match (&self.url, &self.command) {
            (Some(url), _) => Fetch::Url(url.clone()),
            (None, Some(argv)) => Fetch::Command(argv.clone()),
            (None, None) => Fetch::Command(Vec::new()),
        }
    }

    /// The expected digest, lower-case, if one is declared.
    pub fn sha256(&self) -> Option<String> {
        self.sha256.as_ref().map(|s| s.to_ascii_lowercase())
    }

    pub fn timeout(&self) -> Span {
        self.timeout.unwrap_or(DEFAULT_FETCH_TIMEOUT)
    }

    /// What identifies the bytes this source yields: a cached copy fetched from another
    /// source (the catalog moved to a new version) is not this model any more.
    pub fn identity(&self) -> String {
        let how = match self.fetch() {
            Fetch::Url(url) => format!("url {url}"),
            Fetch::Command(argv) => format!("command {argv:?}"),
        };
        format!("{how}; sha256 {}", self.sha256().unwrap_or_default())
    }
}

/// A source the agent cannot use: the model's name, the field (None: the whole entry), why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.path())]
pub struct SourceError {
    pub model: String,
    pub field: Option<&'static str>,
    pub message: String,
}

impl SourceError {
    /// The dotted path of what is wrong: `models.sdxl.url`, or `models.sdxl`.
    pub fn path(&self) -> String {
        match self.field {
            Some(field) => format!("models.{}.{field}", self.model),
            None => format!("models.{}", self.model),
        }
    }
}

/// Checks every source against the engine's catalog and on its own.
pub fn validate_sources(
    sources: &BTreeMap<String, ModelSource>,
    engine: &EngineConfig,
) -> Result<(), SourceError> {
    for (name, source) in sources {
        let fail = |field, message: String| SourceError {
            model: name.clone(),
            field,
            message,
        };
        if engine.model_id(name).is_none() {
            let known: Vec<&str> = engine.models.iter().map(|m| m.name.as_str()).collect();
            return Err(fail(
                None,
                format!("no model {name:?} in the engine's catalog ([[engine.models]]: {known:?})"),
            ));
        }
        validate_source(source).map_err(|(field, message)| fail(Some(field), message))?;
    }
    Ok(())
}

fn validate_source(source: &ModelSource) -> Result<(), (&'static str, String)> {
    match (&source.url, &source.command) {
        (Some(_), Some(_)) => {
            return Err(("command", "give either url or command, not both".into()))
        }
        (None, None) => return Err(("url", "give a url or a command to fetch the model".into())),
        (Some(url), None) => check_url(url).map_err(|m| ("url", m))?,
        (None, Some(argv)) => check_command(argv).map_err(|m| ("command", m))?,
    }
    if let Some(digest) = &source.sha256 {
        let hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(("sha256", "must be 64 hexadecimal digits".into()));
        }
    }
    if source.timeout == Some(Span::ZERO) {
        return Err(("timeout", "must be longer than 0s".into()));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!(
            "{url:?}: only https:// and http:// URLs are fetched (use command for anything else)"
        ));
    }
    if parsed.host_str().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn check_command(argv: &[String]) -> Result<(), String> {
    if argv.first().is_none_or(|program| program.is_empty()) {
        return Err("must name a program first".into());
    }
    if !argv.iter().any(|arg| arg.contains("{dest}")) {
        return Err("must pass {dest}, where the model is written".into());
    }
    Ok(())
}

/// The command's arguments with `{name}` and `{dest}` filled in.
pub fn fill_command(argv: &[String], name: &str, dest: &str) -> Vec<String> {
    argv.iter()
        .map(|arg| arg.replace("{name}", name).replace("{dest}", dest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::CatalogModel;

    fn engine() -> EngineConfig {
        EngineConfig {
            models: vec![CatalogModel {
                name: "sdxl".into(),
                size_gb: 7,
            }],
            ..EngineConfig::default()
        }
    }

    fn url(url: &str) -> ModelSource {
        ModelSource {
            url: Some(url.into()),
            command: None,
            sha256: None,
            timeout: None,
        }
    }

    fn check(source: ModelSource) -> Result<(), SourceError> {
        validate_sources(&BTreeMap::from([("sdxl".to_string(), source)]), &engine())
    }

    #[test]
    fn accepts_urls_and_commands() {
        assert_eq!(check(url("https://example.com/sdxl.bin")), Ok(()));
        assert_eq!(check(url("http://127.0.0.1:8000/sdxl")), Ok(()));
        let command = ModelSource {
            url: None,
            command: Some(vec!["fetch".into(), "{name}".into(), "{dest}".into()]),
            sha256: Some("AB".repeat(32)),
            timeout: Some(Span::from_secs(60)),
        };
        assert_eq!(check(command), Ok(()));
    }

    #[test]
    fn refuses_what_it_cannot_fetch_naming_the_field() {
        let error = check(url("ftp://example.com/x")).unwrap_err();
        assert_eq!(error.field, Some("url"));
        assert!(
            error.to_string().starts_with("models.sdxl.url: "),
            "{error}"
        );
        let no_dest = ModelSource {
            url: None,
            command: Some(vec!["fetch".into(), "{name}".into()]),
            ..url("x")
        };
        assert_eq!(check(no_dest).unwrap_err().field, Some("command"));
        let both = ModelSource {
            command: Some(vec!["fetch".into(), "{dest}".into()]),
            ..url("https://example.com/x")
        };
        assert_eq!(check(both).unwrap_err().field, Some("command"));
        let bad_digest = ModelSource {
            sha256: Some("abc".into()),
            ..url("https://example.com/x")
        };
        assert_eq!(check(bad_digest).unwrap_err().field, Some("sha256"));
    }

    #[test]
    fn a_model_the_catalog_lacks_is_named() {
        let sources = BTreeMap::from([("sdxI".to_string(), url("https://example.com/x"))]);
        let error = validate_sources(&sources, &engine()).unwrap_err();
        assert_eq!((error.model.as_str(), error.field), ("sdxI", None));
        assert!(error.message.contains("\"sdxl\""), "{error}");
    }

    #[test]
    fn identity_follows_the_source_and_digest() {
        let a = url("https://example.com/v1");
        let b = url("https://example.com/v2");
        assert_ne!(a.identity(), b.identity());
        let pinned = ModelSource {
            sha256: Some("ab".repeat(32)),
            ..a.clone()
        };
        assert_ne!(a.identity(), pinned.identity());
        let upper = ModelSource {
            sha256: Some("AB".repeat(32)),
            ..a.clone()
        };
        assert_eq!(pinned.identity(), upper.identity());
        assert_eq!(
            fill_command(&["f".into(), "{name}:{dest}".into()], "m", "/d"),
            vec!["f".to_string(), "m:/d".to_string()]
        );
    }
}
