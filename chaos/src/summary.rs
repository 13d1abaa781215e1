//! What a run reports: the simulator's field names where they mean the same (`jobs` by
//! terminal state with `lost`, `wait_s`, `jct_s`, `violations`, `faults`, `fault_log`), plus
//! `redistribution_s` and what only a real run has (agents started, resubmissions). Times are
//! scenario seconds (real seconds times `time_scale`), except `wall_s`.

use crate::faults::Stage;
use crate::judge::{self, Figures};
use drover_engine::check::Checker;
use drover_sim::metrics::Summary;
use drover_sim::report::{tally_faults, FaultTally, JobCounts};
use drover_sim::scenario::Scenario;
use drover_sim::world::FaultRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

#[derive(Clone, Debug, Serialize)]
pub struct Redistribution {
    pub count: u64,
    pub p50: f64,
    pub max: f64,
    /// Jobs a killed machine held that were never leased again by the end.
    pub never: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChaosStats {
    pub agents_started: u64,
    pub agents_killed: u64,
    pub redis_restarts: u64,
    /// Jobs resubmitted by key after a restart that may have lost writes.
    pub resubmitted: u64,
    /// Journal entries a lossy restart took back (the history dropped them too).
    pub journal_rolled_back: u64,
    pub journal_entries: u64,
    pub history_events: u64,
    /// Submissions the API refused as invalid.
    pub submissions_refused: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub chaos: Option<f64>,
    pub time_scale: f64,
    /// Real seconds from the first submission to the end.
    pub wall_s: f64,
    pub warmup_s: f64,
    pub jobs: JobCounts,
    pub measured: u64,
    pub warmup_excluded: u64,
    pub wait_s: Summary,
    pub jct_s: Summary,
    pub redistribution_s: Redistribution,
    /// The engine's own overheads, in real seconds (overheads.rs).
    pub overheads: crate::overheads::Overheads,
    pub redis_persistence: &'static str,
    pub faults: BTreeMap<&'static str, FaultTally>,
    pub fault_log: Vec<FaultRecord>,
    /// Random faults (`--chaos`) of kinds the harness cannot play, skipped.
    pub faults_skipped: u32,
    pub stats: ChaosStats,
    pub violation_count: u64,
    pub violations: Vec<String>,
    /// Where the logs, Redis files and summary were kept (`--report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_dir: Option<String>,
}

/// What `Report::new` gathers from.
pub struct Parts<'a> {
    pub scenario: &'a Scenario,
    pub seed: u64,
    pub chaos: Option<f64>,
    pub scale: f64,
    pub wall_s: f64,
    pub figures: Figures,
    pub checker: &'a Checker,
    pub redistribution: Vec<f64>,
    pub never_redistributed: usize,
    pub fault_log: Vec<FaultRecord>,
    pub faults_skipped: u32,
    pub refused: u64,
    pub stage: &'a Stage,
    pub journal_entries: u64,
    pub history_events: u64,
    pub overheads: crate::overheads::Overheads,
}

impl Report {
    pub fn new(p: Parts<'_>) -> Report {
        let redistribution = judge::summary(p.redistribution.clone());
        let stage = p.stage;
        let kills = stage.kills.lock().map(|k| k.len()).unwrap_or(0) as u64;
        Report {
            scenario: p.scenario.name.clone(),
            seed: p.seed,
            chaos: p.chaos,
            time_scale: p.scale,
            wall_s: p.wall_s,
            warmup_s: p.scenario.warmup.as_secs_f64(),
            jobs: p.figures.jobs,
            measured: p.figures.measured,
            warmup_excluded: p.figures.warmup_excluded,
            wait_s: p.figures.wait_s,
            jct_s: p.figures.jct_s,
            redistribution_s: Redistribution {
                count: p.redistribution.len() as u64,
                p50: redistribution.p50,
                max: redistribution.max,
                never: p.never_redistributed as u64,
            },
            overheads: p.overheads,
            redis_persistence: p.scenario.redis.persistence.as_str(),
            faults: tally_faults(&p.fault_log),
            fault_log: p.fault_log,
            faults_skipped: p.faults_skipped,
            stats: ChaosStats {
                agents_started: stage.agents_started.load(Ordering::Relaxed),
                agents_killed: kills,
                redis_restarts: stage.redis_restarts.load(Ordering::Relaxed),
                resubmitted: stage.resubmitted.load(Ordering::Relaxed),
                journal_rolled_back: stage.rolled_back.load(Ordering::Relaxed),
                journal_entries: p.journal_entries,
                history_events: p.history_events,
                submissions_refused: p.refused,
            },
            violation_count: p.checker.violation_count(),
            violations: p
                .checker
                .violations()
                .iter()
                .map(|v| v.to_string())
                .collect(),
            report_dir: None,
        }
    }

