//! The messages between the service and the launcher: one JSON document per
//! `SOCK_SEQPACKET` packet (the kernel keeps the boundaries), and between a monitor and
//! the launcher (one JSON document on a pipe, then EOF).
//!
//! The launcher speaks first ([`Message::Hello`]). Requests carry a sequence number that
//! the reply repeats: several creates can be in flight at once, each in its own monitor.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::MsgFlags;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{ErrorKind, LauncherError};

/// Bumped on any incompatible change; the client refuses a launcher that says otherwise
/// (for example a binary replaced on disk while the service runs).
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 64 * 1024;

/// The default cap of each log file (`stdout.log`, `stderr.log`).
pub const DEFAULT_LOG_LIMIT: u64 = 64 * 1024 * 1024;

fn default_log_limit() -> u64 {
    DEFAULT_LOG_LIMIT
}

/// Create a container from a bundle; its stdio goes to log files in `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The container's data directory: `stdout.log`, `stderr.log`, `exit.json`. Absolute,
    /// inside the launcher's `--data`; created if missing.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// The cap of each log file in bytes: output past it is read and dropped.
    #[serde(default = "default_log_limit")]
    pub log_limit: u64,
    /// The config is the service's sandbox (a container from an image): its resources
    /// are memory, CPU, pids and devices, so its cgroup is made only in the hierarchies
    /// of those and of the measures and freezer ([`SANDBOX_CONTROLLERS`]). An uploaded
    /// bundle may set any resource: its cgroup is made in every hierarchy.
    #[serde(default)]
    pub sandbox: bool,
}

/// The cgroup v1 controllers of a sandbox container (see [`CreateRequest::sandbox`]).
pub const SANDBOX_CONTROLLERS: &[&str] =
    &["cpu", "cpuacct", "memory", "pids", "devices", "freezer"];

/// Execute the judged run whose `plan.json` is in `dir` (see `service::runs`).
/// A container from an image, out of the launcher's warm containers of that image (see
/// `launcher::warm`). The launcher answers `Created`, an error, or `NotWarm` when it
/// holds no warm container for it (the service then creates one the usual way); either
/// way it makes one ready for the next request of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub id: String,
    /// The container's directory in the data dir: created empty by the service, to be
    /// replaced by the warm container's (bundle, rootfs, logs).
    pub data_dir: PathBuf,
    #[serde(default = "default_log_limit")]
    pub log_limit: u64,
    /// The image's name and its rootfs directory (the overlay's lower layer).
    pub image: String,
    pub image_rootfs: PathBuf,
    /// The size of the container's writable layer.
    pub layer_bytes: u64,
    /// The request: the container's process and limits.
    pub params: crate::service::sandbox::Params,
    /// How many warm containers of the image to keep ready.
    pub warm: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Absolute, inside the launcher's `--data`.
    pub dir: PathBuf,
}

/// service -> launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub seq: u64,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create(CreateRequest),
    Claim(ClaimRequest),
    Run(RunRequest),
    Ping,
}

/// launcher -> service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Sent once, when the launcher is ready for requests.
    Hello {
        version: u32,
        pid: i32,
    },
    Reply {
        seq: u64,
        outcome: Outcome,
    },
}

/// The result of a request; also what a monitor reports to the launcher after create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The container is created (its init waits for `start`); `pid` in the host's pid
    /// namespace.
    Created {
        pid: i32,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    Pong,
    /// The run is done: its `result.json` is written.
    Ran,
    /// No warm container for a [`ClaimRequest`].
    NotWarm,
}

/// Error messages longer than this are cut (so that a reply always fits a packet).
const MAX_MESSAGE: usize = 8 * 1024;

