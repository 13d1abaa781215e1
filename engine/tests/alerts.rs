//! deploy/alerts.yml: every metric each rule's expression names is exported by the API's or
//! an agent's `/metrics`, scraped from real servers on a `LocalStore`.

mod api_support;

use api_support::*;
use drover_engine::api::agent_metrics;
use std::collections::BTreeSet;
use std::time::Duration;

/// PromQL functions, keywords and label names that look like metric names.
const NOT_METRICS: &[&str] = &[
    "histogram_quantile",
    "sum",
    "max",
    "min",
    "by",
    "without",
    "rate",
    "increase",
    "deriv",
    "and",
    "or",
    "unless",
    "absent",
    "le",
    "class",
    "state",
    "code",
    "instance",
    "on",
];

/// Identifiers in an expression outside strings, range brackets and label matchers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth_braces = 0;
    let mut word = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if !in_string && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        let is_name = word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if depth_braces == 0 && is_name && !NOT_METRICS.contains(&word.as_str()) {
            names.insert(word.clone());
        }
        word.clear();
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => depth_braces += 1,
            '}' if !in_string => depth_braces -= 1,
            _ => {}
        }
    }
    names
}

/// Exported names from `# TYPE` lines, with the histogram suffixes.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn every_alert_uses_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/alerts.yml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api = local_api().await;
    let agent = start_agent(
        api.store.clone(),
        fast_config(),
        machine("m1", 1),
        Duration::from_secs(5),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = api.client.get("/metrics").await.unwrap();
    let mut names = exported(metrics.as_str().unwrap());
    names.extend(exported(&agent_metrics::render(&agent.snapshot.borrow())));

    let mut rules = 0;
    for group in yaml["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert} has a summary"
            );
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{alert}: no metric in {expr}");
            for name in used {
                assert!(names.contains(&name), "{alert}: {name} is not exported");
            }
            rules += 1;
        }
    }
    assert!(rules >= 5, "{rules} rules");
    agent.task.abort();
}

#[test]
fn names_are_read_outside_matchers_and_ranges() {
    let names = metric_names(r#"max(rate(a_total{state="x y"}[5m])) > 0 and b == 1"#);
    assert_eq!(
        names,
        BTreeSet::from(["a_total".to_string(), "b".to_string()])
    );
}
