//! Determinism: each bundled scenario run twice with one seed gives one digest, and another
//! seed gives another.

use drover_sim::run::run;
use drover_sim::scenario::Scenario;
use std::path::PathBuf;
use std::sync::Arc;

fn bundled() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "at least six bundled scenarios");
    files
}

#[test]
fn every_bundled_scenario_replays_exactly_and_seeds_differ() {
    for file in bundled() {
        let scenario = Arc::new(Scenario::load(&file).expect("bundled scenarios parse"));
        let seed = scenario.seed;
        let first = run(scenario.clone(), seed, None, |_| {});
        let again = run(scenario.clone(), seed, None, |_| {});
        let other = run(scenario.clone(), seed + 1, None, |_| {});
        let name = file.display();
        assert_eq!(
            first.digest, again.digest,
            "{name}: same seed, different trace"
        );
        assert_eq!(first.events, again.events, "{name}");
        assert_eq!(first.jobs.succeeded, again.jobs.succeeded, "{name}");
        assert_ne!(first.digest, other.digest, "{name}: two seeds, one trace");
        assert_eq!(first.violation_count, 0, "{name}: {:?}", first.violations);
        assert_eq!(first.jobs.lost, 0, "{name}");
        assert_eq!(
            first.jobs.in_flight, 0,
            "{name}: every job ends within the drain"
        );
    }
}

#[test]
fn chaos_runs_replay_exactly_too() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chaos-mix.toml");
    let scenario = Arc::new(Scenario::load(&file).unwrap());
    let a = run(scenario.clone(), 77, Some(60.0), |_| {});
    let b = run(scenario.clone(), 77, Some(60.0), |_| {});
    assert_eq!(a.digest, b.digest);
    let calm = run(scenario, 77, None, |_| {});
    assert_ne!(a.digest, calm.digest, "the swarm's faults change the trace");
}
