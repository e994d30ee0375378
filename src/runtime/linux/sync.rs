//! The typed channel between the runtime and a container's init while it is being set
//! up: a `SOCK_SEQPACKET` socketpair, one JSON message per packet, with the message
//! boundaries kept by the kernel.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use super::error::{Context, SysError, SysResult};

/// Messages between runtime (parent) and init (child), in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// parent -> child: id maps written and cgroup joined; go on. Carries the OCI state
    /// for the hooks that run inside the container.
    Continue { state: String },
    /// child -> parent: mounts are ready, run `prestart`/`createRuntime` hooks now.
    RunCreateRuntimeHooks,
    /// parent -> child: those hooks have run; go on to `createContainer` and pivot_root.
    HooksDone,
    /// child -> parent: setup is complete; init waits for `start`.
    Ready,
    /// either way: setup failed; the text says what and why.
    Error(String),
    /// child -> parent: setup failed on the container's own configuration (its program
    /// or cwd does not exist in its rootfs, its rootfs holds a symlink or a file where a
    /// mount or a device goes): the request's fault, not the host's.
    ConfigError(String),
    /// parent -> child, to an init created to wait for its process (a warm container):
    /// the process to run. The init answers `Ready` (or why not) once it has taken on
    /// the process's identity and found its program.
    Process(LateProcess),
}

/// The process of a container given after create: what a request names about it.
/// Everything else (capabilities, rlimits, seccomp, no_new_privs) is the bundle's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateProcess {
    pub args: Vec<String>,
    /// `KEY=VALUE` entries: the whole environment.
    pub env: Vec<String>,
    pub cwd: std::path::PathBuf,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// The container's hostname; `None` keeps the bundle's.
    #[serde(default)]
    pub hostname: Option<String>,
}

const MAX_MESSAGE: usize = 64 * 1024;

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// A new connected pair: `(parent end, child end)`, both close-on-exec.
pub fn channel() -> SysResult<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "socketpair for init synchronisation".into())?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> SysResult<()> {
        let bytes =
            serde_json::to_vec(msg).map_err(|_| SysError::invalid("encode sync message"))?;
        nix::sys::socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
            .ctx(|| format!("send {msg:?} to sync socket"))?;
        Ok(())
    }

    /// Receives one message; `None` when the other end closed (the peer died).
    pub fn recv(&self) -> SysResult<Option<Message>> {
        // The message's size first (a seqpacket peek with MSG_TRUNC), so that the buffer
        // is the message's: zeroing one of MAX_MESSAGE costs a copy-on-write fault per
        // page in a freshly forked process, on the path of every create.
        let size = self.recv_into(&mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC)?;
        if size == 0 {
            return Ok(None);
        }
        if size > MAX_MESSAGE {
            return Err(SysError::invalid(format!(
                "sync message of {size} bytes (at most {MAX_MESSAGE})"
            )));
        }
        let mut buf = vec![0u8; size];
        let n = self.recv_into(&mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|_| SysError::invalid("decode sync message"))
    }

    fn recv_into(&self, buf: &mut [u8], flags: MsgFlags) -> SysResult<usize> {
        loop {
            match nix::sys::socket::recv(self.fd.as_raw_fd(), buf, flags) {
                Err(nix::Error::EINTR) => continue,
                other => return other.ctx(|| "receive from sync socket".into()),
            }
        }
    }

    /// Moves the fd to a number at or above `min` (close-on-exec), so that it cannot
    /// collide with the fds the container keeps (`--preserve-fds`).
    pub fn move_above(&mut self, min: RawFd) -> SysResult<()> {
        self.fd = dup_above(&self.fd, min)?;
        Ok(())
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `fcntl(F_DUPFD_CLOEXEC, min)`; the old fd is closed when dropped by the caller.
pub fn dup_above(fd: &OwnedFd, min: RawFd) -> SysResult<OwnedFd> {
    use std::os::fd::FromRawFd;
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))
        .ctx(|| format!("dup fd {} above {min}", fd.as_raw_fd()))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sends `fd` over a unix socket with `SCM_RIGHTS` (the console socket protocol: the
/// payload is the pty's name, as runc sends it).
pub fn send_fd(sock: &impl AsFd, fd: &impl AsFd, name: &str) -> SysResult<()> {
    let fds = [fd.as_fd().as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send pty master to console socket".into())?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(sock: &impl AsFd) -> SysResult<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receive fd from console socket".into())?;
    for c in msg.cmsgs().ctx(|| "read control messages".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel installed this fd in our table for us alone.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(SysError::invalid("console socket message carried no fd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = channel().unwrap();
        a.send(&Message::Error("mount /proc: EPERM".into()))
            .unwrap();
        a.send(&Message::Ready).unwrap();
        assert_eq!(
            b.recv().unwrap(),
            Some(Message::Error("mount /proc: EPERM".into()))
        );
        assert_eq!(b.recv().unwrap(), Some(Message::Ready));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    /// A message's buffer is sized from the message (peeked with MSG_TRUNC): a large one
    /// arrives whole.
    #[test]
    fn a_large_message_arrives_whole() {
        let (a, b) = channel().unwrap();
        let late = LateProcess {
            args: vec!["sh".into(), "-c".into(), "x".repeat(40_000)],
            env: vec!["A=b".into()],
            cwd: "/".into(),
            uid: 1,
            gid: 2,
            additional_gids: vec![3],
            hostname: Some("h".into()),
        };
        a.send(&Message::Process(late.clone())).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::Process(late)));
    }
}
