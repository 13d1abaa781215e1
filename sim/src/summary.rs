//! The text summary of a run, for people at a terminal: what was simulated, what became of
//! the jobs (overall, per workload), how long they waited, what the fleet cost (overall, per
//! pool), and the story of each fault: what it hit and how the engine answered.

use crate::metrics::Summary;
use crate::report::RunReport;

/// Appends one line to the summary (a `String` takes it: nothing can fail).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Faults listed one per line; beyond this, the rest are only counted by kind.
const FAULTS_LISTED: usize = 12;

impl RunReport {
    /// A summary for people at a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_latency(&mut out);
        self.write_fleet(&mut out);
        self.write_workloads(&mut out);
        self.write_pools(&mut out);
        self.write_faults(&mut out);
        self.write_story(&mut out);
        self.write_invariants(&mut out);
        out
    }

    fn write_header(&self, out: &mut String) {
        let j = &self.jobs;
        let chaos = self
            .chaos
            .map(|c| format!(" chaos {c}/h"))
            .unwrap_or_default();
        say!(out, "scenario {} seed {}{chaos}", self.scenario, self.seed);
        say!(out, "digest   {}", self.digest);
        say!(
            out,
            "events   {} in {:.2}s wall ({:.0} events/s, {:.0} jobs/s), {:.0}s simulated",
            self.events,
            self.wall_s,
            self.events_per_sec,
            self.jobs_per_sec,
            self.simulated_s
        );
        say!(
            out,
            "jobs     {} submitted: {} succeeded, {} dead, {} timed out, {} unworkable, \
             {} cancelled, {} in flight, {} lost",
            j.submitted,
            j.succeeded,
            j.dead,
            j.timed_out,
            j.unworkable,
            j.cancelled,
            j.in_flight,
            j.lost
        );
        if !j.in_flight_states.is_empty() {
            say!(
                out,
                "         in flight at the end: {:?}",
                j.in_flight_states
            );
        }
    }

    fn write_latency(&self, out: &mut String) {
        say!(out, "wait     {}", five(&self.wait_s));
        say!(out, "jct      {}", five(&self.jct_s));
        let measured: u64 = self.workloads.iter().map(|w| w.measured).sum();
        let excluded: u64 = self.workloads.iter().map(|w| w.warmup_excluded).sum();
        let over = format!(
            "over the {measured} succeeded jobs submitted after the {} warm-up ({excluded} \
             finished jobs submitted during it are left out); wait: submission to the start of \
             the attempt that succeeded; jct: submission to its success",
            clock(self.warmup_s)
        );
        say_wrapped(out, "", &over);
        let p_wait = format!(
            "{:.3}: the share of those jobs that waited longer than a dispatch round trip ({}), \
             i.e. found no free machine and queued (Erlang C's probability of waiting)",
            self.p_wait,
            short_secs(self.dispatch_s)
        );
        say_wrapped(out, "P(wait)", &p_wait);
    }

    fn write_fleet(&self, out: &mut String) {
        let cost = self
            .cost_per_job
            .map_or("-".to_string(), |c| format!("${c:.4}"));
        let fleet = format!(
            "utilisation {:.1}% of GPU time; spend ${:.2}; cost per succeeded job {cost}; \
             wasted {:.0} GPU-s",
            self.utilization * 100.0,
            self.spend,
            self.wasted_gpu_s
        );
        say_wrapped(out, "fleet", &fleet);
    }

    fn write_workloads(&self, out: &mut String) {
        say!(
            out,
            "{:<18}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "workload",
            "submitted",
            "succeeded",
            "dead",
            "timed out",
            "unworkable",
            "cancelled",
            "in flight"
        );
        for w in &self.workloads {
            say!(
                out,
                "  {:<16}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
                w.name,
                w.submitted,
                w.succeeded,
                w.dead,
                w.timed_out,
                w.unworkable,
                w.cancelled,
                w.in_flight
            );
        }
        say!(
            out,
            "{:<18}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "latency",
            "measured",
            "warm-up",
            "wait p50",
            "wait p99",
            "jct p50",
            "jct p99"
        );
        for w in &self.workloads {
            let figure = |secs: f64| match w.measured {
                0 => "-".to_string(),
                _ => short_secs(secs),
            };
            say!(
                out,
                "  {:<16}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}",
                w.name,
                w.measured,
                w.warmup_excluded,
                figure(w.wait_s.p50),
                figure(w.wait_s.p99),
                figure(w.jct_s.p50),
                figure(w.jct_s.p99)
            );
        }
    }

    fn write_pools(&self, out: &mut String) {
        say!(
            out,
            "{:<18}{:>9}{:>11}{:>9}{:>9}{:>9}{:>9}{:>13}{:>10}",
            "pool",
            "machines",
            "GPUs each",
            "booted",
            "lost",
            "drained",
            "GPU-h",
            "utilisation",
            "spend"
        );
        for p in &self.pools {
            say!(
                out,
                "  {:<16}{:>9}{:>11}{:>9}{:>9}{:>9}{:>9.1}{:>12.1}%{:>10}",
                p.name,
                p.machines,
                p.gpus_per_machine,
                p.booted,
                p.lost,
                p.drained,
                p.gpu_hours,
                p.utilization * 100.0,
                format!("${:.2}", p.spend)
            );
        }
    }

    fn write_faults(&self, out: &mut String) {
        if self.fault_log.is_empty() {
            say!(out, "faults   none");
            return;
        }
        let kinds: Vec<String> = self
            .faults
            .iter()
            .map(|(kind, t)| format!("{} {kind}", t.count))
            .collect();
        say!(
            out,
            "faults   {} in all: {}",
            self.fault_log.len(),
            kinds.join(", ")
        );
        for fault in self.fault_log.iter().take(FAULTS_LISTED) {
            let target = match fault.kind {
                "redis_restart" => "Redis down".to_string(),
                _ => format!(
                    "{}: {} of {} machines",
                    fault.pool.as_deref().unwrap_or("every pool"),
                    fault.machines,
                    fault.of
                ),
            };
            let lasting = match fault.kind {
                "kill" => String::new(),
                "redis_restart" => format!(
                    " for {}, persistence {}",
                    clock(fault.duration_s),
                    self.redis_persistence
                ),
                _ => format!(" for {}", clock(fault.duration_s)),
            };
            let detail = fault
                .detail
                .as_ref()
                .map(|d| format!(", {d}"))
                .unwrap_or_default();
            say!(
                out,
                "  {:>9}  {:<14}{target}{lasting}{detail}",
                clock(fault.at_s),
                fault.kind
            );
        }
        if self.fault_log.len() > FAULTS_LISTED {
            say!(
                out,
                "  ... and {} more (counted by kind above; every one is in --json's fault_log)",
                self.fault_log.len() - FAULTS_LISTED
            );
        }
    }

    /// What happened to the machines and how the engine answered, one line per part of the
    /// story that has something to tell.
    fn write_story(&self, out: &mut String) {
        let s = &self.stats;
        let killed = self.machines_hit("kill");
        let mut machines = Clauses::default();
        machines.always(format!("{} booted", s.machines_booted));
        machines.always(match s.machines_lost {
            0 => "0 vanished".to_string(),
            lost => format!(
                "{lost} vanished ({killed} killed by faults, {} at the end of their lifetime)",
                lost.saturating_sub(killed)
            ),
        });
        machines.always(format!("{} drained themselves", s.machines_drained));
        let cut_off = self.machines_hit("partition");
        machines.when(cut_off, "cut off from Redis by partitions");
        say_wrapped(out, "machines", &machines.join());
        if s.machines_lost > 0 {
            let text = format!(
                "the jobs of vanished machines were leased again after {}",
                three(&self.redistribution_s)
            );
            say_wrapped(out, "", &text);
        }
        self.write_store_story(out);
        self.write_network_story(out);
        self.write_redis_story(out);
        self.write_resource_story(out);
    }

    fn write_store_story(&self, out: &mut String) {
        let s = &self.stats;
        let mut store = Clauses::default();
        store.when(
            s.machines_declared_lost,
            "machines declared lost (heartbeat expired: vanished or cut off)",
        );
        store.when(
            s.machines_registered_again,
            "registrations again (machines back after being declared lost, or after a Redis \
             restart forgot them)",
        );
        say_wrapped(out, "store", &store.join());
        if s.leases_revoked > 0 {
            let mut leases = Clauses::default();
            leases.always(format!(
                "{} revoked by the store (expired, machine lost, over time); the requeued jobs \
                 were leased again after {}",
                s.leases_revoked,
                three(&self.revoked_to_leased_s)
            ));
            leases.when(
                s.attempts_stopped_revoked,
                "attempts stopped by agents told their lease was revoked",
            );
            say_wrapped(out, "leases", &leases.join());
        }
        if s.stale_outcomes > 0 || self.machines_hit("partition") > 0 {
            let text = format!(
                "{} outcomes refused as stale: sent under a lease token that was no longer the \
                 job's, so the newer attempt's outcome stands",
                s.stale_outcomes
            );
            say_wrapped(out, "fencing", &text);
        }
    }

    fn write_network_story(&self, out: &mut String) {
        let s = &self.stats;
        let mut network = Clauses::default();
        network.when(
            s.requests_dropped,
            "requests dropped (their sender cut off, or Redis down)",
        );
        network.when(s.replies_lost, "replies lost");
        if s.breaker_opened > 0 {
            network.always(format!(
                "circuit breakers opened {} times on {} machines",
                s.breaker_opened, s.machines_breaker_opened
            ));
        }
        network.when(
            self.machines_hit("latency"),
            "machines slowed by latency spikes",
        );
        say_wrapped(out, "network", &network.join());
    }

    fn write_redis_story(&self, out: &mut String) {
        let s = &self.stats;
        let mut redis = Clauses::default();
        if s.redis_restarts > 0 {
            redis.always(format!(
                "restarted {} times (persistence {}): {} accepted jobs it lost, {} \
                 resubmitted by idempotency key",
                s.redis_restarts, self.redis_persistence, s.jobs_dropped_by_redis, s.resubmitted
            ));
        }
        redis.when(s.ghost_attempts, "attempts ran for jobs a restart forgot");
        redis.when(
            s.submissions_refused,
            "submissions refused (Redis full) and retried by the producers",
        );
        redis.when(
            s.store_faults,
            "requests failed by the store and dropped by agents (MemStore never fails so: a \
             bug in the simulated world)",
        );
        say_wrapped(out, "redis", &redis.join());
    }

    fn write_resource_story(&self, out: &mut String) {
        let s = &self.stats;
        let mut disks = Clauses::default();
        disks.when(
            self.machines_hit("disk_full"),
            "machines' disks filled by faults",
        );
        disks.when(s.evictions, "cached models evicted to make room");
        say_wrapped(out, "disks", &disks.join());
        let mut gpus = Clauses::default();
        gpus.when(
            self.machines_hit("gpu_oom"),
            "machines with GPU memory held by a foreign process",
        );
        gpus.when(
            s.gpu_ooms,
            "attempts ran out of GPU memory (retried only where they fit)",
        );
        say_wrapped(out, "gpus", &gpus.join());
    }

    fn write_invariants(&self, out: &mut String) {
        if self.violation_count == 0 {
            say!(out, "invariants: all held");
            return;
        }
        say!(out, "invariants: {} violation(s)", self.violation_count);
        for v in &self.violations {
            say!(out, "  {v}");
        }
    }
}

