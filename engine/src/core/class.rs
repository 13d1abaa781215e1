//! Classes and fit: whether a machine could ever run a class, and whether it can right now.
//!
//! Fit splits in two so the store can cache the expensive half: a profile's fixed features
//! (GPU model, labels, totals) are judged once per (class, profile), and only the free
//! resources of an offer are judged per claim.

use super::config::EngineConfig;
use super::ids::ModelSet;
use super::labels::{canonicalize, labels_match};
use super::model::{JobSpec, Offer, Profile, Requirements, MAX_PRIORITY};
use super::time::Span;
use std::sync::Arc;

/// Whether a machine of `profile`, empty, could run the class at all.
pub fn profile_allows(req: &Requirements, profile: &Profile, config: &EngineConfig) -> bool {
    let gpu_model_ok = req.gpu_models.is_empty() || req.gpu_models.contains(&profile.gpu_model);
    let gpus_ok =
        req.gpus <= profile.gpus && (req.gpus == 0 || req.gpu_mem_gb <= profile.gpu_mem_gb);
    let disk_ok = req.disk_gb.saturating_add(config.download_gb(req.models)) <= profile.disk_gb;
    gpu_model_ok
        && gpus_ok
        && disk_ok
        && profile.runs_kind(&req.kind)
        && labels_match(&req.labels, &req.not_labels, &profile.labels)
}

/// Why no machine of `profiles` could run `req`: the first requirement, in this order, that
/// none of them meets (kind, GPUs, GPU model, GPU memory, disk), or else that none meets them
/// all at once. The tail of an `unworkable` job's error (`JobError::unworkable`); lua/fit.lua
/// `F.first_unmet` words it identically, which the conformance suite checks.
pub fn first_unmet(req: &Requirements, profiles: &[&Profile], config: &EngineConfig) -> String {
    if !profiles.iter().any(|p| p.runs_kind(&req.kind)) {
        return format!("runs jobs of kind '{}'", req.kind);
    }
    let most_gpus = profiles.iter().map(|p| p.gpus).max().unwrap_or(0);
    if req.gpus > most_gpus {
        return format!("has {} GPUs (the largest has {most_gpus})", req.gpus);
    }
    let model_ok = |p: &Profile| req.gpu_models.is_empty() || req.gpu_models.contains(&p.gpu_model);
    let big: Vec<&Profile> = profiles
        .iter()
        .copied()
        .filter(|p| p.gpus >= req.gpus && model_ok(p))
        .collect();
    if req.gpus > 0 && big.is_empty() {
        let models = req.gpu_models.join(", ");
        return format!("with {} GPUs has a GPU model among {models}", req.gpus);
    }
    let most_mem = big.iter().map(|p| p.gpu_mem_gb).max().unwrap_or(0);
    if req.gpus > 0 && req.gpu_mem_gb > most_mem {
        return format!(
            "with {} GPUs has {} GB per GPU (the most is {most_mem})",
            req.gpus, req.gpu_mem_gb
        );
    }
    let disk = req.disk_gb.saturating_add(config.download_gb(req.models));
    let most_disk = profiles.iter().map(|p| p.disk_gb).max().unwrap_or(0);
    if disk > most_disk {
        return format!(
            "has {disk} GB of disk for its scratch and models (the most is {most_disk})"
        );
    }
    "meets its labels and all its requirements at once".to_string()
}

/// Whether an offer's free resources hold the class now (the profile already allows it).
pub fn offer_fits(req: &Requirements, offer: &Offer, config: &EngineConfig) -> bool {
    let gpus_ok =
        req.gpus <= offer.free_gpus && (req.gpus == 0 || req.gpu_mem_gb <= offer.gpu_mem_gb);
    let download = config.download_gb(req.models.minus(offer.cached));
    gpus_ok && req.disk_gb.saturating_add(download) <= offer.free_disk_gb
}

/// What is left of `offer` once a job of `req` takes its share (its models now cached).
pub fn offer_after(offer: &Offer, req: &Requirements, config: &EngineConfig) -> Offer {
    let download = config.download_gb(req.models.minus(offer.cached));
    Offer {
        free_gpus: offer.free_gpus.saturating_sub(req.gpus),
        gpu_mem_gb: offer.gpu_mem_gb,
        free_disk_gb: offer.free_disk_gb.saturating_sub(req.disk_gb + download),
        cached: ModelSet(offer.cached.0 | req.models.0),
    }
}

