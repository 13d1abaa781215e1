//! Numeric fields named by path (`pool.a100.machines`, `workload.infer.arrivals.rate_per_s`,
//! `engine.lease_ttl`), and overrides of them applied to the parsed TOML tree before the
//! loader reads it: what `drover-sim forecast --vary` varies. The loader then validates the
//! changed tree as it would the file, so a value it refuses is refused with its usual error,
//! at the line of the value replaced (line 1 for a field the file left out).

use super::read::Value;
use super::ScenarioError;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// How a numeric field is written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberKind {
    Integer,
    Float,
    /// A duration string such as "30s"; varied in seconds.
    Duration,
}

/// One step of a path: a key of a table, or an element of an array of tables chosen by its
/// `name` or by its index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Named(String),
    Index(usize),
}

/// A path to one numeric field of a scenario, checked against the scenario format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    /// As the user wrote it.
    pub text: String,
    pub kind: NumberKind,
    steps: Vec<Step>,
}

/// A path that names no numeric field of the scenario format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PathError {
    pub path: String,
    pub message: String,
}

use NumberKind::{Duration as D, Float as F, Integer as I};

/// The numeric fields of each table, by the table's place in the format.
const TOP: &[(&str, NumberKind)] = &[("seed", I), ("duration", D), ("warmup", D), ("drain", D)];
const REDIS: &[(&str, NumberKind)] = &[("latency", D), ("max_jobs", I), ("reply_loss", F)];
const ENGINE: &[(&str, NumberKind)] = &[
    ("lease_ttl", D),
    ("heartbeat", D),
    ("machine_ttl", D),
    ("reaper_period", D),
    ("max_attempts", I),
    ("default_timeout", D),
    ("backoff_base", D),
    ("backoff_max", D),
    ("request_timeout", D),
    ("retry_base", D),
    ("retry_max", D),
    ("breaker_failures", I),
    ("breaker_cooldown", D),
    ("idle_recheck", D),
    ("unworkable_after", D),
    ("retention", D),
    ("reap_batch", I),
];
const LIMITS: &[(&str, NumberKind)] = &[
    ("max_payload_bytes", I),
    ("max_kind_bytes", I),
    ("max_idempotency_key_bytes", I),
    ("max_jobs", I),
    ("max_attempts", I),
    ("max_timeout", D),
    ("max_gpus", I),
    ("max_labels", I),
    ("max_classes", I),
    ("max_machines", I),
    ("max_leases_per_heartbeat", I),
    ("max_batch", I),
    ("max_grants_per_claim", I),
    ("max_list", I),
];
const POLICY: &[(&str, NumberKind)] = &[
    ("aging_per_minute", I),
    ("aging_cap", I),
    ("download_penalty_per_gb", I),
    ("unused_gpu_mem_penalty_per_gb", I),
];
const JOURNAL: &[(&str, NumberKind)] = &[("max_len", I), ("max_age", D)];
const MODEL: &[(&str, NumberKind)] = &[("size_gb", I)];
const POOL: &[(&str, NumberKind)] = &[
    ("machines", I),
    ("gpus", I),
    ("gpu_mem_gb", I),
    ("disk_gb", I),
    ("cost_per_hour", F),
    ("boot", D),
    ("download_gb_per_s", F),
];
const LIFETIME: &[(&str, NumberKind)] = &[("mean", D), ("value", D)];
const WORKLOAD: &[(&str, NumberKind)] = &[
    ("gpus", I),
    ("gpu_mem_gb", I),
    ("peak_gpu_mem_gb", I),
    ("disk_gb", I),
    ("priority", I),
    ("max_attempts", I),
    ("timeout", D),
    ("fail_rate", F),
    ("start", D),
    ("stop", D),
];
const ARRIVALS: &[(&str, NumberKind)] = &[
    ("rate_per_s", F),
    ("at", D),
    ("count", I),
    ("spread", D),
    ("interval", D),
];
const SERVICE: &[(&str, NumberKind)] = &[("mean", D), ("median", D), ("sigma", F), ("value", D)];
const FAULT: &[(&str, NumberKind)] = &[
    ("at", D),
    ("fraction", F),
    ("count", I),
    ("duration", D),
    ("downtime", D),
    ("fill_gb", I),
    ("leak_gb", I),
];

