//! Thin, typed wrappers over the kernel interfaces the runtime uses.

pub mod cgroups;
pub mod console;
pub mod error;
pub mod exe;
pub mod fs;
pub mod identity;
pub mod mount;
pub mod mount_opts;
pub mod process;
pub mod seccomp;
pub mod sync;
