//! The OpenAPI document, generated from the handlers' annotations (utoipa). The checked
//! in `openapi/openapi.yaml` must equal [`yaml`]; a test fails when it is stale
//! (`corral openapi > openapi/openapi.yaml` regenerates it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::body::limits::RouteBodyLimits;
use super::error::{FieldError, Kind, Problem};
use super::{containers, images, runs, system};
use crate::images::{ImageInfo, Language};
use crate::service::config::Limits;
use crate::service::containers::{
    ContainerView, CreateFromImage, ProcessRequest, ResourcesRequest, UserRequest,
};
use crate::service::runs::RunsConfig;
use crate::service::runs::limits::{LimitsRequest, RunLimits};
use crate::service::runs::request::{FileRequest, RunRequest, StepRequest, TestRequest};
use crate::service::runs::result::{ExecResult, RunResult, StepResult};
use crate::service::runs::verdict::Verdict;

#[derive(OpenApi)]
#[openapi(
    info(title = "corral", description = "Sandbox execution service: OCI containers over HTTP. Errors are RFC 9457 problem documents (application/problem+json) whose `type` is `urn:corral:problem:<kind>`."),
    paths(
        containers::create, containers::list, containers::get, containers::start,
        containers::kill, containers::delete, containers::wait, containers::logs,
        containers::stats, images::list, images::get, images::import, images::delete,
        system::info, system::healthz, system::metrics, runs::create
    ),
    components(schemas(
        ContainerView, CreateFromImage, ProcessRequest, ResourcesRequest, UserRequest,
        containers::KillRequest, ImageInfo, Language, Limits, system::Info, system::Health,
        Problem, FieldError, Kind, RunRequest, FileRequest, StepRequest, TestRequest,
        LimitsRequest, RunLimits, RunsConfig, RunResult, StepResult, ExecResult, Verdict,
        RouteBodyLimits
    )),
    modifiers(&Bearer, &CommonErrors),
    tags(
        (name = "containers", description = "The OCI lifecycle: create, start, state, kill, delete; wait, logs, stats"),
        (name = "images", description = "Named root filesystems"),
        (name = "runs", description = "Judged runs: compile once, run many test cases, verdicts"),
        (name = "system", description = "Service information, health and metrics")
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The errors any endpoint can answer with, outside its handler: a missing or bad token
/// (401, authenticated endpoints), too many requests in flight (429), the request time
/// limit (408), an internal failure (500).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut common = vec![
                    ("408", "The request was not handled within its time limit"),
                    (
                        "429",
                        "Too many requests in flight; retry after `Retry-After`",
                    ),
                    ("500", "Internal error"),
                ];
                if authenticated {
                    common.push(("401", "Missing or unknown bearer token"));
                }
                for (status, what) in common {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(what).into());
                }
            }
        }
    }
}

/// The document as YAML.
pub fn yaml() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.to_yaml()
        .unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_openapi_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == super::yaml(),
            "openapi/openapi.yaml is stale: regenerate it with `cargo run -- openapi > openapi/openapi.yaml`"
        );
    }
}
