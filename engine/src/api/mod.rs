//! The HTTP/JSON API, generic over the store: jobs, machines, stats, `/metrics`, `/healthz`.
//!
//! | method and path              | what                                             |
//! |------------------------------|--------------------------------------------------|
//! | `POST /v1/jobs`              | submit; 201 `{"id", "warnings"}`, 200 if the key existed |
//! | `GET /v1/jobs/{id}`          | one job                                          |
//! | `POST /v1/jobs/{id}/cancel`  | cancel; 409 when already finished                |
//! | `GET /v1/jobs?state=&limit=&after=` | jobs in id order, `next` for the next page |
//! | `GET /v1/jobs/{id}/events`   | server-sent events (see `events`)                |
//! | `GET /v1/machines`           | registered machines                              |
//! | `GET /v1/stats`              | queue depth per class, states, spend, cost/job   |
//! | `GET /metrics`               | Prometheus text format                           |
//! | `GET /healthz`               | 200 when the store answers, else 503; no token   |
//!
//! Every endpoint but `/healthz` needs `Authorization: Bearer <token>` when a token is set.
//! Errors are `{"error": {"field", "message"}}`. Times are µs since the Unix epoch.

pub mod agent_metrics;
pub mod attempts;
pub mod auth;
pub mod client;
pub mod dto;
pub mod error;
pub mod events;
pub mod exposition;
pub mod feed;
pub mod jobs;
pub mod metrics;
pub mod observer;
pub mod tls;
pub mod views;
pub mod warnings;

use crate::core::EngineConfig;
use crate::runtime::{Metered, SharedReaperTotals, SharedStore};
use crate::store::{Reply, Request};
use attempts::{Attempts, SharedAttempts};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request as HttpRequest, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use feed::JournalFeed;
use observer::{Observed, SharedObserved};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Bearer token every endpoint but `/healthz` requires; `None` leaves the API open.
    pub token: Option<String>,
    /// How long a store request may take before the API answers 503.
    pub store_timeout: Duration,
    /// The command kinds of the config file, whose payloads a submission is checked against
    /// (`executor::payload::check`), beside the built-in kinds.
    pub command_kinds: BTreeMap<String, crate::executor::CommandTemplate>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            store_timeout: Duration::from_secs(5),
            command_kinds: BTreeMap::new(),
        }
    }
}

/// Jobs whose attempts the API keeps (`attempts`), newest first.
const MAX_JOBS_WITH_ATTEMPTS: usize = 100_000;

/// HTTP requests by (route, status).
pub type HttpCounts = Arc<Mutex<BTreeMap<(String, u16), u64>>>;

pub struct ApiState<S> {
    pub store: Metered<S>,
    pub config: Arc<EngineConfig>,
    pub options: Arc<ApiOptions>,
    pub token: Option<Arc<str>>,
    pub observed: SharedObserved,
    pub attempts: SharedAttempts,
    pub feed: JournalFeed,
    pub reaper: SharedReaperTotals,
    pub http: HttpCounts,
}

impl<S: SharedStore> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        ApiState {
            store: self.store.clone(),
            config: self.config.clone(),
            options: self.options.clone(),
            token: self.token.clone(),
            observed: self.observed.clone(),
            attempts: self.attempts.clone(),
            feed: self.feed.clone(),
            reaper: self.reaper.clone(),
            http: self.http.clone(),
        }
    }
}

impl<S: SharedStore> ApiState<S> {
    pub fn new(store: Metered<S>, config: Arc<EngineConfig>, options: ApiOptions) -> Self {
        let max_open = config.limits.max_jobs as usize;
        ApiState {
            store,
            config,
            token: options.token.as_deref().map(Arc::from),
            options: Arc::new(options),
            observed: Observed::shared(max_open),
            attempts: Attempts::shared(max_open.min(MAX_JOBS_WITH_ATTEMPTS)),
            feed: JournalFeed::default(),
            reaper: SharedReaperTotals::default(),
            http: HttpCounts::default(),
        }
    }

    /// One store request: a refusal becomes its HTTP error, no answer in time a 503.
    pub async fn call(&self, request: Request) -> Result<Reply, ApiError> {
        let limit = self.options.store_timeout;
        match tokio::time::timeout(limit, self.store.apply(request)).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(refusal))) => Err(ApiError::from(refusal)),
            Ok(Err(e)) => Err(ApiError::from(e)),
            Err(_) => Err(ApiError::unavailable(
                "store unavailable: no answer in time",
            )),
        }
    }
}

pub fn router<S: SharedStore>(state: ApiState<S>) -> Router {
    let guarded = Router::new()
        .route("/v1/jobs", post(jobs::submit::<S>).get(jobs::list::<S>))
        .route("/v1/jobs/{id}", get(jobs::get_job::<S>))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel::<S>))
        .route("/v1/jobs/{id}/events", get(events::events::<S>))
        .route("/v1/machines", get(views::machines::<S>))
        .route("/v1/stats", get(views::stats::<S>))
        .route("/metrics", get(metrics::metrics::<S>))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token::<S>,
        ));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(views::healthz::<S>))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_request::<S>,
        ))
        .with_state(state)
}

/// Counts requests by route template (bounded) and status.
async fn count_request<S: SharedStore>(
    State(state): State<ApiState<S>>,
    request: HttpRequest,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    if let Ok(mut http) = state.http.lock() {
        *http.entry((route, response.status().as_u16())).or_default() += 1;
    }
    response
}

/// Serves the API on `listener` (a `tokio::net::TcpListener`, or a `tls::TlsListener`) until
/// `shutdown` resolves, with its journal reader (the histograms and event streams) and, when
/// `reap`, the reaper running beside it.
pub async fn serve<S: SharedStore, L>(
    listener: L,
    state: ApiState<S>,
    reap: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let feed = tokio::spawn(feed::run_feed(
        state.store.clone(),
        state.observed.clone(),
        state.attempts.clone(),
        state.feed.clone(),
    ));
    let reaper = reap.then(|| {
        tokio::spawn(crate::runtime::run_reaper(
            state.store.clone(),
            state.config.clone(),
            state.reaper.clone(),
            std::future::pending(),
        ))
    });
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    feed.abort();
    if let Some(reaper) = reaper {
        reaper.abort();
    }
    result
}
