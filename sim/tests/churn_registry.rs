//! Endless churn keeps the store's registry the size of the fleet: machines that left are
//! forgotten after `engine.retention`. A day of spot churn (the bundled spot-churn scenario, run
//! for 24h) loses hundreds of machines, and the registry at the end holds the live fleet plus
//! those that left within the last retention period, not every machine that ever came.

use drover_sim::run::run;
use drover_sim::scenario::Scenario;
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn a_day_of_spot_churn_leaves_a_registry_the_size_of_the_fleet() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/spot-churn.toml");
    let text = std::fs::read_to_string(&file).expect("the bundled scenario");
    let day = text.replacen("duration = \"4h\"", "duration = \"24h\"", 1);
    assert_ne!(day, text, "the scenario's duration line moved");
    let dir = std::env::temp_dir().join(format!("drover-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("spot-churn-day.toml");
    std::fs::write(&path, day).expect("write the day's scenario");
    let scenario = Arc::new(Scenario::load(&path).expect("parses"));
    let report = run(scenario, 7, None, |_| {});
    let lost = report.stats.machines_lost;
    assert!(
        lost > 300,
        "a day of 2h lifetimes loses hundreds of machines: {lost}"
    );
    assert_eq!(report.violation_count, 0, "{:?}", report.violations);
    // Alive, plus about an hour's losses (retention 1h, ~32 machines an hour): far below the
    // ~800 a registry that never forgets would hold.
    assert!(
        report.store_machines <= report.machines_alive + 60,
        "the store holds {} machines, {} alive, {lost} lost in all",
        report.store_machines,
        report.machines_alive
    );
    let _ = std::fs::remove_dir_all(&dir);
}
