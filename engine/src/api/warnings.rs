//! What a submission's reply warns of: requirements that no machine seen within
//! `unworkable_after` meets. Machines come and go, so the job is accepted all the same; the
//! reply says why it may wait, and the reaper judges it `unworkable` if none ever comes.
//!
//! Judged from the registered machines the store lists (at most `limits.max_list`): kind,
//! GPUs, GPU memory and GPU model. Disk and labels are not in the listing, so they are not
//! judged.

use crate::core::{Requirements, Span, Time};
use crate::store::MachineView;

/// At most one warning: the first requirement that no recent machine meets.
pub fn warnings(
    req: &Requirements,
    machines: &[MachineView],
    now: Time,
    window: Span,
) -> Vec<String> {
    let since = Time(now.0.saturating_sub(window.as_micros()));
    let recent: Vec<&MachineView> = machines.iter().filter(|m| m.last_seen >= since).collect();
    let seen = format!("no machine seen in the last {window}");
    if recent.is_empty() {
        return vec![format!("{seen}: the job waits for one")];
    }
    let runs_kind = |m: &&MachineView| m.kinds.is_empty() || m.kinds.contains(&req.kind);
    if !req.kind.is_empty() && !recent.iter().any(runs_kind) {
        return vec![format!("{seen} runs jobs of kind '{}'", req.kind)];
    }
    let most_gpus = recent.iter().map(|m| m.gpus).max().unwrap_or(0);
    if req.gpus > most_gpus {
        let gpus = req.gpus;
        return vec![format!(
            "{seen} has {gpus} GPUs; the largest has {most_gpus}"
        )];
    }
    let big_enough: Vec<&&MachineView> = recent.iter().filter(|m| m.gpus >= req.gpus).collect();
    if req.gpus > 0 && !req.gpu_models.is_empty() {
        let fits = |m: &&&MachineView| req.gpu_models.contains(&m.gpu_model);
        if !big_enough.iter().any(fits) {
            let mut models: Vec<&str> = big_enough.iter().map(|m| m.gpu_model.as_str()).collect();
            models.sort_unstable();
            models.dedup();
            return vec![format!(
                "{seen} with {} GPUs has a GPU model in {:?}; seen: {models:?}",
                req.gpus, req.gpu_models
            )];
        }
    }
    let most_mem = big_enough.iter().map(|m| m.gpu_mem_gb).max().unwrap_or(0);
    if req.gpus > 0 && req.gpu_mem_gb > most_mem {
        return vec![format!(
            "{seen} with {} GPUs has {} GB per GPU; the most is {most_mem}",
            req.gpus, req.gpu_mem_gb
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MachineId;

    fn machine(gpus: u32, mem: u32, model: &str, last_seen: u64) -> MachineView {
        MachineView {
            id: MachineId(1),
            name: "m".into(),
            pool: "p".into(),
            state: "ready",
            gpus,
            gpu_model: model.into(),
            gpu_mem_gb: mem,
            cost_per_hour: 0.0,
            leases: 0,
            idle: true,
            registered_at: Time(0),
            last_seen: Time(last_seen),
            kinds: Vec::new(),
        }
    }

    fn req(gpus: u32, mem: u32, models: &[&str]) -> Requirements {
        Requirements {
            gpus,
            gpu_mem_gb: mem,
            gpu_models: models.iter().map(|s| s.to_string()).collect(),
            ..Requirements::default()
        }
    }

    #[test]
    fn names_the_first_requirement_no_recent_machine_meets() {
        let window = Span::from_secs(600);
        let now = Time(1_000_000_000);
        let old = machine(8, 80, "A100", 0);
        let fleet = [machine(2, 24, "L4", now.0), old.clone()];
        let w = |r: Requirements| warnings(&r, &fleet, now, window);
        assert_eq!(
            w(req(8, 0, &[])),
            ["no machine seen in the last 10m has 8 GPUs; the largest has 2"],
            "the 8-GPU machine was seen too long ago"
        );
        assert!(w(req(2, 80, &[]))[0].contains("has 80 GB per GPU; the most is 24"));
        assert!(w(req(1, 0, &["A100"]))[0].contains("seen: [\"L4\"]"));
        assert!(w(req(2, 24, &["L4"])).is_empty());
        assert!(w(req(0, 0, &[])).is_empty());
        let mut picky = fleet.clone();
        picky[0].kinds = vec!["sleep".into()];
        let render = Requirements {
            kind: "render".into(),
            ..req(1, 0, &[])
        };
        assert_eq!(
            warnings(&render, &picky, now, window),
            ["no machine seen in the last 10m runs jobs of kind 'render'"]
        );
        assert_eq!(
            warnings(&req(0, 0, &[]), &[old], now, window),
            ["no machine seen in the last 10m: the job waits for one"]
        );
    }
}
