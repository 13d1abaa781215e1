//! `GET /v1/jobs/{id}/events`: server-sent events of one job, from the journal.
//!
//! The stream opens with a `state` event: the job as `GET /v1/jobs/{id}` shows it (no event
//! id). Then each journal event of the job as it happens — `leased`, `progress`, `failed`,
//! `revoked`, `requeued`, `succeeded`, `dead`, … — its SSE type the event's name, its id the
//! journal entry's id, its data the event as `drover journal export` writes it. After a
//! terminal event a last `state` event carries the finished job (its error), and the stream
//! ends. A client that reconnects with `Last-Event-ID` gets the opening `state`, then every
//! event of the job after that id that the journal still holds (`[engine.journal]` bounds
//! it), then live ones. An `error` event ends the stream when the store stays unreachable.
//!
//! The stream waits on the API's one journal reader (`feed`), never polls; it reads the store
//! itself only to catch up (after `Last-Event-ID`, or when it fell too far behind).

use super::dto::{parse_job_id, JobDto};
use super::error::ApiError;
use super::ApiState;
use crate::core::JobId;
use crate::runtime::SharedStore;
use crate::store::journal::{EntryId, JournalEntry};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// Entries read per catch-up page.
const CATCH_UP_PAGE: usize = 500;
/// Failed catch-up reads in a row (a second apart) before the stream gives up.
const MAX_ERRORS_IN_ROW: u32 = 10;

pub async fn events<S: SharedStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = parse_job_id(&id)?;
    let resume = last_event_id(&headers)?;
    // Subscribed before the job is read, so that nothing after the opening state is missed.
    let live = state.feed.subscribe();
    let position = state.observed.lock().ok().and_then(|o| o.last);
    let view = state.job(job).await?;
    let mut watch = Watch {
        state,
        job,
        live,
        after: resume.or(position),
        catching_up: resume.is_some(),
        queue: VecDeque::new(),
        // A finished job's stream is its state, after what a resuming client missed.
        done: view.state.is_terminal() && resume.is_none(),
        finished: view.state.is_terminal(),
        errors: 0,
    };
    watch.queue.push_back(watch.state_event(&view));
    let stream = stream::unfold(watch, |mut watch| async move {
        let event = watch.next_event().await?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<EntryId>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("Last-Event-ID", "not text"))?;
    text.parse()
        .map(Some)
        .map_err(|e: String| ApiError::invalid("Last-Event-ID", e))
}

struct Watch<S> {
    state: ApiState<S>,
    job: JobId,
    live: broadcast::Receiver<Arc<JournalEntry>>,
    /// The newest entry already looked at: anything at or before it is not sent again.
    after: Option<EntryId>,
    /// Reading missed entries from the store rather than from the live feed.
    catching_up: bool,
    queue: VecDeque<Event>,
    /// The job ended: send what is queued, then stop.
    done: bool,
    /// The job had ended when the stream opened.
    finished: bool,
    errors: u32,
}

impl<S: SharedStore> Watch<S> {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                self.catch_up().await;
            } else {
                self.receive().await;
            }
        }
    }

    async fn catch_up(&mut self) {
        let read = self
            .state
            .store
            .follow_journal(self.after, CATCH_UP_PAGE, Duration::from_millis(1))
            .await;
        match read {
            Ok(entries) if entries.is_empty() => {
                self.catching_up = false;
                // Nothing more will happen to a finished job (even if the journal no longer
                // held its end).
                self.done |= self.finished;
            }
            Ok(entries) => {
                self.errors = 0;
                for entry in &entries {
                    self.take(entry).await;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.errors >= MAX_ERRORS_IN_ROW {
                    self.fail(&format!("store unavailable: {e}"));
                } else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn receive(&mut self) {
        match self.live.recv().await {
            Ok(entry) => self.take(&entry).await,
            Err(RecvError::Lagged(_)) => self.catching_up = true,
            Err(RecvError::Closed) => self.fail("the API is shutting down"),
        }
    }

    /// Queues the entry's events of this job, once.
    async fn take(&mut self, entry: &JournalEntry) {
        if self.after.is_some_and(|after| entry.id <= after) {
            return;
        }
        self.after = Some(entry.id);
        for event in entry.events.iter().filter(|e| e.job() == Some(self.job)) {
            let sse = Event::default()
                .id(entry.id.to_string())
                .event(event.name())
                .data(entry.export_line(event));
            self.queue.push_back(sse);
            if event.terminal().is_some() {
                self.done = true;
            }
        }
        if self.done && !self.finished {
            self.queue_final_state().await;
        }
    }

    async fn queue_final_state(&mut self) {
        match self.state.job(self.job).await {
            Ok(view) => {
                let event = self.state_event(&view);
                self.queue.push_back(event);
            }
            Err(e) => tracing::warn!(job = self.job.0, error = %e.message, "final state unread"),
        }
    }

    fn state_event(&self, view: &crate::core::model::JobView) -> Event {
        let dto = JobDto::new(view, &self.state.config);
        let data = serde_json::to_string(&dto).unwrap_or_else(|_| "{}".into());
        Event::default().event("state").data(data)
    }

    fn fail(&mut self, message: &str) {
        let data = serde_json::json!({"error": {"message": message}}).to_string();
        self.queue
            .push_back(Event::default().event("error").data(data));
        self.done = true;
    }
}