    /// Whether the run passed: no violation (no job lost among them).
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    /// The summary for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let j = &self.jobs;
        let chaos = self
            .chaos
            .map(|c| format!(" chaos {c}/h"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "scenario {} seed {}{chaos}, time scale {}x, {:.1}s real",
            self.scenario, self.seed, self.time_scale, self.wall_s
        );
        let _ = writeln!(
            out,
            "jobs: {} submitted, {} succeeded, {} dead, {} timed out, {} unworkable, {} cancelled, {} in flight, {} lost",
            j.submitted, j.succeeded, j.dead, j.timed_out, j.unworkable, j.cancelled, j.in_flight, j.lost
        );
        let line = |name: &str, s: &Summary| {
            format!(
                "{name}: mean {:.3}s p50 {:.3}s p90 {:.3}s p99 {:.3}s max {:.3}s",
                s.mean, s.p50, s.p90, s.p99, s.max
            )
        };
        let _ = writeln!(
            out,
            "{} (over {} jobs; warm-up left out {})",
            line("wait", &self.wait_s),
            self.measured,
            self.warmup_excluded
        );
        let _ = writeln!(out, "{}", line("completion", &self.jct_s));
        let r = &self.redistribution_s;
        let _ = writeln!(
            out,
            "redistribution: {} jobs of killed machines leased again, p50 {:.2}s max {:.2}s, {} never",
            r.count, r.p50, r.max, r.never
        );
        let o = &self.overheads;
        let _ = writeln!(
            out,
            "engine overheads (real, p50/p99): submission to lease on a free GPU {:.1}/{:.1} ms, \
             lease to outcome less the job {:.1}/{:.1} ms, outcome to the GPU's next lease \
             {:.1}/{:.1} ms",
            o.submit_to_lease_idle_s.p50 * 1e3,
            o.submit_to_lease_idle_s.p99 * 1e3,
            o.end_to_outcome_s.p50 * 1e3,
            o.end_to_outcome_s.p99 * 1e3,
            o.outcome_to_next_lease_s.p50 * 1e3,
            o.outcome_to_next_lease_s.p99 * 1e3
        );
        let s = &self.stats;
        let _ = writeln!(
            out,
            "processes: {} agents started, {} killed; {} Redis restarts ({}), {} jobs resubmitted, {} journal entries rolled back",
            s.agents_started, s.agents_killed, s.redis_restarts, self.redis_persistence, s.resubmitted, s.journal_rolled_back
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(kind, t)| format!("{kind} x{} ({} machines)", t.count, t.machines))
            .collect();
        let _ = writeln!(
            out,
            "faults: {}{}",
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            },
            if self.faults_skipped > 0 {
                format!(
                    "; {} random faults of kinds not played were skipped",
                    self.faults_skipped
                )
            } else {
                String::new()
            }
        );
        if self.passed() {
            let _ = writeln!(
                out,
                "invariants: all held ({} history events)",
                s.history_events
            );
        } else {
            let _ = writeln!(out, "invariants: {} VIOLATIONS", self.violation_count);
            for v in &self.violations {
                let _ = writeln!(out, "  {v}");
            }
        }
        out
    }
}