impl Outcome {
    pub fn error(e: &LauncherError) -> Self {
        let mut message = e.to_string();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        Outcome::Error {
            kind: e.kind(),
            message,
        }
    }
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, LauncherError> {
    let bytes = serde_json::to_vec(msg)
        .map_err(|e| LauncherError::Protocol(format!("encode message: {e}")))?;
    if bytes.len() > MAX_PACKET {
        return Err(LauncherError::Protocol(format!(
            "message of {} bytes exceeds {MAX_PACKET}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LauncherError> {
    serde_json::from_slice(bytes)
        .map_err(|e| LauncherError::Protocol(format!("decode message: {e}")))
}

/// Sends one packet; never raises `SIGPIPE`.
/// A connected pair of close-on-exec `SOCK_SEQPACKET` unix sockets: the channel of the
/// service to its launcher and of the launcher to each runner (one message a packet).
pub fn packet_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

pub fn send_packet(fd: BorrowedFd<'_>, bytes: &[u8]) -> nix::Result<()> {
    loop {
        match nix::sys::socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Err(nix::Error::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Receives one packet into `buf` (of `MAX_PACKET + 1` bytes); `Ok(None)` at EOF. A
/// packet that fills the buffer was larger than `MAX_PACKET` and truncated: an error.
pub fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<Option<usize>> {
    let n = loop {
        match nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Err(nix::Error::EINTR) => continue,
            other => break other?,
        }
    };
    match n {
        0 => Ok(None),
        n if n >= buf.len() => Err(nix::Error::EMSGSIZE),
        n => Ok(Some(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_defaults() {
        let req = Request {
            seq: 7,
            op: Op::Create(CreateRequest {
                id: "c1".into(),
                bundle: "/b".into(),
                data_dir: "/d/c1".into(),
                systemd_cgroup: false,
                log_limit: 5,
                sandbox: true,
            }),
        };
        assert_eq!(decode::<Request>(&encode(&req).unwrap()).unwrap(), req);
        let minimal = br#"{"seq":1,"op":{"create":{"id":"a","bundle":"/b","data_dir":"/d"}}}"#;
        let Op::Create(c) = decode::<Request>(minimal).unwrap().op else {
            panic!("not a create")
        };
        assert_eq!(c.log_limit, DEFAULT_LOG_LIMIT);
        let reply = Message::Reply {
            seq: 7,
            outcome: Outcome::Error {
                kind: ErrorKind::AlreadyExists,
                message: "x".into(),
            },
        };
        let text = String::from_utf8(encode(&reply).unwrap()).unwrap();
        assert!(text.contains("\"already_exists\""), "{text}");
    }

    #[test]
    fn claims_round_trip() {
        let req = Request {
            seq: 3,
            op: Op::Claim(ClaimRequest {
                id: "c1".into(),
                data_dir: "/d/containers/c1".into(),
                log_limit: 9,
                image: "busybox".into(),
                image_rootfs: "/d/images/busybox/rootfs".into(),
                layer_bytes: 1 << 20,
                params: crate::service::sandbox::Params {
                    args: vec!["sh".into()],
                    env: vec!["PATH=/bin".into()],
                    cwd: "/".into(),
                    uid: 1,
                    gid: 2,
                    memory_bytes: 64 << 20,
                    pids: 10,
                    cpu_quota_us: 50_000,
                },
                warm: 1,
            }),
        };
        assert_eq!(decode::<Request>(&encode(&req).unwrap()).unwrap(), req);
        let reply = Message::Reply {
            seq: 3,
            outcome: Outcome::NotWarm,
        };
        assert_eq!(decode::<Message>(&encode(&reply).unwrap()).unwrap(), reply);
    }

    #[test]
    fn oversized_packets_are_refused() {
        let (a, b) = packet_pair().unwrap();
        use std::os::fd::AsFd;
        send_packet(a.as_fd(), &vec![b'x'; MAX_PACKET + 10]).unwrap();
        send_packet(a.as_fd(), b"ok").unwrap();
        let mut buf = vec![0; MAX_PACKET + 1];
        assert_eq!(recv_packet(b.as_fd(), &mut buf), Err(nix::Error::EMSGSIZE));
        assert_eq!(recv_packet(b.as_fd(), &mut buf), Ok(Some(2)));
        drop(a);
        assert_eq!(recv_packet(b.as_fd(), &mut buf), Ok(None));
    }
}
