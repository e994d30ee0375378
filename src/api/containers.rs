//! `/v1/containers`: the OCI lifecycle over HTTP.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::{Identity, Role};
use super::body::{BodyLimits, media_type, read_json, receive, upload_reader};
use super::error::{ApiError, ApiResult, FieldError, Kind};
use crate::service::containers::{ContainerView, CreateFromImage};
use crate::service::policy::Strictness;
use crate::service::{ErrorKind, ServiceError};

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        if !e.violations.is_empty() {
            return ApiError::new(Kind::PolicyViolation, e.message).with_errors(
                e.violations
                    .into_iter()
                    .map(|v| FieldError {
                        field: v.field,
                        reason: v.reason,
                    })
                    .collect(),
            );
        }
        if e.timed_out {
            return ApiError::new(Kind::Timeout, e.message);
        }
        let kind = match e.kind {
            ErrorKind::InvalidId => Kind::InvalidId,
            ErrorKind::BadRequest => Kind::BadRequest,
            ErrorKind::NotFound => Kind::NotFound,
            ErrorKind::AlreadyExists => Kind::AlreadyExists,
            ErrorKind::Conflict => Kind::Conflict,
            ErrorKind::Unavailable => Kind::Unavailable,
            ErrorKind::Busy => {
                let mut e = ApiError::new(Kind::TooManyRequests, e.message);
                e.headers.push((
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                ));
                return e;
            }
            ErrorKind::Timeout => Kind::GatewayTimeout,
            ErrorKind::TooLarge => Kind::PayloadTooLarge,
            ErrorKind::Internal => Kind::Internal,
        };
        ApiError::new(kind, e.message)
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CreateQuery {
    /// The id of a container created from an uploaded bundle (generated when missing).
    pub id: Option<String>,
}

