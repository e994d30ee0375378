//! The OCI runtime engine: a bundle's `config.json` becomes a process in namespaces, and
//! the lifecycle operations of the runtime spec act on it. Knows nothing of HTTP.

pub mod atomic;
pub mod control;
pub mod create;
pub mod error;
pub mod events;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod id;
mod init;
pub mod linux;
pub mod ops;
pub mod plan;
pub mod run;
pub mod signal;
pub mod spec;
pub mod state;
pub mod status;

use std::collections::HashMap;
use std::path::Path;

pub use error::{Error, Result};

/// The version of the OCI runtime spec that corral implements.
pub const OCI_VERSION: &str = "1.2.0";

/// The OCI state document (state.md#state), as given to hooks and printed by `state`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

pub fn oci_state(
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
    annotations: &HashMap<String, String>,
) -> OciState {
    OciState {
        oci_version: OCI_VERSION.into(),
        id: id.into(),
        status: status.into(),
        pid: (pid > 0 && status != "stopped").then_some(pid),
        bundle: bundle.to_string_lossy().into_owned(),
        annotations: annotations.clone(),
    }
}
