//! Service-level objectives: a bound on one figure, such as `wait_p99<=30s`,
//! `dead_rate<=0.001` or `utilization>=0.6`, judged at the worse end of the figure's 95%
//! interval across seeds.

use super::figures::{self, Unit};
use super::stats::Estimate;
use drover_engine::core::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AtMost,
    Below,
    AtLeast,
    Above,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::AtMost => "<=",
            Op::Below => "<",
            Op::AtLeast => ">=",
            Op::Above => ">",
        }
    }

    /// An upper bound (smaller is better), or a lower bound.
    fn is_upper(self) -> bool {
        matches!(self, Op::AtMost | Op::Below)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// As the user wrote it.
    pub text: String,
    pub figure: &'static str,
    pub op: Op,
    /// In the figure's unit: seconds, dollars or a plain number.
    pub bound: f64,
}

/// An SLO that cannot be read; names the expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--slo {expression:?}: {message}")]
pub struct SloError {
    pub expression: String,
    pub message: String,
}

/// How one point fares against one SLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub met: bool,
    /// The worse end of the interval, the value judged (`None`: the runs had no such figure).
    pub judged: Option<f64>,
    /// How far inside the bound that is, relative to the bound: negative when it fails.
    pub headroom: f64,
}

impl Slo {
    pub fn parse(text: &str) -> Result<Slo, SloError> {
        let err = |message: String| SloError {
            expression: text.to_string(),
            message,
        };
        let (at, op) = [
            ("<=", Op::AtMost),
            (">=", Op::AtLeast),
            ("<", Op::Below),
            (">", Op::Above),
        ]
        .iter()
        .find_map(|(s, op)| text.find(s).map(|i| ((i, s.len()), *op)))
        .ok_or_else(|| err("expected FIGURE<=BOUND or FIGURE>=BOUND, e.g. wait_p99<=30s".into()))?;
        let name = text[..at.0].trim();
        let bound_text = text[at.0 + at.1..].trim();
        let (figure, unit, _) = figures::FIGURES
            .iter()
            .find(|f| f.0 == name)
            .ok_or_else(|| {
                err(format!(
                    "unknown figure {name:?}; known: {}",
                    figures::names()
                ))
            })?;
        let bound = parse_bound(bound_text, *unit).map_err(err)?;
        Ok(Slo {
            text: format!("{figure}{}{bound_text}", op.text()),
            figure,
            op,
            bound,
        })
    }

    pub fn judge(&self, estimate: &Estimate) -> Verdict {
        let judged = if self.op.is_upper() {
            estimate.high()
        } else {
            estimate.low()
        };
        let Some(value) = judged else {
            return Verdict {
                met: false,
                judged: None,
                headroom: f64::NEG_INFINITY,
            };
        };
        let met = match self.op {
            Op::AtMost => value <= self.bound,
            Op::Below => value < self.bound,
            Op::AtLeast => value >= self.bound,
            Op::Above => value > self.bound,
        };
        let gap = if self.op.is_upper() {
            self.bound - value
        } else {
            value - self.bound
        };
        Verdict {
            met,
            judged: Some(value),
            headroom: gap / self.bound.abs().max(1e-12),
        }
    }
}

fn parse_bound(text: &str, unit: Unit) -> Result<f64, String> {
    let number = |t: &str| {
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("the bound {text:?} is not a number"))
    };
    match unit {
        Unit::Seconds if text.ends_with(|c: char| c.is_ascii_alphabetic()) => Span::parse(text)
            .map(Span::as_secs_f64)
            .map_err(|e| format!("the bound: {e}")),
        Unit::Seconds => number(text),
        Unit::Dollars => number(text.strip_prefix('$').unwrap_or(text)),
        Unit::Ratio => match text.strip_suffix('%') {
            Some(percent) => number(percent).map(|p| p / 100.0),
            None => number(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_forms() {
        let slo = Slo::parse("wait_p99<=30s").unwrap();
        assert_eq!(
            (slo.figure, slo.op, slo.bound),
            ("wait_p99", Op::AtMost, 30.0)
        );
        assert_eq!(Slo::parse("jct_p50 <= 2m").unwrap().bound, 120.0);
        assert_eq!(Slo::parse("dead_rate<=0.001").unwrap().bound, 0.001);
        let util = Slo::parse("utilization>=60%").unwrap();
        assert_eq!((util.op, util.bound), (Op::AtLeast, 0.6));
        assert_eq!(Slo::parse("cost_per_job<=$0.02").unwrap().bound, 0.02);
        assert_eq!(Slo::parse("wait_mean<1.5").unwrap().op, Op::Below);
    }

    #[test]
    fn errors_name_the_expression() {
        for (text, says) in [
            ("wait_p99=30s", "expected FIGURE<=BOUND"),
            ("latency<=30s", "unknown figure \"latency\""),
            ("wait_p99<=30 minutes", "unknown unit"),
            ("dead_rate<=lots", "not a number"),
        ] {
            let error = Slo::parse(text).unwrap_err().to_string();
            assert!(error.contains(text) && error.contains(says), "{error}");
        }
    }

    #[test]
    fn judged_at_the_worse_end_of_the_interval() {
        let slo = Slo::parse("wait_p99<=10s").unwrap();
        let inside = Estimate::of(&[8.0, 9.0, 10.0]); // mean 9, upper end about 11.5
        assert!(!slo.judge(&inside).met);
        assert!(slo.judge(&Estimate::of(&[8.0, 8.1, 8.2])).met);
        let floor = Slo::parse("utilization>=0.5").unwrap();
        let verdict = floor.judge(&Estimate::of(&[0.58, 0.6, 0.62]));
        assert!(verdict.met && verdict.judged.unwrap() < 0.6);
        assert!(!slo.judge(&Estimate::default()).met);
    }
}
