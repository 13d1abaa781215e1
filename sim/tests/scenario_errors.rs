//! The scenario loader through its public API: bundled files load, errors are located, and no
//! input makes it panic.

use drover_sim::scenario::{Scenario, ScenarioError};
use proptest::prelude::*;
use std::path::PathBuf;

fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"))
}

#[test]
fn bundled_scenarios_load_from_disk() {
    for name in [
        "steady",
        "spot-churn",
        "partition",
        "redis-restart",
        "redis-restart-everysec",
        "redis-restart-none",
        "oom-disk",
        "burst",
        "mmc-check",
        "churn-1k",
    ] {
        let s = Scenario::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, name);
    }
}

#[test]
fn an_error_reads_file_line_column_field_message() {
    let steady = std::fs::read_to_string(scenario_path("steady")).unwrap();
    let text = steady.replacen("machines = 16", "machines = 16\nmachine_count = 3", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("machine_count"))
        .unwrap()
        + 1;
    let e: ScenarioError = Scenario::parse(&text, "steady.toml").unwrap_err();
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (line, 1, "pool[1].machine_count")
    );
    assert!(e.to_string().starts_with(&format!(
        "steady.toml:{line}:1: pool[1].machine_count: unknown field"
    )));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Scenario::parse(&text, "x.toml");
    }

    #[test]
    fn edited_lines_never_panic(
        line in 0usize..80,
        replacement in "[a-z_]{1,12} = (\"[0-9a-z .]{0,8}\"|-?[0-9]{1,12}(\\.[0-9])?|true|\\[\\]|\\{\\})",
    ) {
        let steady = std::fs::read_to_string(scenario_path("steady")).unwrap();
        let mut lines: Vec<&str> = steady.lines().collect();
        let at = line % lines.len();
        lines[at] = &replacement;
        let text = lines.join("\n");
        if let Err(e) = Scenario::parse(&text, "x.toml") {
            prop_assert!(e.line >= 1 && e.column >= 1);
        }
    }
}
