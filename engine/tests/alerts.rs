//! deploy/alerts.yml: every metric each rule's expression names is exported by the API's or
//! an agent's `/metrics`, scraped from real servers on a `LocalStore`.

mod api_support;

use std::collections::BTreeSet;

use api_support::promql::{exported_by_servers, metric_names};

#[tokio::test]
async fn every_alert_uses_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/alerts.yml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let names = exported_by_servers().await;

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
}

#[test]
fn names_are_read_outside_matchers_ranges_groupings_and_variables() {
    let names = metric_names(
        r#"max(rate(a_total{state="x} y"}[5m])) > 0 and b == 1 offset 1h
           or histogram_quantile(0.99, sum by (le, class) (rate(c_bucket{class=~"$class"}[$__rate_interval])))
           unless on (instance) group_left d:recorded * 1e3"#,
    );
    let expected = ["a_total", "b", "c_bucket", "d:recorded"];
    assert_eq!(names, BTreeSet::from(expected.map(String::from)));
    assert!(metric_names("sum without (class) (x)").contains("x"));
    assert!(metric_names("$var").is_empty());
}
