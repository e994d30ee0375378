//! Network namespaces made ahead of time. A new network namespace is the dearest part of
//! a run container's clone (the loopback device and the per-namespace sysctl tables are
//! registered); the runner makes the next one after it has answered, while the service
//! sends the answer and the client its next request, and the init joins it instead of
//! creating one. Each is fresh: made for one container, never entered before, and gone
//! with it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;

/// The runner's spare network namespaces.
pub(super) struct Spares {
    /// The runner's own network namespace, returned to after making each spare; `None`
    /// once making spares failed (containers then get theirs from the clone).
    home: Option<OwnedFd>,
    spare: Vec<OwnedFd>,
}

/// A spare, handed to one container: the init opens `path` (an fd of this process)
/// while `fd` is held.
pub(super) struct Fresh {
    fd: OwnedFd,
}

impl Fresh {
    /// `/proc/<runner pid>/fd/<n>`: the init, a child of this process, opens it during its
    /// setup, before it mounts its own `/proc`.
    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }
}

impl Spares {
    pub(super) fn new() -> Self {
        let home = open_current()
            .inspect_err(|e| tracing::warn!("runner: no spare network namespaces: {e}"))
            .ok();
        Spares {
            home,
            spare: Vec::new(),
        }
    }

    /// Makes spares until there are `want`.
    pub(super) fn fill(&mut self, want: usize) {
        while self.spare.len() < want {
            let Some(home) = &self.home else { return };
            match make(home) {
                Ok(ns) => self.spare.push(ns),
                Err(Failure::Make(e)) => {
                    tracing::warn!("runner: make a spare network namespace: {e}; no more spares");
                    self.home = None;
                }
                Err(Failure::Return(e)) => {
                    // Nothing of the runner's uses the network (its sockets are connected
                    // unix sockets); containers are cloned into namespaces of their own.
                    tracing::error!(
                        "runner: return to the runner's network namespace: {e}; no more spares"
                    );
                    self.home = None;
                }
            }
        }
    }

    /// Whether [`Spares::fill`] has `want` to make (and can).
    pub(super) fn wants(&self, want: usize) -> bool {
        self.home.is_some() && self.spare.len() < want
    }

    /// A spare, if there is one.
    pub(super) fn take(&mut self) -> Option<Fresh> {
        self.spare.pop().map(|fd| Fresh { fd })
    }
}

enum Failure {
    Make(nix::Error),
    Return(nix::Error),
}

fn open_current() -> Result<OwnedFd, nix::Error> {
    nix::fcntl::open(
        "/proc/thread-self/ns/net",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// A new network namespace, entered and left again for `home`.
fn make(home: &OwnedFd) -> Result<OwnedFd, Failure> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(Failure::Make)?;
    let ns = open_current();
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).map_err(Failure::Return)?;
    ns.map_err(Failure::Make)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ns_inode(path: &str) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    /// Spares are network namespaces of their own, the maker stays in its own.
    #[test]
    fn spares_are_new_namespaces_and_the_maker_stays_home() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (it makes network namespaces)");
        }
        let home = ns_inode("/proc/thread-self/ns/net");
        let mut spares = Spares::new();
        spares.fill(2);
        assert_eq!(ns_inode("/proc/thread-self/ns/net"), home, "not back home");
        let a = spares.take().expect("a spare");
        let b = spares.take().expect("a second spare");
        assert!(spares.take().is_none());
        let (ia, ib) = (
            std::fs::metadata(a.path()).unwrap().ino(),
            std::fs::metadata(b.path()).unwrap().ino(),
        );
        assert_ne!(ia, home);
        assert_ne!(ib, home);
        assert_ne!(ia, ib);
        // Its path names this process's fd.
        assert!(
            a.path()
                .starts_with(format!("/proc/{}/fd", std::process::id()))
        );
    }
}