/// Tables within a table: (key, its numeric fields, its own sub-tables).
type Nested = &'static [(&'static str, &'static [(&'static str, NumberKind)])];
const ENGINE_TABLES: Nested = &[("limits", LIMITS), ("policy", POLICY), ("journal", JOURNAL)];
const POOL_TABLES: Nested = &[("lifetime", LIFETIME)];
const WORKLOAD_TABLES: Nested = &[("arrivals", ARRIVALS), ("service", SERVICE)];

impl FieldPath {
    /// Reads a path such as `pool.a100.machines`, `pool[0].machines`, `fault[2].at` or
    /// `engine.limits.max_jobs`, refusing one that names no numeric field.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let err = |message: String| PathError {
            path: text.to_string(),
            message,
        };
        let mut parts = split(text).map_err(err)?.into_iter();
        let first = parts.next().unwrap_or_default();
        let (mut steps, fields, tables): (Vec<Step>, _, Nested) = match first.as_str() {
            "redis" | "engine" => {
                let tables = if first == "engine" {
                    ENGINE_TABLES
                } else {
                    &[]
                };
                let fields = if first == "engine" { ENGINE } else { REDIS };
                (vec![Step::Key(first.clone())], fields, tables)
            }
            "model" | "pool" | "workload" | "fault" => {
                let chosen = parts.next().ok_or_else(|| {
                    err(format!(
                        "name the {first}, e.g. {first}.NAME.FIELD or {first}[0].FIELD"
                    ))
                })?;
                let element = element_step(&first, &chosen);
                let (fields, tables): (_, Nested) = match first.as_str() {
                    "model" => (MODEL, &[]),
                    "pool" => (POOL, POOL_TABLES),
                    "workload" => (WORKLOAD, WORKLOAD_TABLES),
                    _ => (FAULT, &[]),
                };
                (vec![Step::Key(first.clone()), element], fields, tables)
            }
            _ => {
                let kind = field_kind(TOP, &[], &first, "the top level").map_err(err)?;
                if parts.next().is_some() {
                    return Err(err(format!("`{first}` is a number, not a table")));
                }
                return Ok(FieldPath {
                    text: text.to_string(),
                    kind,
                    steps: vec![Step::Key(first)],
                });
            }
        };
        let rest: Vec<String> = parts.collect();
        let kind = match rest.as_slice() {
            [field] => field_kind(fields, tables, field, &first).map_err(err)?,
            [table, field] => {
                let Some((_, inner)) = tables.iter().find(|(name, _)| name == table) else {
                    return Err(err(format!(
                        "{first} has no table `{table}`{}",
                        listed(" (tables: ", tables.iter().map(|t| t.0), ")")
                    )));
                };
                field_kind(inner, &[], field, &format!("{first}.{table}")).map_err(err)?
            }
            [] => return Err(err(format!("name a field of the {first}"))),
            _ => return Err(err("too many parts".to_string())),
        };
        steps.extend(rest.into_iter().map(Step::Key));
        Ok(FieldPath {
            text: text.to_string(),
            kind,
            steps,
        })
    }

    /// The TOML text of `value` for this field: a whole number, a float, or a duration string.
    /// `None` for a value this field cannot hold (a fraction for a whole number).
    pub fn literal(&self, value: f64) -> Option<String> {
        if !value.is_finite() {
            return None;
        }
        match self.kind {
            NumberKind::Integer => {
                (value.fract() == 0.0 && value.abs() < 9e15).then(|| format!("{}", value as i64))
            }
            NumberKind::Float => Some(format!("{value:?}")),
            NumberKind::Duration => (value >= 0.0).then(|| {
                let span = drover_engine::core::Span::from_secs_f64(value);
                format!("\"{span}\"")
            }),
        }
    }
}

