//! A job spec as the store keeps it: only what its class key does not already say, as the JSON
//! array `[kind, payload, priority, max_attempts, timeout_us, idempotency_key]`. The script
//! never looks inside it, but every claim carries it through Lua twice (read, then packed into
//! the reply), and Redis's Lua hashes every byte of every string it makes: the whole spec with
//! its requirements spelled out was 220 bytes for an empty payload, this is about 30.

use crate::core::{JobSpec, Requirements, Span};
use crate::runtime::StoreError;
use std::sync::Arc;

type Stored<'a> = (&'a str, &'a str, u8, u32, u64, Option<&'a str>);
type Read = (String, String, u8, u32, u64, Option<String>);

/// `spec` as the store keeps it (its requirements are its class's key).
pub fn stored(spec: &JobSpec) -> String {
    let fields: Stored = (
        &spec.kind,
        &spec.payload,
        spec.priority,
        spec.max_attempts,
        spec.timeout.as_micros(),
        spec.idempotency_key.as_deref(),
    );
    serde_json::to_string(&fields).expect("a tuple of strings and numbers serializes")
}

/// The spec kept as `text`, with `requirements`, its class's (which an out-of-memory retry may
/// have raised since it was submitted).
pub fn from_stored(
    text: &str,
    requirements: Arc<Requirements>,
) -> Result<Arc<JobSpec>, StoreError> {
    let (kind, payload, priority, max_attempts, timeout, idempotency_key): Read =
        serde_json::from_str(text)
            .map_err(|e| StoreError::Decode(format!("stored job spec {text:?}: {e}")))?;
    Ok(Arc::new(JobSpec {
        kind,
        payload,
        priority,
        requirements,
        max_attempts,
        timeout: Span(timeout),
        idempotency_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_it_was_stored() {
        let requirements = Arc::new(Requirements {
            gpus: 2,
            gpu_mem_gb: 24,
            ..Default::default()
        });
        let mut spec = JobSpec::new("command", requirements.clone());
        spec.payload = "{\"prompt\": \"a \\\"quoted\\\" cat\"}\n".into();
        spec.priority = 90;
        spec.max_attempts = 5;
        spec.timeout = Span(90_000_000);
        spec.idempotency_key = Some("order-17".into());
        let text = stored(&spec);
        assert_eq!(*from_stored(&text, requirements.clone()).unwrap(), spec);
        spec.idempotency_key = None;
        let text = stored(&spec);
        assert!(text.ends_with(",null]"), "{text}");
        assert_eq!(*from_stored(&text, requirements.clone()).unwrap(), spec);
    }

    #[test]
    fn a_spec_not_in_the_stored_form_is_a_decode_error_naming_it() {
        for text in [
            "{\"kind\":\"noop\"}",
            "[\"noop\",\"\",50]",
            "[\"noop\",\"\",300,3,1,null]",
        ] {
            match from_stored(text, Arc::default()) {
                Err(StoreError::Decode(message)) => {
                    assert!(message.contains(&format!("{text:?}")), "{message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
