//! Waiting on a directory without polling: an inotify watch registered with tokio's
//! reactor (for a container's exit record, see `Containers::wait`).

use std::path::Path;
use std::time::Duration;

/// An inotify watch for files created or moved into a directory (a container's
/// `exit.json`, which its monitor renames into place), or the directory's removal.
pub struct DirWatch {
    fd: Option<tokio::io::unix::AsyncFd<InotifyFd>>,
}

impl Drop for DirWatch {
    /// Closing an inotify instance waits for an SRCU grace period (tens of
    /// milliseconds): done on the blocking pool, not in the request's way.
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let inotify = fd.into_inner();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || drop(inotify));
            }
        }
    }
}

/// [`AsyncFd`](tokio::io::unix::AsyncFd) wants `AsRawFd`, which nix's `Inotify` lacks.
struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl DirWatch {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )?;
        use tokio::io::{Interest, unix::AsyncFd};
        // SAFETY: the fd is owned by the `Inotify` inside, which the `AsyncFd` owns (and
        // drops after deregistering); nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) };
        Ok(DirWatch {
            fd: Some(fd.map_err(|e| e.into_parts().1)?),
        })
    }

    /// Returns when something happened in the directory, or after `at_most`.
    pub async fn changed(&self, at_most: Duration) {
        let Some(fd) = &self.fd else { return };
        let _ = tokio::time::timeout(at_most, async {
            if let Ok(mut ready) = fd.readable().await {
                // Drained: the caller looks at the directory itself.
                while ready
                    .get_inner()
                    .0
                    .read_events()
                    .is_ok_and(|e| !e.is_empty())
                {}
                ready.clear_ready();
            }
        })
        .await;
    }
}
