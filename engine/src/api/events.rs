//! `GET /v1/jobs/{id}/events`: server-sent events of a job's state changes and progress.
//!
//! The store has no change feed, so the stream polls the job (every `ApiOptions::poll`,
//! 250 ms by default) and emits on change: `state` when the state, attempt or machine
//! changed, `progress` when only the progress did; each event's data is the job as `GET
//! /v1/jobs/{id}` shows it. The stream ends after a terminal state, or with an `error` event
//! when the job is purged or the store stays unreachable.

use super::dto::{parse_job_id, JobDto};
use super::error::ApiError;
use super::ApiState;
use crate::core::model::{JobView, Progress};
use crate::core::{JobId, MachineId, StateName};
use crate::runtime::SharedStore;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;

/// Polls that may fail in a row before the stream gives up (about 10 s at 250 ms).
const MAX_ERRORS_IN_ROW: u32 = 40;

pub async fn events<S: SharedStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = parse_job_id(&id)?;
    let first = state.job(job).await?;
    let watch = Watch {
        state,
        job,
        pending: Some(first),
        last: None,
        done: false,
        errors: 0,
    };
    let stream = stream::unfold(watch, |mut watch| async move {
        let event = watch.next_event().await?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

type Seen = (StateName, u32, Option<MachineId>, Option<Progress>);

struct Watch<S> {
    state: ApiState<S>,
    job: JobId,
    /// A view already read and not yet compared (the first one).
    pending: Option<JobView>,
    last: Option<Seen>,
    done: bool,
    errors: u32,
}

impl<S: SharedStore> Watch<S> {
    async fn next_event(&mut self) -> Option<Event> {
        while !self.done {
            let view = match self.pending.take() {
                Some(view) => Ok(view),
                None => {
                    tokio::time::sleep(self.state.options.poll).await;
                    self.state.job(self.job).await
                }
            };
            match view {
                Ok(view) => {
                    self.errors = 0;
                    if let Some(event) = self.compare(&view) {
                        return Some(event);
                    }
                }
                Err(e) => {
                    if let Some(event) = self.on_error(e) {
                        return Some(event);
                    }
                }
            }
        }
        None
    }

    fn compare(&mut self, view: &JobView) -> Option<Event> {
        let seen = (
            view.state,
            view.attempt,
            view.machine,
            view.progress.clone(),
        );
        let name = match &self.last {
            Some(last) if *last == seen => return None,
            Some(last) if (last.0, last.1, last.2) == (seen.0, seen.1, seen.2) => "progress",
            _ => "state",
        };
        self.last = Some(seen);
        self.done = view.state.is_terminal();
        let data = serde_json::to_string(&JobDto::new(view, &self.state.config)).ok()?;
        Some(Event::default().event(name).data(data))
    }

    fn on_error(&mut self, error: ApiError) -> Option<Event> {
        self.errors += 1;
        let gone = error.status == axum::http::StatusCode::NOT_FOUND;
        if !gone && self.errors < MAX_ERRORS_IN_ROW {
            return None;
        }
        self.done = true;
        let data = serde_json::json!({"error": {"message": error.message}}).to_string();
        Some(Event::default().event("error").data(data))
    }
}
