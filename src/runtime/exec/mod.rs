//! `exec`: a new process in a running container.
//!
//! The runtime (single-threaded) checks the container, builds and validates the process
//! ([`process`], then `plan::process_plan`), compiles the container's seccomp profile and
//! opens the init's namespaces (checking afterwards that the init is still the recorded
//! process). It enters the container's pid and time namespaces itself, since those apply
//! to children only, forks, and goes back. It puts the child in the container's cgroup
//! and lets it go on; the child ([`child`]) joins the other namespaces and execs. The
//! child's sync socket is close-on-exec: end-of-file without an error means it exec'd.

mod child;
pub mod process;

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::waitpid;

use super::error::{Error, Result};
use super::linux::cgroups::Cgroup;
use super::linux::console;
use super::linux::error::Context;
use super::linux::process::{Forked, clone_process, pidfd_send_signal, start_time};
use super::linux::seccomp;
use super::linux::sync::{self, Message, recv_fd};
use super::ops::{cgroup_path, open_init};
use super::plan::process_plan;
use super::spec::SpecError;
use super::state::{Record, Store};
use super::status::{Status, status};
use super::{create, id, run};

pub use process::{Flags, Source};

/// What can go wrong in `exec` before or while the process starts.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("process {path}: {field}{sep}{reason}", field = .field, sep = if .field.is_empty() { "" } else { ": " })]
    ProcessFile {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A field of the process that cannot be honoured.
    #[error("exec process: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("container {id}: linux.seccomp: {reason}")]
    Seccomp { id: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// The child reported a setup failure.
    #[error("container {id}: exec: {reason}")]
    Setup { id: String, reason: String },
}

impl From<SpecError> for ExecError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Invalid { field, reason } => ExecError::Invalid { field, reason },
            other => ExecError::Invalid {
                field: "process".into(),
                reason: other.to_string(),
            },
        }
    }
}

/// The options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub id: String,
    pub source: Source,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
}

/// The namespaces a process joins, in order: user first (it grants the rights to join
/// the others), pid and time last (they only apply to children: the runtime enters them).
const NAMESPACES: [(&str, CloneFlags); 8] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
];

