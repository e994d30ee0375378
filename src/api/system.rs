//! `/v1/info` and `/healthz`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::body::limits::RouteBodyLimits;
use super::error::{ApiError, ApiResult};
use crate::service::config::Limits;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Info {
    pub version: String,
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// `v1`, `hybrid` or `v2`.
    pub cgroup_mode: String,
    /// The OCI features document of the runtime.
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
    pub limits: Limits,
    /// The body limit of each route that takes one, from the configuration.
    pub body_limits: RouteBodyLimits,
}

/// Version, cgroup mode, runtime features and limits.
#[utoipa::path(get, path = "/v1/info", tag = "system",
    responses((status = 200, body = Info)), security(("bearer" = [])))]
pub async fn info(State(state): State<AppState>) -> ApiResult<Json<Info>> {
    use crate::runtime::linux::cgroups::{CgroupMode, detect_mode};
    let mode = match detect_mode() {
        CgroupMode::V1 => "v1",
        CgroupMode::Hybrid => "hybrid",
        CgroupMode::V2 => "v2",
    };
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        oci_version: crate::runtime::OCI_VERSION.into(),
        cgroup_mode: mode.into(),
        features: crate::runtime::features::document(),
        limits: state.cfg.limits.clone(),
        body_limits: RouteBodyLimits::of(&state.cfg),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: no authentication.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Prometheus metrics (text format): judged runs by outcome, executions by verdict,
/// run latency, queue depth, runs in progress, containers alive.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let roots = [
        state.cfg.root.clone(),
        crate::service::runs::container_root(&state.cfg.data),
    ];
    let state_root = state.cfg.root.clone();
    let counts = tokio::task::spawn_blocking(move || {
        let ids: Vec<String> = roots
            .iter()
            .flat_map(|r| {
                crate::runtime::state::Store::new(r)
                    .ids()
                    .unwrap_or_default()
            })
            .collect();
        let warm = ids
            .iter()
            .filter(|id| id.starts_with(crate::service::runs::WARM_PREFIX))
            .count() as i64;
        let api_warm = crate::service::launcher::pool::store(&state_root)
            .ids()
            .map_or(0, |ids| ids.len() as i64);
        (ids.len() as i64 - warm, warm + api_warm)
    })
    .await
    .unwrap_or((0, 0));
    let text = state
        .metrics
        .encode(counts)
        .map_err(|e| ApiError::internal(format!("encode metrics: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
