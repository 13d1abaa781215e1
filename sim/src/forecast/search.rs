//! `--minimize KEY`: the smallest value of one axis at which every SLO is met, found by
//! bisection instead of a grid. It assumes the axis is monotone (more machines never make the
//! SLOs harder to meet), and needs about log2(values) + 2 points instead of every value. The
//! other axes still form a grid; every combination of theirs is searched at once, so each
//! round's points run together on every core.

use super::{vary, Forecast, ForecastError, ForecastReport, PointReport};
use std::collections::BTreeMap;

/// Where the search over one combination of the other axes stands: indices into the searched
/// axis's values, with `fails` failing and `meets` meeting every SLO.
#[derive(Clone, Copy, Debug)]
enum Bracket {
    /// Neither end is known yet.
    Start,
    Between {
        fails: usize,
        meets: usize,
    },
    Done,
}

/// Points the search will run at most, for a progress bar: (2 + ceil(log2(n))) per combination.
pub fn planned_points(forecast: &Forecast, key: &str) -> u64 {
    let Some(axis) = forecast.axes.iter().position(|a| a.key() == key) else {
        return 0;
    };
    let n = forecast.axes[axis].values.len() as f64;
    let combos: usize = (forecast
        .axes
        .iter()
        .map(|a| a.values.len())
        .product::<usize>())
        / forecast.axes[axis].values.len().max(1);
    combos as u64 * (2 + n.log2().ceil() as u64)
}

impl Forecast {
    /// Searches the axis named `key` (one of the `--vary` axes) by bisection.
    pub fn run_search(
        &self,
        key: &str,
        on_run: impl Fn() + Sync,
    ) -> Result<ForecastReport, ForecastError> {
        let searched = self
            .axes
            .iter()
            .position(|a| a.key() == key)
            .ok_or_else(|| {
                ForecastError::Spec(format!(
                    "--minimize {key}: give its range with --vary {key}=LO..HI as well"
                ))
            })?;
        let values = &self.axes[searched].values;
        let others: Vec<vary::Axis> = self
            .axes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != searched)
            .map(|(_, a)| a.clone())
            .collect();
        let combos = vary::grid(&others);
        let full = |combo: &[f64], index: usize| {
            let mut point = combo.to_vec();
            point.insert(searched, values[index]);
            point
        };
        let mut brackets = vec![Bracket::Start; combos.len()];
        let mut done: Vec<PointReport> = Vec::new();
        let mut first = None;
        loop {
            let asks: Vec<(usize, usize)> = brackets
                .iter()
                .enumerate()
                .flat_map(|(c, b)| probes(*b, values.len()).into_iter().map(move |i| (c, i)))
                .collect();
            if asks.is_empty() {
                break;
            }
            let grid: Vec<Vec<f64>> = asks.iter().map(|(c, i)| full(&combos[*c], *i)).collect();
            let scenarios = grid
                .iter()
                .map(|p| self.scenario_at(p))
                .collect::<Result<Vec<_>, _>>()?;
            first.get_or_insert_with(|| scenarios[0].clone());
            let points = self.evaluate(&grid, &scenarios, &on_run);
            let mut met: BTreeMap<(usize, usize), bool> = BTreeMap::new();
            for ((c, i), point) in asks.iter().zip(&points) {
                met.insert((*c, *i), point.meets_slo);
            }
            for (c, bracket) in brackets.iter_mut().enumerate() {
                *bracket = advance(*bracket, values.len(), |i| met[&(c, i)]);
            }
            done.extend(points);
        }
        let scenario = first.expect("every axis has a value, so the first round runs");
        Ok(self.report(&scenario, done, Some(key.to_string())))
    }
}

/// The indices to run next for one combination.
fn probes(bracket: Bracket, len: usize) -> Vec<usize> {
    match bracket {
        Bracket::Start if len == 1 => vec![0],
        Bracket::Start => vec![0, len - 1],
        Bracket::Between { fails, meets } => vec![(fails + meets) / 2],
        Bracket::Done => vec![],
    }
}

/// The bracket after its probes ran; `met(i)` tells whether index `i` met every SLO.
fn advance(bracket: Bracket, len: usize, met: impl Fn(usize) -> bool) -> Bracket {
    let narrowed = match bracket {
        Bracket::Start if met(0) || !met(len - 1) => return Bracket::Done,
        Bracket::Start => Bracket::Between {
            fails: 0,
            meets: len - 1,
        },
        Bracket::Between { fails, meets } => {
            let mid = (fails + meets) / 2;
            if met(mid) {
                Bracket::Between { fails, meets: mid }
            } else {
                Bracket::Between { fails: mid, meets }
            }
        }
        Bracket::Done => return Bracket::Done,
    };
    match narrowed {
        Bracket::Between { fails, meets } if meets - fails <= 1 => Bracket::Done,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the bracket logic alone against "meets from index `from` on".
    fn search(len: usize, from: usize) -> (Vec<usize>, Option<usize>) {
        let mut bracket = Bracket::Start;
        let mut probed = Vec::new();
        loop {
            let asks = probes(bracket, len);
            if asks.is_empty() {
                break;
            }
            probed.extend(&asks);
            bracket = advance(bracket, len, |i| i >= from);
        }
        let best = probed.iter().copied().filter(|i| *i >= from).min();
        (probed, best)
    }

    #[test]
    fn bisection_finds_the_first_value_that_meets() {
        for len in [1, 2, 3, 10, 100, 1000] {
            for from in [0, 1, len / 3, len - 1, len] {
                let (probed, best) = search(len, from);
                let expected = (from < len).then_some(from);
                assert_eq!(best, expected, "len {len} from {from}");
                let bound = 2 + (len as f64).log2().ceil() as usize;
                assert!(probed.len() <= bound, "len {len}: {} probes", probed.len());
            }
        }
    }
}
