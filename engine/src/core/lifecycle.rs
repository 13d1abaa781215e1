//! What becomes of a job when an attempt ends without success: retry after a backoff, or a
//! terminal state. Shared by every store, so that they agree on every transition.

use super::backoff::{delay, retry_jitter};
use super::config::EngineConfig;
use super::ids::JobId;
use super::model::{Failure, StateName};
use super::time::Span;

/// Why an attempt ended without the job succeeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptEnd<'a> {
    /// The agent reported this failure.
    Reported(&'a Failure),
    /// The lease expired or its machine was lost: the attempt's fate is unknown.
    Abandoned,
    /// The attempt ran past the job's timeout and the store noticed first.
    OverTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Back to the class queue once `delay` has passed (zero: at once).
    Retry {
        delay: Span,
    },
    Terminal(StateName),
}

/// The fate of `job` after attempt number `attempt` (1-based) of `max_attempts` ended so.
pub fn after_attempt(
    job: JobId,
    attempt: u32,
    max_attempts: u32,
    end: AttemptEnd<'_>,
    config: &EngineConfig,
) -> Next {
    let exhausted_state = match end {
        AttemptEnd::Reported(Failure::Error {
            retryable: false, ..
        }) => return Next::Terminal(StateName::Dead),
        AttemptEnd::Reported(Failure::TimedOut) | AttemptEnd::OverTime => StateName::TimedOut,
        _ => StateName::Dead,
    };
    if attempt >= max_attempts {
        return Next::Terminal(exhausted_state);
    }
    Next::Retry {
        delay: retry_delay(job, attempt, config),
    }
}

/// The backoff before the retry that follows attempt `attempt`, with jitter drawn from the
/// job id and attempt so that every store computes the same value.
pub fn retry_delay(job: JobId, attempt: u32, config: &EngineConfig) -> Span {
    delay(
        config.backoff_base,
        config.backoff_max,
        attempt,
        retry_jitter(job.0, attempt),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_attempts_run_out() {
        let config = EngineConfig::default();
        let err = Failure::Error {
            retryable: true,
            message: "boom".into(),
        };
        assert!(matches!(
            after_attempt(JobId(1), 1, 3, AttemptEnd::Reported(&err), &config),
            Next::Retry { .. }
        ));
        assert_eq!(
            after_attempt(JobId(1), 3, 3, AttemptEnd::Reported(&err), &config),
            Next::Terminal(StateName::Dead)
        );
        assert_eq!(
            after_attempt(JobId(1), 3, 3, AttemptEnd::Abandoned, &config),
            Next::Terminal(StateName::Dead)
        );
    }

    #[test]
    fn non_retryable_errors_are_dead_at_once_and_timeouts_end_timed_out() {
        let config = EngineConfig::default();
        let fatal = Failure::Error {
            retryable: false,
            message: "bad input".into(),
        };
        assert_eq!(
            after_attempt(JobId(1), 1, 3, AttemptEnd::Reported(&fatal), &config),
            Next::Terminal(StateName::Dead)
        );
        assert_eq!(
            after_attempt(JobId(1), 2, 2, AttemptEnd::OverTime, &config),
            Next::Terminal(StateName::TimedOut)
        );
        assert_eq!(
            after_attempt(
                JobId(1),
                2,
                2,
                AttemptEnd::Reported(&Failure::TimedOut),
                &config
            ),
            Next::Terminal(StateName::TimedOut)
        );
    }

    #[test]
    fn retry_delay_grows_with_attempts() {
        let config = EngineConfig::default();
        let first = retry_delay(JobId(9), 1, &config);
        let fifth = retry_delay(JobId(9), 5, &config);
        assert!(first <= config.backoff_base && first >= Span::from_millis(500));
        assert!(fifth >= Span::from_secs(8), "{fifth}");
    }
}
