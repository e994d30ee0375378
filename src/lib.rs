//! corral: a sandbox execution service whose core is an OCI container runtime with
//! runc's command line. See DESIGN.md for the layers; this crate holds them all.

pub mod api;
pub mod bundle;
pub mod cli;
pub mod images;
pub mod runtime;
pub mod service;

#[cfg(test)]
mod testing;
