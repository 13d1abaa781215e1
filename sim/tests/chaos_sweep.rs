//! Swarm testing: 200 seeds of random faults of every kind against the mixed fleet; the
//! invariant checker must find nothing.

use drover_sim::scenario::Scenario;
use drover_sim::sweep::sweep;
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn two_hundred_chaos_seeds_find_no_violation() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chaos-mix.toml");
    let scenario = Arc::new(Scenario::load(&file).unwrap());
    let report = sweep(scenario, 0, 200, Some(20.0), 0, |_| {});
    assert_eq!(report.results.len(), 200);
    let failing: Vec<String> = report
        .failing
        .iter()
        .map(|f| {
            format!(
                "seed {}: {}",
                f.seed,
                f.first_violation.as_deref().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "reproduce with drover-sim run scenarios/chaos-mix.toml --seed N --chaos 20:\n{}",
        failing.join("\n")
    );
    let faulted: u64 = report.results.iter().map(|r| r.jobs).sum();
    assert!(
        faulted > 100_000,
        "the sweep simulated real work ({faulted} jobs)"
    );
    let digests: std::collections::BTreeSet<&str> =
        report.results.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(digests.len(), 200, "every seed is a different history");
}