/// Splits `pool[0].machines` into `pool`, `[0]`, `machines`.
fn split(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    for part in text.split('.') {
        match part.split_once('[') {
            Some((head, index)) if index.ends_with(']') => {
                if !head.is_empty() {
                    parts.push(head.to_string());
                }
                parts.push(format!("[{}", index));
            }
            _ if part.is_empty() => {
                return Err("an empty part (two dots, or a dot at an end)".into())
            }
            _ => parts.push(part.to_string()),
        }
    }
    if parts.is_empty() {
        return Err("an empty path".into());
    }
    Ok(parts)
}

/// `[3]` (or bare digits for faults, which have no names) is an index; anything else a name.
fn element_step(table: &str, chosen: &str) -> Step {
    let index = chosen
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .or((table == "fault").then_some(chosen));
    match index.and_then(|i| i.parse().ok()) {
        Some(i) => Step::Index(i),
        None => Step::Named(chosen.to_string()),
    }
}

fn field_kind(
    fields: &[(&str, NumberKind)],
    tables: Nested,
    key: &str,
    place: &str,
) -> Result<NumberKind, String> {
    if let Some((_, kind)) = fields.iter().find(|(name, _)| *name == key) {
        return Ok(*kind);
    }
    let numeric = listed("; numeric fields: ", fields.iter().map(|f| f.0), "");
    if tables.iter().any(|(name, _)| *name == key) {
        return Err(format!(
            "`{key}` is a table, not a number; name one of its fields"
        ));
    }
    if super::load::is_known_field(place, key) {
        return Err(format!("`{key}` of {place} is not numeric{numeric}"));
    }
    Err(format!("{place} has no field `{key}`{numeric}"))
}

fn listed<'a>(before: &str, names: impl Iterator<Item = &'a str>, after: &str) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("{before}{}{after}", names.join(", "))
    }
}

/// One field set to one value.
#[derive(Clone, Debug)]
pub struct Override {
    pub path: FieldPath,
    /// The value as TOML text (`FieldPath::literal`).
    pub literal: String,
}

/// Sets each override in `root`, keeping the replaced value's position for the loader's
/// errors. A chosen element that is not in the file is an error naming the path.
pub(crate) fn apply<'i>(
    root: &mut DeTable<'i>,
    overrides: &'i [Override],
    file: &str,
) -> Result<(), ScenarioError> {
    for o in overrides {
        let value = DeValue::parse(&o.literal).map_err(|e| error(file, o, e.message()))?;
        set(root, &o.path.steps, value.into_inner()).map_err(|m| error(file, o, &m))?;
    }
    Ok(())
}

fn error(file: &str, o: &Override, message: &str) -> ScenarioError {
    ScenarioError {
        file: file.to_string(),
        line: 1,
        column: 1,
        field: o.path.text.clone(),
        message: message.to_string(),
    }
}

