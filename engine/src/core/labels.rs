//! Free-form machine labels and the matching rules of the system Drover replaces:
//! a required list must be a subset of the machine's list, a required number is a minimum,
//! anything else must be equal. Negative requirements refuse machines that would match.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<String>),
}

// Numbers are checked finite when labels are validated, so equality by bits is total.
impl Eq for LabelValue {}

impl std::hash::Hash for LabelValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            LabelValue::Bool(b) => (0u8, b).hash(state),
            LabelValue::Number(n) => (1u8, n.to_bits()).hash(state),
            LabelValue::Text(t) => (2u8, t).hash(state),
            LabelValue::List(l) => (3u8, l).hash(state),
        }
    }
}

impl PartialOrd for LabelValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LabelValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(v: &LabelValue) -> u8 {
            match v {
                LabelValue::Bool(_) => 0,
                LabelValue::Number(_) => 1,
                LabelValue::Text(_) => 2,
                LabelValue::List(_) => 3,
            }
        }
        match (self, other) {
            (LabelValue::Bool(a), LabelValue::Bool(b)) => a.cmp(b),
            (LabelValue::Number(a), LabelValue::Number(b)) => a.total_cmp(b),
            (LabelValue::Text(a), LabelValue::Text(b)) => a.cmp(b),
            (LabelValue::List(a), LabelValue::List(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// Labels by name. A `BTreeMap`, so that canonical forms and outputs never depend on hashing.
pub type Labels = BTreeMap<String, LabelValue>;

/// Whether a machine offering `offered` meets one required label value.
pub fn label_met(required: &LabelValue, offered: Option<&LabelValue>) -> bool {
    match (required, offered) {
        (_, None) => false,
        (LabelValue::List(need), Some(LabelValue::List(have))) => {
            need.iter().all(|item| have.contains(item))
        }
        (LabelValue::Number(min), Some(LabelValue::Number(have))) => have >= min,
        (need, Some(have)) => need == have,
    }
}

/// Whether a machine with `machine` labels meets every requirement and none of the negatives.
pub fn labels_match(required: &Labels, refused: &Labels, machine: &Labels) -> bool {
    required
        .iter()
        .all(|(key, need)| label_met(need, machine.get(key)))
        && !refused
            .iter()
            .any(|(key, need)| label_met(need, machine.get(key)))
}

/// Puts label lists in canonical order (sorted, no repeats) so that equal requirements compare
/// equal. Returns the first key whose value is not a finite number, if any.
pub fn canonicalize(labels: &mut Labels) -> Result<(), String> {
    for (key, value) in labels.iter_mut() {
        match value {
            LabelValue::Number(n) if !n.is_finite() => return Err(key.clone()),
            LabelValue::List(items) => {
                items.sort();
                items.dedup();
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, LabelValue)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn list(items: &[&str]) -> LabelValue {
        LabelValue::List(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn lists_are_subsets_numbers_are_minimums_else_equal() {
        let machine = labels(&[
            ("features", list(&["fp8", "nvlink", "sm90"])),
            ("cuda", LabelValue::Number(12.4)),
            ("region", LabelValue::Text("eu".into())),
        ]);
        let none = Labels::new();
        assert!(labels_match(
            &labels(&[("features", list(&["sm90", "fp8"]))]),
            &none,
            &machine
        ));
        assert!(!labels_match(
            &labels(&[("features", list(&["sm100"]))]),
            &none,
            &machine
        ));
        assert!(labels_match(
            &labels(&[("cuda", LabelValue::Number(12.0))]),
            &none,
            &machine
        ));
        assert!(!labels_match(
            &labels(&[("cuda", LabelValue::Number(12.5))]),
            &none,
            &machine
        ));
        assert!(labels_match(
            &labels(&[("region", LabelValue::Text("eu".into()))]),
            &none,
            &machine
        ));
        assert!(!labels_match(
            &labels(&[("region", LabelValue::Text("us".into()))]),
            &none,
            &machine
        ));
        assert!(!labels_match(
            &labels(&[("absent", LabelValue::Bool(true))]),
            &none,
            &machine
        ));
    }

    #[test]
    fn negative_requirements_refuse_matching_machines() {
        let machine = labels(&[("region", LabelValue::Text("eu".into()))]);
        let refuse_eu = labels(&[("region", LabelValue::Text("eu".into()))]);
        let refuse_us = labels(&[("region", LabelValue::Text("us".into()))]);
        assert!(!labels_match(&Labels::new(), &refuse_eu, &machine));
        assert!(labels_match(&Labels::new(), &refuse_us, &machine));
    }

    #[test]
    fn canonical_form_sorts_lists_and_refuses_nan() {
        let mut a = labels(&[("f", list(&["b", "a", "b"]))]);
        canonicalize(&mut a).unwrap();
        assert_eq!(a, labels(&[("f", list(&["a", "b"]))]));
        let mut bad = labels(&[("n", LabelValue::Number(f64::NAN))]);
        assert_eq!(canonicalize(&mut bad), Err("n".to_string()));
    }
}
