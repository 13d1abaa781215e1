//! Which class head a claiming machine gets. The store finds the heads that fit; this decides
//! among them, so the policy is the same in every store.
//!
//! Score, in thousandths of a priority point: priority, plus aging (a head that has waited
//! gains, up to a cap, so a large job is not starved by a stream of small ones), minus the GB
//! the machine would download (model affinity), minus the GPU memory the job would leave
//! unused (fit: leave large GPUs for large jobs). Ties go to the head submitted first.

use super::config::{EngineConfig, Policy};
use super::model::{Offer, Requirements};
use super::time::Span;

/// A class head as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    pub priority: u8,
    pub waited: Span,
    /// Submission order, the final tie-break.
    pub seq: u64,
}

pub fn score(head: Head, req: &Requirements, offer: &Offer, config: &EngineConfig) -> i64 {
    let policy: &Policy = &config.policy;
    let minutes = (head.waited.as_micros() / 60_000_000) as i64;
    let aging = minutes
        .saturating_mul(policy.aging_per_minute)
        .min(policy.aging_cap);
    let download_gb = config.download_gb(req.models.minus(offer.cached)) as i64;
    let unused_mem_gb = if req.gpus == 0 {
        0
    } else {
        offer.gpu_mem_gb.saturating_sub(req.gpu_mem_gb) as i64
    };
    head.priority as i64 * 1000 + aging
        - download_gb * policy.download_penalty_per_gb
        - unused_mem_gb * policy.unused_gpu_mem_penalty_per_gb
}

/// Whether `a` should be served before `b`.
pub fn better(a: (i64, u64), b: (i64, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::CatalogModel;
    use crate::core::ids::{ModelId, ModelSet};

    fn offer() -> Offer {
        Offer {
            free_gpus: 1,
            gpu_mem_gb: 80,
            free_disk_gb: 100,
            cached: ModelSet::EMPTY,
        }
    }

    #[test]
    fn priority_dominates_and_aging_is_capped() {
        let config = EngineConfig::default();
        let req = Requirements {
            gpus: 1,
            gpu_mem_gb: 80,
            ..Default::default()
        };
        let low_old = Head {
            priority: 40,
            waited: Span::from_secs(3600 * 10),
            seq: 1,
        };
        let high_new = Head {
            priority: 70,
            waited: Span::ZERO,
            seq: 2,
        };
        let low = score(low_old, &req, &offer(), &config);
        let high = score(high_new, &req, &offer(), &config);
        assert!(high > low, "aging is capped at 20 points, the gap is 30");
        let low_close = Head {
            priority: 60,
            ..low_old
        };
        assert!(
            score(low_close, &req, &offer(), &config) > high,
            "10 points are within the cap"
        );
    }

    #[test]
    fn warm_models_and_snug_fits_win_ties() {
        let config = EngineConfig {
            models: vec![CatalogModel {
                name: "llama".into(),
                size_gb: 30,
            }],
            ..EngineConfig::default()
        };
        let head = Head {
            priority: 50,
            waited: Span::ZERO,
            seq: 1,
        };
        let needs_model = Requirements {
            gpus: 1,
            models: ModelSet::EMPTY.with(ModelId(0)),
            ..Default::default()
        };
        let cold = score(head, &needs_model, &offer(), &config);
        let warm_offer = Offer {
            cached: needs_model.models,
            ..offer()
        };
        assert!(score(head, &needs_model, &warm_offer, &config) > cold);

        let small = Requirements {
            gpus: 1,
            gpu_mem_gb: 8,
            ..Default::default()
        };
        let large = Requirements {
            gpus: 1,
            gpu_mem_gb: 80,
            ..Default::default()
        };
        assert!(score(head, &large, &offer(), &config) > score(head, &small, &offer(), &config));
    }

    #[test]
    fn equal_scores_go_to_the_earlier_submission() {
        assert!(better((5, 1), (5, 2)));
        assert!(!better((5, 2), (5, 1)));
        assert!(better((6, 9), (5, 1)));
    }
}
