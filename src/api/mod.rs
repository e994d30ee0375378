//! The HTTP API (axum): router, authentication, handlers, problem details and the
//! OpenAPI document. Knows nothing of syscalls: everything goes through `service`.

pub mod auth;
mod body;
mod containers;
pub mod error;
mod images;
mod logs;
mod middleware;
pub mod openapi;
mod runs;
pub mod serve;
mod system;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::service::config::Config;
use crate::service::containers::Containers;
use crate::service::images::Images;
use crate::service::metrics::Metrics;
use crate::service::runs::Runs;
use auth::TokenStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub containers: Arc<Containers>,
    pub images: Arc<Images>,
    pub runs: Arc<Runs>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenStore>,
}

/// The whole API: `/healthz` without authentication, everything under `/v1` with it.
pub fn router(state: AppState) -> Router {
    let limits = &state.cfg.limits;
    let v1 = Router::new()
        .route(
            "/v1/containers",
            post(containers::create).get(containers::list),
        )
        .route(
            "/v1/containers/{id}",
            get(containers::get).delete(containers::delete),
        )
        .route("/v1/containers/{id}/start", post(containers::start))
        .route("/v1/containers/{id}/kill", post(containers::kill))
        .route("/v1/containers/{id}/wait", post(containers::wait))
        .route("/v1/containers/{id}/logs", get(containers::logs))
        .route("/v1/containers/{id}/stats", get(containers::stats))
        .route("/v1/images", get(images::list).post(images::import))
        .route("/v1/images/{name}", get(images::get).delete(images::delete))
        .route("/v1/info", get(system::info))
        .route("/v1/runs", post(runs::create))
        .route("/metrics", get(system::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ));
    let header = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(system::healthz))
        .merge(v1)
        .fallback(system::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(middleware::span))
                .layer(PropagateRequestIdLayer::new(header))
                .layer(axum::middleware::from_fn(
                    middleware::problem_for_plain_errors,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
                    middleware::limit_concurrency,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(limits.clone()),
                    middleware::time_limit,
                ))
                // No handler reads its body with axum's extractors (each route has
                // its own limit, `body::limits`); one that did would get the smallest.
                .layer(axum::extract::DefaultBodyLimit::max(
                    body::limits::KILL_JSON_BYTES as usize,
                )),
        )
        .with_state(state)
}
