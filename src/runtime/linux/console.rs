//! The container's terminal: a pty made inside the container (from its own devpts), whose
//! master goes to the `--console-socket` with `SCM_RIGHTS`, and whose slave becomes the
//! init's controlling terminal and stdio.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use super::error::{Context, SysResult};
use super::sync::send_fd;

/// Makes the pty, sends its master over `socket`, and installs the slave as the calling
/// process's controlling terminal and fds 0, 1, 2.
pub fn setup(socket: &impl AsFd, size: Option<(u16, u16)>) -> SysResult<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "open /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname_r(&master).ctx(|| "ptsname".into())?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        nix::errno::Errno::result(r).ctx(|| "set console size".into())?;
    }
    let slave: OwnedFd = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    send_fd(socket, &master, &name)?;
    drop(master);
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY takes an int argument; the fd is a valid terminal.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(r).ctx(|| format!("make {name} the controlling terminal"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard fds; the slave fd stays valid until dropped.
        let r = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        nix::errno::Errno::result(r).ctx(|| format!("dup {name} onto fd {target}"))?;
    }
    Ok(())
}

/// `run`'s side of a terminal: copies stdin to the pty master and the master to stdout
/// until the container closes its end, with the caller's terminal in raw mode meanwhile.
/// Runs on its own thread, after every container process has been forked.
pub fn relay(master: OwnedFd) {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
    }
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        let mut fds = vec![nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if stdin_open {
            fds.push(nix::poll::PollFd::new(
                stdin.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (m, s) = (ready(0), ready(1));
        if m {
            match nix::unistd::read(&master, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_all(std::io::stdout().as_fd(), &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        if s {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = write_all(master.as_fd(), &buf[..n]);
                }
            }
        }
    }
    if let Some(t) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &t);
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