/// Runs the process; returns its exit code (0 once it runs, with `detach`).
pub fn exec(store: &Store, opts: &ExecOptions) -> Result<i32> {
    id::validate(&opts.id)?;
    let lock = store.lock(&opts.id)?;
    let rec = store.load(&opts.id)?;
    match status(store, &rec) {
        Status::Stopped => return Err(Error::status("cannot exec in a stopped container")),
        Status::Paused if !opts.ignore_paused => {
            return Err(Error::status(
                "cannot exec in a paused container (use --ignore-paused to override)",
            ));
        }
        _ => {}
    }
    let process = process::build(&opts.source, &rec)?;
    let plan = process_plan(&process).map_err(ExecError::from)?;
    let filter = match &rec.seccomp {
        Some(s) => Some(seccomp::compile(s).map_err(|e| ExecError::Seccomp {
            id: opts.id.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let relay = plan.terminal && opts.console_socket.is_none() && !opts.detach;
    if plan.terminal && opts.console_socket.is_none() && opts.detach {
        return Err(
            ExecError::Usage("a terminal with --detach needs --console-socket".into()).into(),
        );
    }
    if !plan.terminal && opts.console_socket.is_some() {
        return Err(ExecError::Usage(
            "--console-socket given but the process has no terminal (--tty)".into(),
        )
        .into());
    }
    let (console_ours, console_theirs) = if relay {
        let (a, b) = UnixStream::pair().ctx(|| "socketpair for the terminal".into())?;
        (Some(a), Some(OwnedFd::from(b)))
    } else {
        let theirs = match &opts.console_socket {
            Some(p) => Some(
                UnixStream::connect(p)
                    .map(OwnedFd::from)
                    .ctx(|| format!("connect to console socket {}", p.display()))?,
            ),
            None => None,
        };
        (None, theirs)
    };

    let init = open_init(&rec).ok_or_else(|| Error::status("container not running"))?;
    let (join, for_children) = open_namespaces(&rec)?;
    // A container in the runtime's mount namespace has no namespace root to join: the
    // process enters the init's root (its chroot) instead, or it would run in the host's.
    let root = if rec.host_mount_ns {
        let path = format!("/proc/{}/root", rec.pid);
        let fd = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| format!("open {path}"))?;
        Some(fd)
    } else {
        None
    };
    // Opened through /proc/<pid>: make sure that pid was still the init.
    if start_time(rec.pid) != Some(rec.init_start_time) {
        return Err(Error::status("container not running"));
    }
    drop(init);
    let cg = Cgroup::open(&cgroup_path(&rec)?)?;
    let (parent, child_end) = sync::channel()?;

    let saved = enter_for_children(&for_children)?;
    let forked = clone_process(CloneFlags::empty());
    if !matches!(forked, Ok(Forked::Child)) {
        restore(saved)?;
    }
    let (pid, pidfd) = match forked? {
        Forked::Child => {
            drop(parent);
            drop(for_children);
            child::run(child::ChildContext {
                plan: &plan,
                seccomp: filter.as_ref(),
                sync: child_end,
                console_socket: console_theirs,
                namespaces: join,
                root,
                preserve_fds: opts.preserve_fds,
            })
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(child_end);
    drop(console_theirs);
    drop(join);
    drop(root);
    let fail = |e: Error| -> Error {
        let _ = pidfd_send_signal(&pidfd, libc::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    cg.add_process(pid.as_raw()).map_err(|e| fail(e.into()))?;
    parent
        .send(&Message::Continue {
            state: String::new(),
        })
        .map_err(|e| fail(e.into()))?;
    match parent.recv().map_err(|e| fail(e.into()))? {
        None => {}
        Some(Message::Error(reason) | Message::ConfigError(reason)) => {
            return Err(fail(
                ExecError::Setup {
                    id: opts.id.clone(),
                    reason,
                }
                .into(),
            ));
        }
        Some(other) => {
            return Err(fail(
                ExecError::Setup {
                    id: opts.id.clone(),
                    reason: format!("unexpected message {other:?}"),
                }
                .into(),
            ));
        }
    }
    drop(lock);
    if let Some(pf) = &opts.pid_file {
        create::write_pid_file(pf, pid.as_raw())?;
    }
    if opts.detach {
        return Ok(0);
    }
    let master = match &console_ours {
        Some(s) => Some(recv_fd(s)?),
        None => None,
    };
    let relay = master.map(|m| std::thread::spawn(move || console::relay(m)));
    let code = run::wait_forwarding(pid, &format!("exec in container {}", opts.id))?;
    if let Some(r) = relay {
        let _ = r.join();
    }
    Ok(code)
}

type NsList = Vec<(CloneFlags, OwnedFd)>;

/// The init's namespaces that differ from the runtime's own: `(joined by the child,
/// entered by the runtime for the fork)`.
fn open_namespaces(rec: &Record) -> Result<(NsList, NsList)> {
    let mut join = Vec::new();
    let mut for_children = Vec::new();
    for (name, kind) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", rec.pid);
        let f = match File::open(&theirs) {
            Ok(f) => f,
            // A kernel without this namespace type (time before 5.6).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "time" => continue,
            Err(e) => {
                return Err(super::linux::error::SysError::new(
                    format!("open {theirs}"),
                    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
                .into());
            }
        };
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .ctx(|| format!("stat /proc/self/ns/{name}"))?;
        let meta = f.metadata().ctx(|| format!("stat {theirs}"))?;
        if meta.ino() == ours.ino() && meta.dev() == ours.dev() {
            continue;
        }
        let fd = OwnedFd::from(f);
        if name == "pid" || name == "time" {
            for_children.push((kind, fd));
        } else {
            join.push((kind, fd));
        }
    }
    Ok((join, for_children))
}

/// Enters `list` (pid, time) for the fork; returns the runtime's own ones to go back to.
fn enter_for_children(list: &NsList) -> Result<NsList> {
    let mut saved = Vec::new();
    for (kind, fd) in list {
        let name = if *kind == CloneFlags::CLONE_NEWPID {
            "pid"
        } else {
            "time"
        };
        let own: OwnedFd = File::open(format!("/proc/self/ns/{name}"))
            .ctx(|| format!("open /proc/self/ns/{name}"))?
            .into();
        setns(fd.as_fd(), *kind).ctx(|| format!("enter the container's {name} namespace"))?;
        saved.push((*kind, own));
    }
    Ok(saved)
}

fn restore(saved: NsList) -> Result<()> {
    for (kind, fd) in saved {
        setns(fd.as_fd(), kind).ctx(|| format!("return to the runtime's {kind:?} namespace"))?;
    }
    Ok(())
}