/// The parts of one line of the story; counts of zero are left out.
#[derive(Default)]
struct Clauses(Vec<String>);

impl Clauses {
    fn always(&mut self, clause: String) {
        self.0.push(clause);
    }

    fn when(&mut self, count: u64, what: &str) {
        if count > 0 {
            self.0.push(format!("{count} {what}"));
        }
    }

    fn join(&self) -> String {
        self.0.join("; ")
    }
}

/// Width the summary's prose wraps at.
const WIDTH: usize = 100;

/// Writes `text` after a 9-column `label`, wrapped at `WIDTH` with its continuation lines
/// indented under the text; nothing when `text` is empty.
fn say_wrapped(out: &mut String, label: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    let mut line = format!("{label:<8} ");
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            say!(out, "{line}");
            line = " ".repeat(9);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    say!(out, "{line}");
}

/// mean, p50, p90, p99 and max, in seconds.
fn five(s: &Summary) -> String {
    format!(
        "mean {:.3}s  p50 {:.3}s  p90 {:.3}s  p99 {:.3}s  max {:.3}s",
        s.mean, s.p50, s.p90, s.p99, s.max
    )
}

/// p50, p99 and max, in seconds.
fn three(s: &Summary) -> String {
    format!("p50 {:.1}s p99 {:.1}s max {:.1}s", s.p50, s.p99, s.max)
}

/// Seconds with three decimals, or milliseconds below one.
pub fn short_secs(secs: f64) -> String {
    if secs > 0.0 && secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.3}s")
    }
}

/// A time of the run or a length of it, as 1h05m00s, 5m00s or 12.5s.
pub fn clock(secs: f64) -> String {
    let whole = secs.round() as u64;
    if whole >= 3600 {
        format!("{}h{:02}m{:02}s", whole / 3600, whole / 60 % 60, whole % 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{secs:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_as_hours_minutes_and_seconds() {
        assert_eq!(clock(3600.0), "1h00m00s");
        assert_eq!(clock(3905.0), "1h05m05s");
        assert_eq!(clock(300.0), "5m00s");
        assert_eq!(clock(12.5), "12.5s");
        assert_eq!(clock(0.0), "0.0s");
    }

    #[test]
    fn short_secs_switches_to_milliseconds_below_a_second() {
        assert_eq!(short_secs(0.002), "2.0ms");
        assert_eq!(short_secs(0.0), "0.000s");
        assert_eq!(short_secs(5.7794), "5.779s");
    }
}
