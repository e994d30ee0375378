//! `/v1/images`: the named images containers are made from.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;

use super::AppState;
use super::auth::{Identity, Role};
use super::body::{BodyLimits, upload_reader};
use super::error::{ApiError, ApiResult, Kind};
use crate::bundle::extract::Limits as TarLimits;
use crate::images::ImageInfo;

/// List images.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = Vec<ImageInfo>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ImageInfo>>> {
    let images = state.images.clone();
    Ok(Json(blocking(move || images.list()).await?))
}

/// One image.
#[utoipa::path(get, path = "/v1/images/{name}", tag = "images",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 200, body = ImageInfo),
        (status = 404, description = "No such image", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageInfo>> {
    let images = state.images.clone();
    Ok(Json(blocking(move || images.get(&name)).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ImportQuery {
    /// The new image's name.
    pub name: String,
}

/// Import an image (admin): a root filesystem tar, or an OCI image layout tar (such as
/// `skopeo copy ... oci-archive:` makes), plain or gzip.
#[utoipa::path(post, path = "/v1/images", tag = "images",
    params(ImportQuery),
    request_body(content((Vec<u8> = "application/x-tar"), (Vec<u8> = "application/gzip"))),
    responses((status = 201, body = ImageInfo),
        (status = 400, description = "Invalid name or archive", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs an admin token", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body timeout", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than max_body_bytes (declared or streamed), or an archive over max_upload_bytes, max_upload_entries or the gzip ratio", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Query(q): Query<ImportQuery>,
    identity: axum::Extension<Identity>,
    req: Request,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    require_admin(&identity)?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(
        ctype,
        "application/x-tar" | "application/tar" | "application/gzip" | "application/x-gzip"
    ) {
        return Err(ApiError::new(
            Kind::UnsupportedMediaType,
            format!("content type {ctype:?}: expected application/x-tar or application/gzip"),
        ));
    }
    let limits = TarLimits {
        max_total_bytes: state.cfg.limits.max_upload_bytes,
        max_entries: state.cfg.limits.max_upload_entries,
        ..TarLimits::default()
    };
    let (parts, body) = req.into_parts();
    let (reader, watch) = upload_reader(body, &parts.headers, BodyLimits::upload(&state.cfg))?;
    let images = state.images.clone();
    let info = blocking(move || images.import(&q.name, reader, &limits))
        .await
        .map_err(|e| watch.explain(e))?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Delete an image (admin); refused while a container uses it.
#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "Needs an admin token", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such image", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "In use by a container", body = super::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    identity: axum::Extension<Identity>,
) -> ApiResult<StatusCode> {
    require_admin(&identity)?;
    let images = state.images.clone();
    let containers = state.containers.clone();
    blocking(move || images.delete(&name, |n| containers.image_in_use(n))).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn require_admin(identity: &Identity) -> ApiResult<()> {
    if identity.role != Role::Admin {
        return Err(ApiError::new(Kind::Forbidden, "this needs an admin token"));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::service::ServiceError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task: {e}")))?
        .map_err(ApiError::from)
}