fn set<'i>(table: &mut DeTable<'i>, steps: &[Step], value: DeValue<'i>) -> Result<(), String> {
    let (Step::Key(key), rest) = steps.split_first().ok_or("an empty path")? else {
        return Err("a path starts with a key".into());
    };
    if rest.is_empty() {
        match table.get_mut(key.as_str()) {
            Some(old) => *old = Spanned::new(old.span(), value),
            None => {
                table.insert(
                    Spanned::new(0..0, key.clone().into()),
                    Spanned::new(0..0, value),
                );
            }
        }
        return Ok(());
    }
    if !table.contains_key(key.as_str()) {
        if matches!(rest[0], Step::Key(_)) {
            let empty = DeValue::Table(DeTable::new());
            table.insert(
                Spanned::new(0..0, key.clone().into()),
                Spanned::new(0..0, empty),
            );
        } else {
            return Err(format!("the file has no [[{key}]]"));
        }
    }
    let inner = table.get_mut(key.as_str()).expect("present or inserted");
    match (inner.get_mut(), &rest[0]) {
        (DeValue::Table(t), Step::Key(_)) => set(t, rest, value),
        (DeValue::Array(elements), Step::Named(name)) => {
            let names: Vec<String> = elements.iter().filter_map(element_name).collect();
            let element = elements
                .iter_mut()
                .find(|e| element_name(e).as_deref() == Some(name.as_str()))
                .ok_or_else(|| {
                    format!(
                        "no [[{key}]] is named {name:?} (the file has: {})",
                        names.join(", ")
                    )
                })?;
            set_in_element(element, key, &rest[1..], value)
        }
        (DeValue::Array(elements), Step::Index(i)) => {
            let count = elements.len();
            let element = elements.get_mut(*i).ok_or_else(|| {
                format!("the file has {count} [[{key}]] table(s); index {i} is past the end")
            })?;
            set_in_element(element, key, &rest[1..], value)
        }
        (other, _) => Err(format!(
            "`{key}` is {} in the file, not {}",
            other.type_str(),
            if matches!(rest[0], Step::Key(_)) {
                "a table"
            } else {
                "an array of tables"
            }
        )),
    }
}

fn set_in_element<'i>(
    element: &mut Value<'i>,
    key: &str,
    steps: &[Step],
    value: DeValue<'i>,
) -> Result<(), String> {
    match element.get_mut() {
        DeValue::Table(t) => set(t, steps, value),
        other => Err(format!(
            "an element of `{key}` is {}, not a table",
            other.type_str()
        )),
    }
}

fn element_name(element: &Value<'_>) -> Option<String> {
    element
        .get_ref()
        .as_table()?
        .get("name")?
        .get_ref()
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_numeric_fields_and_their_kind() {
        let kind = |p: &str| FieldPath::parse(p).map(|f| f.kind);
        assert_eq!(kind("pool.a100.machines"), Ok(I));
        assert_eq!(kind("pool[0].cost_per_hour"), Ok(F));
        assert_eq!(kind("pool.spot.lifetime.mean"), Ok(D));
        assert_eq!(kind("workload.infer.arrivals.rate_per_s"), Ok(F));
        assert_eq!(kind("engine.lease_ttl"), Ok(D));
        assert_eq!(kind("engine.limits.max_jobs"), Ok(I));
        assert_eq!(kind("fault.0.fraction"), Ok(F));
        assert_eq!(kind("duration"), Ok(D));
    }

    #[test]
    fn bad_paths_say_what_is_wrong() {
        let message = |p: &str| FieldPath::parse(p).unwrap_err().to_string();
        assert!(message("pool.a.machinez").contains("no field `machinez`"));
        assert!(message("pool.a.gpu_model").contains("not numeric"));
        assert!(message("pool.a.lifetime").contains("is a table"));
        assert!(message("pool.machines").contains("name a field"));
        assert!(message("nonsense").contains("no field `nonsense`"));
        assert!(message("engine.limits.bogus").contains("engine.limits has no field"));
        assert!(message("pool..x").contains("empty part"));
    }

    #[test]
    fn literals_follow_the_kind() {
        let path = |p: &str| FieldPath::parse(p).unwrap();
        assert_eq!(path("pool.a.machines").literal(12.0).as_deref(), Some("12"));
        assert_eq!(path("pool.a.machines").literal(1.5), None);
        assert_eq!(
            path("pool.a.cost_per_hour").literal(2.0).as_deref(),
            Some("2.0")
        );
        assert_eq!(
            path("engine.lease_ttl").literal(90.0).as_deref(),
            Some("\"90s\"")
        );
        assert_eq!(
            path("engine.lease_ttl").literal(0.25).as_deref(),
            Some("\"250ms\"")
        );
    }
}
