//! What the checked-in queries (`deploy/alerts.yml`, `deploy/grafana/drover.json`) name, and
//! what the servers export: every metric a query names must be exported.

use super::{fast_config, local_api, machine, start_agent};
use drover_engine::api::agent_metrics;
use std::collections::BTreeSet;
use std::time::Duration;

/// Words that are PromQL keywords, not metric names (aggregations among them: `sum by (…)`
/// puts a word between the name and its parenthesis).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Modifiers whose parenthesised list holds label names.
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names in a PromQL expression: identifiers outside strings, label matchers
/// (`{…}`) and ranges (`[…]`), that are not functions (`rate(`), keywords, label lists of
/// `by (…)` and the like, or Grafana variables (`$class`, `$__rate_interval`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
        } else if c == '{' || c == '[' {
            i = skip_until(&chars, i, if c == '{' { '}' } else { ']' });
        } else if c == '$' {
            i = skip_word(&chars, i + 1);
        } else if is_word_start(c) {
            let end = skip_word(&chars, i);
            let word: String = chars[i..end].iter().collect();
            let next = next_non_space(&chars, end);
            let opens = next.filter(|&n| chars[n] == '(');
            i = match opens {
                Some(open) if GROUPINGS.contains(&word.as_str()) => skip_until(&chars, open, ')'),
                _ => end,
            };
            let keyword = KEYWORDS.contains(&word.to_lowercase().as_str())
                || GROUPINGS.contains(&word.as_str());
            if opens.is_none() && !keyword {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            // Numbers and durations (1e3, 5m): not names.
            i = skip_word(&chars, i);
        } else {
            i += 1;
        }
    }
    names
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn skip_word(chars: &[char], mut i: usize) -> usize {
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
    {
        i += 1;
    }
    i
}

fn next_non_space(chars: &[char], mut i: usize) -> Option<usize> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    (i < chars.len()).then_some(i)
}

/// Past the closing quote of the string opening at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// Past the `close` that ends what opens at `i` (strings inside are skipped whole).
fn skip_until(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != close {
        j = if chars[j] == '"' || chars[j] == '\'' {
            skip_string(chars, j)
        } else {
            j + 1
        };
    }
    j + 1
}

/// Exported names from `# TYPE` lines, with the histogram suffixes.
pub fn exported(text: &str) -> BTreeSet<String> {
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

/// Every name the API's `/metrics` and an agent's exposition export, scraped from real
/// servers on a `LocalStore` with one machine registered (so per-state families have rows).
pub async fn exported_by_servers() -> BTreeSet<String> {
    let api = local_api().await;
    let agent = start_agent(
        api.store.clone(),
        fast_config(),
        machine("m1", 1),
        Duration::from_secs(5),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = api.client.get("/metrics").await.unwrap();
    let mut names = exported(metrics.as_str().expect("/metrics is text"));
    names.extend(exported(&agent_metrics::render(&agent.snapshot.borrow())));
    agent.task.abort();
    names
}
