//! `run`: create, start, wait for the init and remove the container, handing on the
//! signals the runtime receives. The exit code is the container's, or 128+N for a signal.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use super::create::{CreateOptions, create, create_with, wants_terminal};
use super::error::Result;
use super::linux::console;
use super::linux::error::Context;
use super::linux::sync::recv_fd;
use super::ops;
use super::state::Store;

/// The init's pid while `run` waits for it; signals received meanwhile go to it.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs the container in the foreground; returns its exit code. With `detach`, returns
/// 0 once it is started.
pub fn run(store: &Store, opts: &CreateOptions, detach: bool) -> Result<i32> {
    // runc's behaviour: a terminal without --console-socket is relayed by `run` itself.
    let relay = opts.console_socket.is_none() && !detach && wants_terminal(&opts.bundle)?;
    let (created, master) = if relay {
        let (ours, theirs) = UnixStream::pair().ctx(|| "socketpair for the terminal".into())?;
        let created = create_with(store, opts, Some(OwnedFd::from(theirs)))?;
        match recv_fd(&ours) {
            Ok(m) => (created, Some(m)),
            Err(e) => {
                let _ = ops::delete(store, &opts.id, true);
                return Err(e.into());
            }
        }
    } else {
        (create(store, opts)?, None)
    };
    if let Err(e) = ops::start(store, &opts.id) {
        let _ = ops::delete(store, &opts.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let relay = master.map(|m| std::thread::spawn(move || console::relay(m)));
    let code = wait_forwarding(created.pid, &format!("container {}", opts.id))?;
    if let Some(r) = relay {
        let _ = r.join();
    }
    let lock = store.lock(&opts.id)?;
    ops::destroy(store, lock, &created.record)?;
    Ok(code)
}

/// Waits for our child `pid`, handing on the signals this process receives meanwhile;
/// returns its exit code, or 128+N when signal N killed it. `what` names it in errors.
pub fn wait_forwarding(pid: nix::unistd::Pid, what: &str) -> Result<i32> {
    FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only calls kill(2) and reads an atomic.
        unsafe { sigaction(sig, &action) }.ctx(|| format!("install handler for {sig}"))?;
    }
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                FORWARD_TO.store(0, Ordering::SeqCst);
                return Err(
                    super::linux::error::SysError::new(format!("wait for {what}"), e).into(),
                );
            }
        }
    };
    FORWARD_TO.store(0, Ordering::SeqCst);
    Ok(code)
}
