//! The Prometheus text format, written by hand: families, samples and histograms.

use std::collections::BTreeSet;
use std::fmt::Write;

#[derive(Default)]
pub struct Exposition {
    out: String,
    declared: BTreeSet<String>,
}

impl Exposition {
    /// Declares a family once: `kind` is "counter", "gauge" or "histogram".
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        if self.declared.insert(name.to_string()) {
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// One histogram's samples (`labels` beside each bucket's `le`); declares the family.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
    ) -> &mut Self {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let with_le = |le: &str| -> Vec<(String, String)> {
            let mut all: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            all.push(("le".into(), le.into()));
            all
        };
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let owned = with_le(&number(*bound));
            let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (&**k, &**v)).collect();
            self.sample(&bucket, &pairs, cumulative as f64);
        }
        let owned = with_le("+Inf");
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (&**k, &**v)).collect();
        self.sample(&bucket, &pairs, histogram.count as f64);
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count as f64)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".into()
    } else if value > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// A fixed-bucket histogram of seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_once_and_cumulative_buckets() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut e = Exposition::default();
        e.histogram("wait_seconds", "Wait.", &[], &h);
        e.histogram("wait_seconds", "Wait.", &[("class", "3")], &h);
        e.family("up", "gauge", "Up.")
            .sample("up", &[("a", "x\"y")], 1.0);
        e.family("up", "gauge", "Up.")
            .sample("up", &[("a", "z")], 0.0);
        let text = e.finish();
        assert!(text.contains("wait_seconds_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(
            text.contains("wait_seconds_bucket{le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("wait_seconds_count 3\n"), "{text}");
        assert!(
            text.contains("wait_seconds_bucket{class=\"3\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("wait_seconds_sum{class=\"3\"} 55.5\n"));
        assert_eq!(text.matches("# TYPE wait_seconds histogram").count(), 1);
        assert!(text.contains("up{a=\"x\\\"y\"} 1\n"), "{text}");
        assert_eq!(text.matches("# TYPE up gauge").count(), 1);
    }
}
