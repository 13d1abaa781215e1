//! A figure's mean across seeds and the half-width of its 95% confidence interval, from
//! Student's t distribution (the seeds are few, so the normal's 1.96 would be too narrow).

use serde::Serialize;

/// Mean and 95% confidence half-width over the seeds that had the figure. `ci95` is `None`
/// for fewer than two seeds (no interval), and `mean` is `None` for none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: Option<f64>,
    pub ci95: Option<f64>,
    #[serde(skip)]
    pub seeds: usize,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Estimate {
        let n = values.len();
        if n == 0 {
            return Estimate::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = (n > 1).then(|| {
            let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            let sd = (squares / (n - 1) as f64).sqrt();
            t_975(n - 1) * sd / (n as f64).sqrt()
        });
        Estimate {
            mean: Some(mean),
            ci95,
            seeds: n,
        }
    }

    /// The ends of the interval (both the mean when there is no interval).
    pub fn low(&self) -> Option<f64> {
        self.mean.map(|m| m - self.ci95.unwrap_or(0.0))
    }

    pub fn high(&self) -> Option<f64> {
        self.mean.map(|m| m + self.ci95.unwrap_or(0.0))
    }
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom: exact to three decimals
/// up to 30, then the Cornish-Fisher expansion about the normal's 1.96.
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            let z: f64 = 1.959_964;
            let n = df as f64;
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_uses_students_t() {
        // Three seeds: mean 2, sd 1, half-width 4.303 / sqrt(3).
        let e = Estimate::of(&[1.0, 2.0, 3.0]);
        assert_eq!(e.mean, Some(2.0));
        assert!((e.ci95.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(e.high(), Some(2.0 + e.ci95.unwrap()));
    }

    #[test]
    fn one_seed_has_no_interval_and_none_has_no_mean() {
        let one = Estimate::of(&[5.0]);
        assert_eq!(
            (one.mean, one.ci95, one.low()),
            (Some(5.0), None, Some(5.0))
        );
        assert_eq!(Estimate::of(&[]).mean, None);
    }

    #[test]
    fn large_samples_approach_the_normal() {
        assert!((t_975(40) - 2.021).abs() < 0.002, "{}", t_975(40));
        assert!((t_975(120) - 1.980).abs() < 0.002, "{}", t_975(120));
        assert!((t_975(30) - 2.042).abs() < 1e-9);
    }
}