/// A field of a submitted job that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidJob {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidJob {
    InvalidJob {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a job against the limits and puts its requirements in canonical form, with the
/// engine defaults filled in. The error names the field.
pub fn validate_spec(mut spec: JobSpec, config: &EngineConfig) -> Result<JobSpec, InvalidJob> {
    let limits = &config.limits;
    if spec.kind.is_empty() || spec.kind.len() > limits.max_kind_bytes as usize {
        return Err(invalid(
            "kind",
            format!("must be 1 to {} bytes", limits.max_kind_bytes),
        ));
    }
    if spec.payload.len() > limits.max_payload_bytes as usize {
        return Err(invalid(
            "payload",
            format!(
                "is {} bytes; the limit is {}",
                spec.payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    if spec.priority > MAX_PRIORITY {
        return Err(invalid("priority", format!("must be 0 to {MAX_PRIORITY}")));
    }
    if spec.max_attempts == 0 {
        spec.max_attempts = config.max_attempts;
    }
    if spec.max_attempts > limits.max_attempts {
        return Err(invalid(
            "max_attempts",
            format!("must be at most {}", limits.max_attempts),
        ));
    }
    if spec.timeout == Span::ZERO {
        spec.timeout = config.default_timeout;
    }
    if spec.timeout > limits.max_timeout {
        return Err(invalid(
            "timeout",
            format!("must be at most {}", limits.max_timeout),
        ));
    }
    if let Some(key) = &spec.idempotency_key {
        if key.is_empty() || key.len() > limits.max_idempotency_key_bytes as usize {
            return Err(invalid(
                "idempotency_key",
                format!("must be 1 to {} bytes", limits.max_idempotency_key_bytes),
            ));
        }
    }
    if let Some(req) = canonical_requirements(&spec.requirements, &spec.kind, config)? {
        spec.requirements = Arc::new(req);
    }
    Ok(spec)
}

/// The canonical form of `req` for a job of `kind`, or `None` when it already is canonical
/// (the common case, which then costs no allocation).
fn canonical_requirements(
    req: &Requirements,
    kind: &str,
    config: &EngineConfig,
) -> Result<Option<Requirements>, InvalidJob> {
    let limits = &config.limits;
    if req.gpus > limits.max_gpus {
        return Err(invalid(
            "requirements.gpus",
            format!("must be at most {}", limits.max_gpus),
        ));
    }
    if req.labels.len() + req.not_labels.len() > limits.max_labels as usize {
        return Err(invalid(
            "requirements.labels",
            format!("at most {} labels", limits.max_labels),
        ));
    }
    if let Some(unknown) = req
        .models
        .iter()
        .find(|m| m.0 as usize >= config.models.len())
    {
        return Err(invalid(
            "requirements.models",
            format!("model #{} is not in the catalog", unknown.0),
        ));
    }
    if req.kind == kind && is_canonical(req) {
        return Ok(None);
    }
    let mut canonical = req.clone();
    canonical.kind = kind.to_owned();
    canonical.gpu_models.sort();
    canonical.gpu_models.dedup();
    canonicalize(&mut canonical.labels).map_err(|key| {
        invalid(
            format!("requirements.labels.{key}"),
            "must be a finite number",
        )
    })?;
    canonicalize(&mut canonical.not_labels).map_err(|key| {
        invalid(
            format!("requirements.not_labels.{key}"),
            "must be a finite number",
        )
    })?;
    Ok((canonical != *req).then_some(canonical))
}

/// Whether lists are sorted without repeats and numbers finite, checked without allocating.
fn is_canonical(req: &Requirements) -> bool {
    use super::labels::LabelValue;
    let strictly_sorted = |items: &[String]| items.windows(2).all(|w| w[0] < w[1]);
    let labels_ok = |labels: &super::labels::Labels| {
        labels.values().all(|value| match value {
            LabelValue::List(items) => strictly_sorted(items),
            LabelValue::Number(n) => n.is_finite(),
            _ => true,
        })
    };
    strictly_sorted(&req.gpu_models) && labels_ok(&req.labels) && labels_ok(&req.not_labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::CatalogModel;
    use crate::core::ids::{ModelId, ModelSet};

    fn config() -> EngineConfig {
        EngineConfig {
            models: vec![CatalogModel {
                name: "sdxl".into(),
                size_gb: 7,
            }],
            ..EngineConfig::default()
        }
    }

    fn a100() -> Profile {
        Profile {
            gpus: 8,
            gpu_model: "A100".into(),
            gpu_mem_gb: 80,
            disk_gb: 100,
            labels: Default::default(),
            kinds: Vec::new(),
        }
    }

    #[test]
    fn the_first_unmet_requirement_is_named() {
        let config = config();
        let mut small = a100();
        small.gpus = 2;
        small.gpu_mem_gb = 24;
        small.gpu_model = "L4".into();
        let big = a100();
        let (fleet, only_small) = (vec![&small, &big], vec![&small]);
        let unmet = |edit: &dyn Fn(&mut Requirements), fleet: &[&Profile]| {
            let mut req = Requirements::default();
            edit(&mut req);
            first_unmet(&req, fleet, &config)
        };
        assert_eq!(
            unmet(&|r| r.gpus = 16, &fleet),
            "has 16 GPUs (the largest has 8)"
        );
        assert_eq!(
            unmet(
                &|r| {
                    r.gpus = 4;
                    r.gpu_mem_gb = 8
                },
                &only_small
            ),
            "has 4 GPUs (the largest has 2)"
        );
        assert_eq!(
            unmet(
                &|r| {
                    r.gpus = 1;
                    r.gpu_models = vec!["H100".into()]
                },
                &fleet
            ),
            "with 1 GPUs has a GPU model among H100"
        );
        assert_eq!(
            unmet(
                &|r| {
                    r.gpus = 1;
                    r.gpu_mem_gb = 40
                },
                &only_small
            ),
            "with 1 GPUs has 40 GB per GPU (the most is 24)"
        );
        assert_eq!(
            unmet(
                &|r| {
                    r.disk_gb = 95;
                    r.models = ModelSet::EMPTY.with(ModelId(0))
                },
                &fleet
            ),
            "has 102 GB of disk for its scratch and models (the most is 100)"
        );
        let mut picky = a100();
        picky.kinds = vec!["sleep".into()];
        assert_eq!(
            unmet(&|r| r.kind = "train".into(), &[&picky]),
            "runs jobs of kind 'train'"
        );
    }

    #[test]
    fn a_machine_that_advertises_kinds_takes_only_those() {
        let config = config();
        let spec = JobSpec::new("render", Arc::new(Requirements::default()));
        let req = validate_spec(spec, &config).unwrap().requirements;
        assert_eq!(
            req.kind, "render",
            "validation makes the kind part of the class"
        );
        let mut profile = a100();
        assert!(
            profile_allows(&req, &profile, &config),
            "no kinds: runs all"
        );
        profile.kinds = vec!["command".into(), "sleep".into()];
        assert!(!profile_allows(&req, &profile, &config));
        profile.kinds = vec!["command".into(), "render".into()];
        assert!(profile_allows(&req, &profile, &config));
        let unvalidated = Requirements::default();
        assert!(profile_allows(&unvalidated, &profile, &config));
    }

    #[test]
    fn profile_fit_checks_model_memory_gpus_and_disk() {
        let config = config();
        let mut req = Requirements {
            gpus: 2,
            gpu_mem_gb: 40,
            ..Default::default()
        };
        assert!(profile_allows(&req, &a100(), &config));
        req.gpu_models = vec!["H100".into()];
        assert!(!profile_allows(&req, &a100(), &config));
        req.gpu_models = vec![];
        req.gpu_mem_gb = 81;
        assert!(!profile_allows(&req, &a100(), &config));
        req.gpu_mem_gb = 40;
        req.gpus = 9;
        assert!(!profile_allows(&req, &a100(), &config));
        req.gpus = 1;
        req.disk_gb = 95;
        req.models = ModelSet::EMPTY.with(ModelId(0));
        assert!(
            !profile_allows(&req, &a100(), &config),
            "95 GB scratch + 7 GB model > 100 GB"
        );
    }

    #[test]
    fn offer_fit_counts_downloads_only_for_missing_models() {
        let config = config();
        let req = Requirements {
            gpus: 1,
            gpu_mem_gb: 8,
            disk_gb: 10,
            models: ModelSet::EMPTY.with(ModelId(0)),
            ..Default::default()
        };
        let mut offer = Offer {
            free_gpus: 1,
            gpu_mem_gb: 24,
            free_disk_gb: 12,
            cached: ModelSet::EMPTY,
        };
        assert!(!offer_fits(&req, &offer, &config), "needs 10 + 7 GB");
        offer.cached = req.models;
        assert!(offer_fits(&req, &offer, &config));
        offer.free_gpus = 0;
        assert!(!offer_fits(&req, &offer, &config));
    }

    #[test]
    fn validation_names_fields_and_fills_defaults() {
        let config = config();
        let spec = JobSpec::new("sleep", Arc::new(Requirements::default()));
        let valid = validate_spec(spec.clone(), &config).unwrap();
        assert_eq!(valid.max_attempts, config.max_attempts);
        assert_eq!(valid.timeout, config.default_timeout);

        let mut big = spec.clone();
        big.payload = "x".repeat(config.limits.max_payload_bytes as usize + 1);
        assert_eq!(validate_spec(big, &config).unwrap_err().field, "payload");
        let mut urgent = spec.clone();
        urgent.priority = 101;
        assert_eq!(
            validate_spec(urgent, &config).unwrap_err().field,
            "priority"
        );
        let mut unknown_model = spec;
        unknown_model.requirements = Arc::new(Requirements {
            models: ModelSet::EMPTY.with(ModelId(3)),
            ..Default::default()
        });
        assert_eq!(
            validate_spec(unknown_model, &config).unwrap_err().field,
            "requirements.models"
        );
    }
}
