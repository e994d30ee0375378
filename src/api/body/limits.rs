//! The body limit of each route that takes a body, from what the route can accept, and
//! never above `limits.max_body_bytes` (which is the limit of uploads).

use std::time::Duration;

use axum::http::{HeaderMap, header};
use serde::Serialize;

use crate::api::error::{ApiError, Kind};
use crate::service::config::Config;

/// A JSON `POST /v1/containers` (create from an image): the most argument and
/// environment strings `execve` takes at the default 8 MiB stack limit (a quarter of
/// it: 2 MiB; no one string over 128 KiB), plus 64 KiB for the rest of the request (id,
/// image, cwd, user, resources) and JSON's quotes and commas. A process that needs more
/// than this cannot be started anyway.
pub const CREATE_JSON_BYTES: u64 = (2 << 20) + (64 << 10);

/// `POST /v1/containers/{id}/kill`: `{"signal": "SIGRTMAX-14", "all": true}` is under
/// 64 bytes; 4 KiB leaves room for any spacing.
pub const KILL_JSON_BYTES: u64 = 4 << 10;

/// The limits one body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    /// What the limit is, for the 413: `limits.max_body_bytes`, ...
    pub what: &'static str,
    pub timeout: Duration,
}

impl BodyLimits {
    /// `route_max`, or `limits.max_body_bytes` when that is lower.
    fn capped(cfg: &Config, route_max: u64, what: &'static str) -> Self {
        let timeout = Duration::from_secs(cfg.limits.body_timeout_secs);
        let global = cfg.limits.max_body_bytes;
        if route_max <= global {
            BodyLimits {
                max_bytes: route_max,
                what,
                timeout,
            }
        } else {
            BodyLimits {
                max_bytes: global,
                what: "limits.max_body_bytes",
                timeout,
            }
        }
    }

    /// A bundle or image upload (streamed to disk as it arrives).
    pub fn upload(cfg: &Config) -> Self {
        Self::capped(cfg, u64::MAX, "limits.max_body_bytes")
    }

    /// `POST /v1/runs`: see [`crate::service::runs::RunsConfig::max_request_bytes`].
    pub fn run(cfg: &Config) -> Self {
        Self::capped(
            cfg,
            cfg.runs.max_request_bytes(),
            "POST /v1/runs (runs.max_files_bytes as base64, plus runs.max_json_bytes)",
        )
    }

    /// A JSON `POST /v1/containers`: [`CREATE_JSON_BYTES`].
    pub fn create(cfg: &Config) -> Self {
        Self::capped(
            cfg,
            CREATE_JSON_BYTES,
            "a JSON POST /v1/containers (the arguments and environment execve takes)",
        )
    }

    /// `POST /v1/containers/{id}/kill`: [`KILL_JSON_BYTES`].
    pub fn kill(cfg: &Config) -> Self {
        Self::capped(cfg, KILL_JSON_BYTES, "POST /v1/containers/{id}/kill")
    }

    pub(super) fn too_large(&self) -> ApiError {
        ApiError::new(
            Kind::PayloadTooLarge,
            format!(
                "request body larger than {} bytes, the limit of {}",
                self.max_bytes, self.what
            ),
        )
    }

    pub(super) fn timed_out(&self) -> ApiError {
        ApiError::new(
            Kind::Timeout,
            format!(
                "request body not received within {}s",
                self.timeout.as_secs()
            ),
        )
    }

    /// 413 at once when the declared `Content-Length` is over the limit; the declared
    /// length otherwise (when there is one).
    pub fn check_declared(&self, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max_bytes => Err(self.too_large()),
            d => Ok(d),
        }
    }
}

/// The body limit of each route that takes a body, in bytes (in `GET /v1/info`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteBodyLimits {
    /// `POST /v1/runs`: `runs.max_files_bytes` as base64, plus `runs.max_json_bytes`.
    pub runs: u64,
    /// `POST /v1/containers` with a JSON body.
    pub create_from_image: u64,
    /// `POST /v1/containers/{id}/kill`.
    pub kill: u64,
    /// Bundle (`POST /v1/containers`) and image (`POST /v1/images`) uploads:
    /// `limits.max_body_bytes`.
    pub upload: u64,
}

impl RouteBodyLimits {
    pub fn of(cfg: &Config) -> Self {
        RouteBodyLimits {
            runs: BodyLimits::run(cfg).max_bytes,
            create_from_image: BodyLimits::create(cfg).max_bytes,
            kill: BodyLimits::kill(cfg).max_bytes,
            upload: BodyLimits::upload(cfg).max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_limits_fit_what_the_route_takes_under_the_global_cap() {
        let cfg = Config::default();
        let l = RouteBodyLimits::of(&cfg);
        // 32 MiB of files in base64 (44739244 bytes) plus 16 MiB for the rest.
        assert_eq!(l.runs, 44_739_244 + (16 << 20));
        assert_eq!(l.create_from_image, CREATE_JSON_BYTES);
        assert_eq!(l.kill, KILL_JSON_BYTES);
        assert_eq!(l.upload, cfg.limits.max_body_bytes);
        let mut small = Config::default();
        small.limits.max_body_bytes = 65536;
        let l = BodyLimits::run(&small);
        assert_eq!(l.max_bytes, 65536);
        assert_eq!(l.what, "limits.max_body_bytes");
        assert!(l.too_large().detail.contains("65536 bytes"));
        assert_eq!(BodyLimits::kill(&small).max_bytes, KILL_JSON_BYTES);
    }

    #[test]
    fn a_declared_length_over_the_limit_is_413() {
        let l = BodyLimits::kill(&Config::default());
        let mut h = HeaderMap::new();
        assert_eq!(l.check_declared(&h).unwrap(), None);
        h.insert(header::CONTENT_LENGTH, "4096".parse().unwrap());
        assert_eq!(l.check_declared(&h).unwrap(), Some(4096));
        h.insert(header::CONTENT_LENGTH, "4097".parse().unwrap());
        let e = l.check_declared(&h).unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
        assert!(e.detail.contains("4096 bytes"), "{}", e.detail);
        assert!(e.detail.contains("kill"), "{}", e.detail);
    }
}
