//! Queueing theory the simulator's tests compare against, and the M/M/c scenario they run.
#![allow(dead_code)] // each test file uses its own part

/// Erlang C for M/M/c: (probability of waiting, mean wait in queue).
pub fn erlang_c(lambda: f64, mu: f64, c: u32) -> (f64, f64) {
    let a = lambda / mu;
    let rho = a / c as f64;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..c {
        term *= a / k as f64;
        sum += term;
    }
    let last = term * a / c as f64 / (1.0 - rho);
    let p_wait = last / (sum + last);
    (p_wait, p_wait / (c as f64 * mu - lambda))
}

/// The `q` quantile of the M/M/c wait: P(W > t) = C e^(-(c mu - lambda) t), so the wait is 0
/// up to 1 - C and ln(C / (1 - q)) / (c mu - lambda) beyond.
pub fn erlang_c_wait_quantile(lambda: f64, mu: f64, c: u32, q: f64) -> f64 {
    let (p_wait, _) = erlang_c(lambda, mu, c);
    if p_wait <= 1.0 - q {
        0.0
    } else {
        (p_wait / (1.0 - q)).ln() / (c as f64 * mu - lambda)
    }
}

/// An M/M/c scenario: `c` single-GPU machines at `cost` dollars an hour each, Poisson
/// arrivals at `lambda`, exponential service with mean 1 s, no latency, no faults.
pub fn mmc_text(c: u32, lambda: f64, duration_s: u64, seed: u64, cost: f64) -> String {
    format!(
        r#"
name = "mm{c}"
seed = {seed}
duration = "{duration_s}s"
warmup = "{warmup}s"
[redis]
latency = "0s"
persistence = "aof-always"
[[pool]]
name = "gpu"
machines = {c}
gpus = 1
cost_per_hour = {cost:?}
[[workload]]
name = "mm"
arrivals = {{ dist = "poisson", rate_per_s = {lambda:?} }}
service = {{ dist = "exponential", mean = "1s" }}
"#,
        warmup = duration_s / 50
    )
}
