//! `POST /v1/runs`: judged runs.

use axum::Json;
use axum::extract::{Request, State};

use super::AppState;
use super::body::{BodyLimits, media_type, read_json};
use super::error::{ApiError, ApiResult, Kind};
use crate::service::runs::request::RunRequest;
use crate::service::runs::result::RunResult;

/// Run a program against test cases: files go into a fresh workspace, then the steps
/// run in order (for example compile, then run once per test case), each execution in a
/// fresh container. Answers when every step is done, with a verdict and measurements
/// per execution. Over capacity (every slot busy and the queue full) the answer is 429
/// with `Retry-After`.
#[utoipa::path(
    post, path = "/v1/runs", tag = "runs",
    request_body(content = RunRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The run is done (whatever its verdicts)", body = RunResult),
        (status = 400, description = "Invalid request: field, limit, file path, image", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over its limit, declared or streamed: `runs.max_files_bytes` as base64 plus `runs.max_json_bytes` (`body_limits.runs` of `GET /v1/info`)", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over capacity; retry after the time in Retry-After", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(State(state): State<AppState>, req: Request) -> ApiResult<Json<RunResult>> {
    let ctype = media_type(req.headers());
    if ctype != "application/json" {
        return Err(ApiError::new(
            Kind::UnsupportedMediaType,
            format!("content type {ctype:?}: expected application/json"),
        ));
    }
    let (parts, body) = req.into_parts();
    let limits = BodyLimits::run(&state.cfg);
    // The guard keeps the body's memory until the run is done, then gives it back.
    let (run, _memory): (RunRequest, _) =
        read_json(body, &parts.headers, limits, &state.cfg.data).await?;
    Ok(Json(state.runs.run(run).await?))
}
