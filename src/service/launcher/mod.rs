//! The launcher: how `corral serve` creates containers without forking from a tokio
//! worker thread (DESIGN.md, process model).
//!
//! ```text
//!  corral serve (tokio, many threads)
//!    │  Launcher (client.rs): SOCK_SEQPACKET socketpair, JSON packets (protocol.rs)
//!    ▼
//!  corral launcher (server.rs): one thread, one poll loop; forks a monitor per create
//!    │  fork; the monitor reports Created { pid } / Error on a pipe
//!    ▼
//!  monitor (monitor.rs, pump.rs): own session; runs the runtime's create_with, so it is
//!    │  the parent of the init; pumps stdout/stderr into capped logs; waits for the init
//!    ▼  and writes exit.json (files.rs)
//!  container init
//! ```
//!
//! Who reaps whom: the monitor reaps the container's init (it is its parent, so it gets
//! the real status); the launcher reaps the monitors while it runs; a monitor whose
//! launcher has gone is reparented to the host's init (or nearest subreaper), which
//! reaps it. The service reaps the launcher (tokio does, for a dropped child).
//!
//! What survives what: the service's or the launcher's exit (or SIGKILL) ends neither
//! the monitors nor the containers: the launcher exits on EOF of its socket, a new one
//! is started on the next request, and the service finds containers again from the
//! runtime's state root and their logs and exit records in the data directory. If a
//! monitor itself is killed, its container goes on, but its output is no longer logged
//! and no `exit.json` is written.
//!
//! Warm containers (pool.rs): for a create from an image, the launcher keeps containers
//! of recently used images made ahead, each in a monitor of its own whose init waits for
//! a process; a create (`Op::Claim`) hands one its id, process, limits and directory, and
//! from then on it is an ordinary monitor. The launcher answers `NotWarm` when it has
//! none, and the service creates the container as above.
//!
//! Start, kill, delete and state do not fork: the service runs them itself (ops.rs).

mod client;
mod error;
mod files;
mod monitor;
mod ops;
pub mod pool;
mod protocol;
mod pump;
mod runner;
pub mod server;

pub use client::Launcher;
pub use error::{ErrorKind, LauncherError, kind_of};
pub use files::{
    EXIT_FILE, ExitRecord, MONITOR_LOG, STDERR_LOG, STDOUT_LOG, TRUNCATED_SUFFIX, log_truncated,
    read_exit,
};
pub use protocol::{ClaimRequest, CreateRequest, DEFAULT_LOG_LIMIT, MAX_PACKET};
