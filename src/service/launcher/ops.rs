//! The lifecycle operations that need no fork (start, kill, delete, state), run by the
//! service itself on tokio's blocking pool: they block (`start` waits until the
//! container's program is exec'd; `delete` waits for the init to die) but never fork
//! or clone from a worker thread (hooks run through `std::process::Command`, which is
//! sound in a multi-threaded process).
//!
//! `delete` removes the container's cgroup: call it after the monitor has written
//! `exit.json` (see [`super::read_exit`]), or the monitor may find the cgroup gone when
//! it reads the OOM counter and report `oom_killed: false`.

use nix::sys::signal::Signal;

use super::client::Launcher;
use super::error::LauncherError;
use crate::runtime::linux::cgroups::CgroupStats;
use crate::runtime::ops::{self, Detached, StateView};
use crate::runtime::state::{Record, Store};

/// Where [`Launcher::detach`] moves containers' state, below the runtime root.
const DETACHED_DIR: &str = ".trash";

impl Launcher {
    /// `start`: releases the created container's init; returns once its program runs,
    /// with the container's runtime record.
    pub async fn start(&self, id: &str) -> Result<Record, LauncherError> {
        let id = id.to_string();
        self.blocking("start", move |s| ops::started(s, &id)).await
    }

    /// `kill`: `sig` to the init, or with `all` to every process of the container.
    pub async fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<(), LauncherError> {
        let id = id.to_string();
        self.blocking("kill", move |s| ops::kill(s, &id, sig, all))
            .await
    }

    /// `delete`: removes a stopped (or created) container; a running one with `force`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), LauncherError> {
        let id = id.to_string();
        self.blocking("delete", move |s| ops::delete(s, &id, force))
            .await
    }

    /// `delete` of a stopped container, answered before its cleanup: its state moves to
    /// `<root>/.trash/` and its id is free; [`Detached::remove`] does the rest.
    /// `None` (nothing done) for a container [`ops::detach`] leaves to `delete`.
    pub async fn detach(&self, id: &str) -> Result<Option<Detached>, LauncherError> {
        let id = id.to_string();
        let aside = self
            .root
            .join(DETACHED_DIR)
            .join(format!("{id}.{}", uuid::Uuid::new_v4().simple()));
        self.blocking("delete", move |s| ops::detach(s, &id, &aside))
            .await
    }

    /// Makes `<root>/.trash/` and removes the detached containers that a service which
    /// stopped abruptly left there (for the service's start).
    pub fn clean_detached(&self) -> std::io::Result<()> {
        let dir = self.root.join(DETACHED_DIR);
        std::fs::create_dir_all(&dir)?;
        let aside = Store::new(&dir);
        for left in std::fs::read_dir(&dir)?.flatten() {
            let path = left.path();
            let name = left.file_name().to_string_lossy().into_owned();
            let removed = Detached::at(&aside, &name).and_then(Detached::remove);
            if let Err(e) = removed {
                tracing::warn!("remove the detached container {}: {e}", path.display());
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(())
    }

    /// The OCI state of the container (status derived from the kernel).
    pub async fn state(&self, id: &str) -> Result<StateView, LauncherError> {
        let id = id.to_string();
        self.blocking("state", move |s| ops::state(s, &id)).await
    }

    /// The container's cgroup usage, from the cgroup path in its runtime record.
    pub async fn stats(&self, id: &str) -> Result<CgroupStats, LauncherError> {
        let id = id.to_string();
        self.blocking("stats", move |s| ops::stats(s, &id)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Store) -> crate::runtime::Result<T> + Send + 'static,
    ) -> Result<T, LauncherError> {
        let store = Store::new(&self.root);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|source| LauncherError::Join {
                op: op.into(),
                source,
            })?
            .map_err(LauncherError::from)
    }
}