/// Create a container: from a named image (JSON body), or from an uploaded OCI bundle
/// (`application/x-tar` or `application/gzip` body holding `config.json` and `rootfs/`).
#[utoipa::path(
    post, path = "/v1/containers", tag = "containers",
    params(CreateQuery),
    request_body(content(
        (CreateFromImage = "application/json"),
        (Vec<u8> = "application/x-tar"),
        (Vec<u8> = "application/gzip")
    )),
    responses(
        (status = 201, description = "Created; the process waits for start", body = ContainerView),
        (status = 400, description = "Invalid request, id, image or bundle", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The bundle's config.json is refused by policy", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body timeout", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken, or the service is full", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over its limit, declared or streamed (a JSON body: `body_limits.create_from_image` of `GET /v1/info`; an upload: max_body_bytes), or an archive over max_upload_bytes, max_upload_entries or the gzip ratio", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The launcher is unavailable", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The launcher did not create the container in time (nothing is left behind)", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Query(q): Query<CreateQuery>,
    identity: axum::Extension<Identity>,
    req: Request,
) -> ApiResult<Response> {
    let ctype = media_type(req.headers());
    let strictness = if identity.role == Role::Admin {
        Strictness::Relaxed
    } else {
        Strictness::Enforce
    };
    let view = match ctype.as_str() {
        "application/json" => {
            if q.id.is_some() {
                return Err(ApiError::bad_request(
                    "the id query parameter is for bundle uploads; put \"id\" in the JSON body",
                ));
            }
            let (parts, body) = req.into_parts();
            let limits = BodyLimits::create(&state.cfg);
            let (create, _memory): (CreateFromImage, _) =
                read_json(body, &parts.headers, limits, &state.cfg.data).await?;
            state
                .containers
                .create_from_image(create, strictness, identity.role.as_str())
                .await?
        }
        "application/x-tar" | "application/tar" | "application/gzip" | "application/x-gzip" => {
            let (parts, body) = req.into_parts();
            let limits = BodyLimits::upload(&state.cfg);
            let (reader, watch) = upload_reader(body, &parts.headers, limits)?;
            state
                .containers
                .create_from_bundle(q.id, reader, strictness, identity.role.as_str())
                .await
                .map_err(|e| watch.explain(e.into()))?
        }
        other => {
            return Err(ApiError::new(
                Kind::UnsupportedMediaType,
                format!(
                    "content type {other:?}: expected application/json (from an image) or application/x-tar / application/gzip (a bundle)"
                ),
            ));
        }
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// List containers.
#[utoipa::path(get, path = "/v1/containers", tag = "containers",
    responses((status = 200, body = Vec<ContainerView>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ContainerView>>> {
    Ok(Json(state.containers.list().await?))
}

/// A container's state, with its exit status once it has stopped.
#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    responses((status = 200, body = ContainerView),
        (status = 400, description = "Invalid id", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerView>> {
    Ok(Json(state.containers.view(&id).await?))
}

/// Start a created container; returns once its program runs.
#[utoipa::path(post, path = "/v1/containers/{id}/start", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    responses((status = 200, body = ContainerView),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not in the created state", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerView>> {
    Ok(Json(state.containers.start(&id).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// A signal name (`SIGTERM`, `TERM`) or number; default SIGTERM.
    #[schema(value_type = Option<String>, example = "SIGTERM")]
    pub signal: Option<serde_json::Value>,
    /// Signal every process of the container, not just its init.
    #[serde(default)]
    pub all: bool,
}

/// Send a signal to a container.
#[utoipa::path(post, path = "/v1/containers/{id}/kill", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    request_body(content = KillRequest, content_type = "application/json"),
    responses((status = 204, description = "Signal sent"),
        (status = 400, description = "Unknown signal", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not running", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over its limit (`body_limits.kill` of `GET /v1/info`)", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let (parts, body) = req.into_parts();
    let limits = BodyLimits::kill(&state.cfg);
    let body = receive(body, &parts.headers, limits, &state.cfg.data).await?;
    let req: KillRequest = if body.is_empty() {
        KillRequest::default()
    } else {
        body.parse().await?.0
    };
    let name = match &req.signal {
        None => "SIGTERM".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "signal: expected a name or a number, got {other}"
            )));
        }
    };
    let sig = crate::runtime::signal::parse(&name).map_err(ApiError::bad_request)?;
    state.containers.kill(&id, sig, req.all).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// Kill the container first if it is running.
    #[serde(default)]
    pub force: bool,
}

/// Delete a container with its logs and writable layer.
#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers",
    params(("id" = String, Path, description = "Container id"), DeleteQuery),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Running, and force is not set", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    state.containers.delete(&id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest `?timeout=` of a wait, in seconds.
pub const MAX_WAIT_SECS: u64 = 3600;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// Seconds to wait at most (default 30, at most 3600).
    pub timeout: Option<u64>,
}

/// Wait until the container stops; returns its exit status.
#[utoipa::path(post, path = "/v1/containers/{id}/wait", tag = "containers",
    params(("id" = String, Path, description = "Container id"), WaitQuery),
    responses((status = 200, body = ContainerView),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 408, description = "Still running at the timeout", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn wait(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<ContainerView>> {
    let secs = q.timeout.unwrap_or(30).min(MAX_WAIT_SECS);
    Ok(Json(
        state
            .containers
            .wait(&id, Duration::from_secs(secs))
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// `stdout`, `stderr` or `both` (default).
    pub stream: Option<String>,
    /// Keep the response open and stream new output until the container stops.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines (of each stream).
    pub tail: Option<usize>,
}

/// A container's output (text/plain). With `both`, stdout then stderr; with
/// `follow=true`, chunks of either as they are written.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers",
    params(("id" = String, Path, description = "Container id"), LogsQuery),
    responses((status = 200, description = "The output", content_type = "text/plain", body = String),
        (status = 400, description = "Bad stream", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let streams = super::logs::streams(q.stream.as_deref()).map_err(ApiError::bad_request)?;
    let dir = state.containers.dir_of(&id)?;
    super::logs::respond(dir, streams, q.follow, q.tail).await
}

/// The container's cgroup usage: cpu, memory (current and peak), pids.
#[utoipa::path(get, path = "/v1/containers/{id}/stats", tag = "containers",
    params(("id" = String, Path, description = "Container id")),
    responses((status = 200, description = "cgroup statistics", body = Object),
        (status = 404, description = "No such container", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(state.containers.stats(&id).await?))
}
