//! Errors as RFC 9457 problem details (`application/problem+json`), each with a stable,
//! machine-readable `type`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The problem kinds of the API: the last part of `type`
/// (`urn:corral:problem:<kind>`), each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    BadRequest,
    InvalidId,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    AlreadyExists,
    PayloadTooLarge,
    UnsupportedMediaType,
    PolicyViolation,
    TooManyRequests,
    Timeout,
    Internal,
    Unavailable,
    GatewayTimeout,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest | Kind::InvalidId => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden | Kind::PolicyViolation => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict | Kind::AlreadyExists => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad-request",
            Kind::InvalidId => "invalid-id",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not-found",
            Kind::Conflict => "conflict",
            Kind::AlreadyExists => "already-exists",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::PolicyViolation => "policy-violation",
            Kind::TooManyRequests => "too-many-requests",
            Kind::Timeout => "timeout",
            Kind::Internal => "internal",
            Kind::Unavailable => "unavailable",
            Kind::GatewayTimeout => "gateway-timeout",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:corral:problem:<kind>`: stable, for programs to match on.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind.
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, naming the field or thing.
    pub detail: String,
    /// Policy violations or field errors, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// The error type of every handler.
#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extra headers (`Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(Kind::Internal, detail)
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:corral:problem:{}", self.kind.name()),
            title: title(self.kind).into(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

fn title(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest => "Bad request",
        Kind::InvalidId => "Invalid id",
        Kind::Unauthorized => "Unauthorized",
        Kind::Forbidden => "Forbidden",
        Kind::NotFound => "Not found",
        Kind::Conflict => "Conflict with the current state",
        Kind::AlreadyExists => "Already exists",
        Kind::PayloadTooLarge => "Payload too large",
        Kind::UnsupportedMediaType => "Unsupported media type",
        Kind::PolicyViolation => "Refused by policy",
        Kind::TooManyRequests => "Too many requests",
        Kind::Timeout => "Timed out",
        Kind::Internal => "Internal error",
        Kind::Unavailable => "Service unavailable",
        Kind::GatewayTimeout => "Timed out inside the service",
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == Kind::Internal {
            // Logged once, here, where it is handled.
            tracing::error!(detail = %self.detail, "internal error");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (self.kind.status(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
