//! What the payload of each kind the engine knows must hold, defined once: the API checks a
//! submission with it (a 422 naming the field, before the job exists) and the executor parses
//! with the same code when the job runs. Kinds the checker does not know pass: their payload
//! is opaque to the engine.

use super::command::{fill_args, CommandTemplate, TemplateError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// The longest `sleep` or `gpu` run accepted; beyond it the job's own timeout is the better tool.
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// A payload field that cannot be accepted, named as the API names fields (`payload.seconds`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PayloadError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> PayloadError {
    PayloadError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `sleep`: `{"seconds": 0.5}` (default 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SleepPayload {
    pub seconds: f64,
}

/// `gpu`: `{"seconds": 2.0, "mem_gb": 16}`; `mem_gb` defaults to the job's `gpu_mem_gb`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuPayload {
    pub seconds: f64,
    pub mem_gb: Option<f64>,
}

impl SleepPayload {
    pub fn parse(text: &str) -> Result<SleepPayload, PayloadError> {
        let fields = object(text)?;
        only(&fields, &["seconds"])?;
        Ok(SleepPayload {
            seconds: number(&fields, "seconds", 0.0..=MAX_SECONDS)?.unwrap_or(1.0),
        })
    }
}

impl GpuPayload {
    pub fn parse(text: &str) -> Result<GpuPayload, PayloadError> {
        let fields = object(text)?;
        only(&fields, &["seconds", "mem_gb"])?;
        Ok(GpuPayload {
            seconds: number(&fields, "seconds", 0.0..=MAX_SECONDS)?.unwrap_or(1.0),
            mem_gb: number(&fields, "mem_gb", 0.0..=f64::from(u32::MAX))?,
        })
    }
}

/// Checks a payload for `kind`: the built-in kinds, and the command kinds of `templates`
/// (every placeholder present, and a string, number or boolean).
pub fn check(
    kind: &str,
    text: &str,
    templates: &BTreeMap<String, CommandTemplate>,
) -> Result<(), PayloadError> {
    match kind {
        "sleep" => SleepPayload::parse(text).map(drop),
        "gpu" => GpuPayload::parse(text).map(drop),
        _ => match templates.get(kind) {
            Some(template) => fill_args(&template.args, text)
                .map(drop)
                .map_err(template_error),
            None => Ok(()),
        },
    }
}

/// A command template's refusal, as a payload field.
pub fn template_error(e: TemplateError) -> PayloadError {
    match e {
        TemplateError::Missing(name) => refuse(
            format!("payload.{name}"),
            "is required: the kind's command uses it",
        ),
        TemplateError::NotScalar(name) => refuse(
            format!("payload.{name}"),
            "must be a string, number or boolean",
        ),
        TemplateError::Payload(reason) => refuse("payload", reason),
        TemplateError::Malformed(arg) => refuse(
            "payload",
            format!("the kind's command template is malformed at {arg:?}"),
        ),
    }
}

/// The payload as a JSON object; empty text and `null` are the empty object.
fn object(text: &str) -> Result<Map<String, Value>, PayloadError> {
    match text.trim() {
        "" | "null" => Ok(Map::new()),
        text => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(refuse("payload", "must be a JSON object")),
            Err(e) => Err(refuse("payload", format!("is not JSON: {e}"))),
        },
    }
}

fn only(fields: &Map<String, Value>, allowed: &[&str]) -> Result<(), PayloadError> {
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(refuse(
            format!("payload.{unknown}"),
            format!(
                "is not a field of this kind (it takes {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn number(
    fields: &Map<String, Value>,
    name: &str,
    range: RangeInclusive<f64>,
) -> Result<Option<f64>, PayloadError> {
    let field = || format!("payload.{name}");
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if range.contains(&x) => Ok(Some(x)),
            _ => Err(refuse(
                field(),
                format!("must be {} to {}", range.start(), range.end()),
            )),
        },
        Some(other) => Err(refuse(field(), format!("must be a number, not {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(kind: &str, text: &str) -> String {
        check(kind, text, &BTreeMap::new()).unwrap_err().field
    }

    #[test]
    fn built_in_kinds_name_the_bad_field() {
        assert_eq!(
            field_of("sleep", r#"{"seconds": "abc"}"#),
            "payload.seconds"
        );
        assert_eq!(field_of("sleep", r#"{"seconds": -1}"#), "payload.seconds");
        assert_eq!(field_of("sleep", r#"{"secs": 1}"#), "payload.secs");
        assert_eq!(field_of("sleep", "[1]"), "payload");
        assert_eq!(field_of("gpu", r#"{"mem_gb": true}"#), "payload.mem_gb");
        assert_eq!(SleepPayload::parse("").unwrap().seconds, 1.0);
        assert_eq!(
            SleepPayload::parse(r#"{"seconds": 0.5}"#).unwrap().seconds,
            0.5
        );
        let gpu = GpuPayload::parse(r#"{"seconds": 2, "mem_gb": 16}"#).unwrap();
        assert_eq!((gpu.seconds, gpu.mem_gb), (2.0, Some(16.0)));
    }

    #[test]
    fn command_kinds_need_their_placeholders_and_unknown_kinds_pass() {
        let template = CommandTemplate {
            program: "/bin/echo".into(),
            args: vec!["{input}".into()],
            env: BTreeMap::new(),
            workdir: None,
        };
        let templates = BTreeMap::from([("render".to_string(), template)]);
        let err = check("render", "{}", &templates).unwrap_err();
        assert_eq!(err.field, "payload.input");
        let err = check("render", r#"{"input": [1]}"#, &templates).unwrap_err();
        assert_eq!(err.field, "payload.input");
        assert!(check("render", r#"{"input": "a.png"}"#, &templates).is_ok());
        assert!(check("train", "anything at all", &templates).is_ok());
    }
}
