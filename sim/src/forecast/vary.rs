//! `--vary KEY=LO..HI[:STEP]` (or `KEY=A,B,C`): one axis of a forecast, the values one numeric
//! scenario field takes.

use crate::scenario::{FieldPath, NumberKind, Override};
use drover_engine::core::Span;

/// Most values one axis may take.
pub const MAX_VALUES: usize = 1000;
/// Values a range of fractions or durations takes when no step is given.
const DEFAULT_POINTS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub path: FieldPath,
    /// Ascending; durations in seconds.
    pub values: Vec<f64>,
}

/// An axis that cannot be read; names the argument.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--vary {argument:?}: {message}")]
pub struct VaryError {
    pub argument: String,
    pub message: String,
}

impl Axis {
    pub fn parse(argument: &str) -> Result<Axis, VaryError> {
        let err = |message: String| VaryError {
            argument: argument.to_string(),
            message,
        };
        let (key, range) = argument
            .split_once('=')
            .ok_or_else(|| err("expected KEY=LO..HI[:STEP] or KEY=A,B,C".into()))?;
        let path = FieldPath::parse(key.trim()).map_err(|e| err(e.to_string()))?;
        let read = |t: &str| value(t.trim(), path.kind).map_err(&err);
        let mut values = match range.split_once("..") {
            Some((lo, rest)) => {
                let (hi, step) = match rest.split_once(':') {
                    Some((hi, step)) => (hi, Some(read(step)?)),
                    None => (rest, None),
                };
                steps(read(lo)?, read(hi)?, step, path.kind).map_err(&err)?
            }
            None => range
                .split(',')
                .map(read)
                .collect::<Result<Vec<f64>, _>>()?,
        };
        values.sort_by(f64::total_cmp);
        values.dedup();
        if let Some(bad) = values.iter().find(|v| path.literal(**v).is_none()) {
            let what = match path.kind {
                NumberKind::Integer => "whole numbers",
                NumberKind::Float => "finite numbers",
                NumberKind::Duration => "durations of 0s or more",
            };
            return Err(err(format!("{} takes {what}, not {bad}", path.text)));
        }
        Ok(Axis { path, values })
    }

    pub fn key(&self) -> &str {
        &self.path.text
    }

    /// The override that sets this axis's field to `value`.
    pub fn at(&self, value: f64) -> Override {
        Override {
            path: self.path.clone(),
            literal: self
                .path
                .literal(value)
                .expect("values are checked when read"),
        }
    }
}

/// A number, or for a duration a duration string ("90s", "2h") or bare seconds.
fn value(text: &str, kind: NumberKind) -> Result<f64, String> {
    if kind == NumberKind::Duration && text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Span::parse(text)
            .map(Span::as_secs_f64)
            .map_err(|e| e.to_string());
    }
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number"))
}

fn steps(lo: f64, hi: f64, step: Option<f64>, kind: NumberKind) -> Result<Vec<f64>, String> {
    if lo > hi {
        return Err(format!("the range is empty ({lo} is above {hi})"));
    }
    let step = match step {
        Some(s) if s > 0.0 => s,
        Some(s) => return Err(format!("the step must be above 0, found {s}")),
        None if kind == NumberKind::Integer => 1.0,
        None => ((hi - lo) / (DEFAULT_POINTS - 1) as f64).max(f64::MIN_POSITIVE),
    };
    let count = ((hi - lo) / step + 1e-9).floor() + 1.0;
    if count > MAX_VALUES as f64 {
        return Err(format!("{count} values; at most {MAX_VALUES} per axis"));
    }
    // Each value from lo, not by repeated addition, so 0.1 steps do not drift.
    Ok((0..count as usize)
        .map(|k| lo + k as f64 * step)
        .map(|v| if (v - hi).abs() < step * 1e-9 { hi } else { v })
        .collect())
}

/// Every combination of the axes' values, the first axis varying slowest.
pub fn grid(axes: &[Axis]) -> Vec<Vec<f64>> {
    let mut points = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(*v);
                    q
                })
            })
            .collect();
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_steps_and_lists() {
        let machines = Axis::parse("pool.gpu.machines=8..12").unwrap();
        assert_eq!(machines.values, [8.0, 9.0, 10.0, 11.0, 12.0]);
        let every_other = Axis::parse("pool.gpu.machines=8..13:2").unwrap();
        assert_eq!(every_other.values, [8.0, 10.0, 12.0]);
        let rate = Axis::parse("workload.w.arrivals.rate_per_s=1..2:0.1").unwrap();
        assert_eq!(rate.values.len(), 11);
        assert_eq!(*rate.values.last().unwrap(), 2.0);
        let ttl = Axis::parse("engine.lease_ttl=10s..1m:10s").unwrap();
        assert_eq!(ttl.values, [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        let lifetime = Axis::parse("pool.spot.lifetime.mean=1h..3h").unwrap();
        assert_eq!(lifetime.values, [3600.0, 5400.0, 7200.0, 9000.0, 10800.0]);
        let list = Axis::parse("pool.gpu.cost_per_hour=3,1,2").unwrap();
        assert_eq!(list.values, [1.0, 2.0, 3.0]);
        assert_eq!(list.at(2.0).literal, "2.0");
    }

    #[test]
    fn bad_axes_name_the_argument_and_the_fault() {
        for (argument, says) in [
            ("pool.gpu.machines", "expected KEY=LO..HI"),
            ("pool.gpu.machinez=1..2", "no field `machinez`"),
            ("pool.gpu.gpu_model=1..2", "not numeric"),
            ("pool.gpu.machines=5..2", "range is empty"),
            ("pool.gpu.machines=1..4:0", "step must be above 0"),
            ("pool.gpu.machines=1..2:0.5", "takes whole numbers"),
            ("pool.gpu.machines=a..b", "is not a number"),
            ("engine.lease_ttl=10 s..20s", "unknown unit"),
            ("pool.gpu.machines=1..100000", "at most 1000"),
        ] {
            let error = Axis::parse(argument).unwrap_err().to_string();
            assert!(error.contains(argument) && error.contains(says), "{error}");
        }
    }

    #[test]
    fn the_grid_is_every_combination() {
        let axes = [
            Axis::parse("pool.a.machines=1..2").unwrap(),
            Axis::parse("pool.b.machines=5,6,7").unwrap(),
        ];
        let grid = grid(&axes);
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[0], [1.0, 5.0]);
        assert_eq!(grid[5], [2.0, 7.0]);
        assert_eq!(super::grid(&[]), [Vec::<f64>::new()]);
    }
}
