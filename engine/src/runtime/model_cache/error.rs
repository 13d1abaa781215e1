//! Why a model could not be made ready, and what that means for the attempt that needed it.

use crate::core::{Failure, Outcome, Span};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("this agent has no source for it (no [models.NAME] entry in its config file)")]
    NoSource,
    #[error("HTTP status {status} from {url}")]
    Http { status: u16, url: String },
    #[error("download from {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("larger than its catalog size of {size_gb} GB")]
    TooLarge { size_gb: u32 },
    #[error("sha256 mismatch: expected {expected}, got {got}")]
    Checksum { expected: String, got: String },
    #[error("the disk is full: {0}")]
    DiskFull(String),
    #[error("{0}")]
    Io(String),
    #[error("fetch command failed: {0}")]
    Command(String),
    #[error("the fetch took longer than {0}")]
    Timeout(Span),
    #[error("the fetch was abandoned (the model was evicted)")]
    Abandoned,
}

impl FetchError {
    /// The label of `drover_agent_model_fetch_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::NoSource => "no_source",
            FetchError::Http { .. } => "http",
            FetchError::Transport { .. } => "transport",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Checksum { .. } => "checksum",
            FetchError::DiskFull(_) => "disk_full",
            FetchError::Io(_) => "io",
            FetchError::Command(_) => "command",
            FetchError::Timeout(_) => "timeout",
            FetchError::Abandoned => "abandoned",
        }
    }

    /// Worth trying again within the same fetch: the network, or a server error.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transport { .. } => true,
            FetchError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// An I/O error met while writing `what`: a full disk is its own failure.
    pub fn io(what: impl std::fmt::Display, error: std::io::Error) -> FetchError {
        if super::disk::is_disk_full(&error) {
            FetchError::DiskFull(format!("{what}: {error}"))
        } else {
            FetchError::Io(format!("{what}: {error}"))
        }
    }
}

/// A model an attempt needed and could not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("model {model}: {error}")]
pub struct ModelError {
    pub model: String,
    pub error: FetchError,
}

impl ModelError {
    /// How the attempt ends: a full disk is `DiskFull` (a resource failure: the retry goes
    /// where the model or the room is); anything else may go better on another attempt.
    pub fn outcome(&self) -> Outcome {
        match self.error {
            FetchError::DiskFull(_) => Outcome::Failed(Failure::DiskFull),
            _ => crate::executor::retryable(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_resource_failure_and_the_rest_retry() {
        let full = FetchError::io("writing x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.reason(), "disk_full");
        let error = ModelError {
            model: "sdxl".into(),
            error: full,
        };
        assert_eq!(error.outcome(), Outcome::Failed(Failure::DiskFull));
        let mismatch = ModelError {
            model: "sdxl".into(),
            error: FetchError::Checksum {
                expected: "aa".into(),
                got: "bb".into(),
            },
        };
        let Outcome::Failed(Failure::Error { retryable, message }) = mismatch.outcome() else {
            panic!("a checksum mismatch is an error");
        };
        assert!(retryable);
        assert!(
            message.starts_with("model sdxl: sha256 mismatch"),
            "{message}"
        );
        let denied = FetchError::io("x", std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.reason(), "io");
        let busy = FetchError::Http {
            status: 503,
            url: "u".into(),
        };
        assert!(busy.is_transient());
        let missing = FetchError::Http {
            status: 404,
            url: "u".into(),
        };
        assert!(!missing.is_transient());
    }
}
