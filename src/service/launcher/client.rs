//! The service's side: [`Launcher`] starts `corral launcher` and sends it requests.
//!
//! Requests carry sequence numbers and replies are routed back by a reader task, so
//! that creates from concurrent HTTP requests overlap (each runs in its own monitor)
//! instead of queueing behind a lock. A send is one `send(2)` of one packet, atomic on
//! a `SOCK_SEQPACKET` socket, so writers need no lock either.
//!
//! When the launcher dies, the requests in flight fail with [`LauncherError::Gone`] (a
//! create is not retried: it may have happened), and the next request starts a new
//! launcher. Containers and monitors do not depend on the launcher.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use super::error::LauncherError;
use super::protocol::{
    ClaimRequest, CreateRequest, MAX_PACKET, Message, Op, Outcome, PROTOCOL_VERSION, Request,
    RunRequest, decode, encode, packet_pair, recv_packet, send_packet,
};
use super::server::SERVICE_FD;

/// How long a new launcher has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for the launcher to exit before killing it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client of the launcher process. Cheap to share (`Arc<Launcher>`): every method
/// takes `&self`.
pub struct Launcher {
    exe: PathBuf,
    pub(super) root: PathBuf,
    data: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
    seq: AtomicU64,
}

impl Launcher {
    /// Starts `exe launcher --root <root> --data <data>` (the service passes
    /// `/proc/self/exe`, which stays its own binary even if the file is replaced).
    pub async fn spawn(exe: &Path, root: &Path, data: &Path) -> Result<Self, LauncherError> {
        let conn = Conn::spawn(exe, root, data).await?;
        Ok(Launcher {
            exe: exe.to_path_buf(),
            root: root.to_path_buf(),
            data: data.to_path_buf(),
            conn: Mutex::new(Some(Arc::new(conn))),
            seq: AtomicU64::new(1),
        })
    }

    /// Creates a container through the launcher; returns its init's pid. The error's
    /// [`kind`](LauncherError::kind) tells a bad request from a duplicate id or a failure.
    pub async fn create(&self, req: CreateRequest) -> Result<i32, LauncherError> {
        match self.call(Op::Create(req)).await? {
            Outcome::Created { pid } => Ok(pid),
            Outcome::Error { kind, message } => Err(LauncherError::Refused { kind, message }),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a container from a warm container of its image: its init's pid, or `None`
    /// when the launcher holds none that fits (it makes one for the next request).
    pub async fn claim(&self, req: ClaimRequest) -> Result<Option<i32>, LauncherError> {
        match self.call(Op::Claim(req)).await? {
            Outcome::Created { pid } => Ok(Some(pid)),
            Outcome::NotWarm => Ok(None),
            Outcome::Error { kind, message } => Err(LauncherError::Refused { kind, message }),
            other => Err(unexpected(&other)),
        }
    }

    /// Executes the judged run prepared in `dir`; returns once its `result.json` is
    /// written.
    pub async fn run(&self, dir: PathBuf) -> Result<(), LauncherError> {
        match self.call(Op::Run(RunRequest { dir })).await? {
            Outcome::Ran => Ok(()),
            Outcome::Error { kind, message } => Err(LauncherError::Refused { kind, message }),
            other => Err(unexpected(&other)),
        }
    }

    /// A round trip to the launcher (starting a new one if it is gone).
    pub async fn ping(&self) -> Result<(), LauncherError> {
        match self.call(Op::Ping).await? {
            Outcome::Pong => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The pid of the current launcher process, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        self.conn
            .lock()
            .await
            .as_ref()
            .filter(|c| c.alive())
            .map(|c| c.pid)
    }

    /// Closes the socket, so that the launcher exits, and waits for it (killing it after
    /// a timeout). Containers and their monitors go on; runners exit with the launcher,
    /// removing the run containers they keep.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// [`Launcher::shutdown`] through a shared handle: a later call starts a new
    /// launcher.
    pub async fn stop(&self) {
        let Some(conn) = self.conn.lock().await.take() else {
            return;
        };
        let child = conn.child.lock().ok().and_then(|mut c| c.take());
        drop(conn);
        if let Some(mut child) = child
            && tokio::time::timeout(EXIT_TIMEOUT, child.wait())
                .await
                .is_err()
        {
            tracing::warn!("launcher did not exit in {EXIT_TIMEOUT:?}: killing it");
            let _ = child.kill().await;
        }
    }

    async fn call(&self, op: Op) -> Result<Outcome, LauncherError> {
        let conn = self.connection().await?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        conn.call(Request { seq, op }).await
    }

    /// The live connection, or a new launcher if the last one is gone.
    async fn connection(&self) -> Result<Arc<Conn>, LauncherError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.alive()) {
            return Ok(c.clone());
        }
        if let Some(old) = guard.take() {
            tracing::warn!("launcher (pid {}) is gone: starting a new one", old.pid);
        }
        let conn = Arc::new(Conn::spawn(&self.exe, &self.root, &self.data).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }
}

fn unexpected(outcome: &Outcome) -> LauncherError {
    LauncherError::Protocol(format!("unexpected reply {outcome:?}"))
}

/// Requests waiting for their reply; `None` once the connection is closed.
type Waiters = Arc<StdMutex<Option<HashMap<u64, oneshot::Sender<Outcome>>>>>;

/// One launcher process and the socket to it.
struct Conn {
    pid: u32,
    sock: Arc<AsyncFd<OwnedFd>>,
    waiters: Waiters,
    reader: JoinHandle<()>,
    /// Taken by `shutdown` to wait for the exit; otherwise dropped with the connection
    /// (tokio then reaps the process in the background).
    child: StdMutex<Option<Child>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The reader holds the socket too: stop it, so that the launcher sees EOF.
        self.reader.abort();
    }
}

impl Conn {
    async fn spawn(exe: &Path, root: &Path, data: &Path) -> Result<Self, LauncherError> {
        let (ours, theirs) =
            packet_pair().map_err(LauncherError::sys("socketpair for the launcher"))?;
        nix::fcntl::fcntl(&ours, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(LauncherError::sys("set the launcher socket non-blocking"))?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg("launcher")
            .arg("--root")
            .arg(root)
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Out of the service's process group: a Ctrl-C meant for the service is
            // the service's to handle; the launcher exits when its socket closes.
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // dup2(2) and fcntl(2), which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let r = if theirs_raw == SERVICE_FD {
                    // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                    libc::fcntl(SERVICE_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(theirs_raw, SERVICE_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| LauncherError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        // SAFETY: `ours` is an OwnedFd, moved into the AsyncFd: it stays open and the same
        // fd until the AsyncFd is dropped, and OwnedFd::as_raw_fd always returns it.
        let registered = unsafe { AsyncFd::register(ours) };
        let sock = Arc::new(registered.map_err(|e| LauncherError::Io {
            op: "register the launcher socket".into(),
            source: e.into(),
        })?);
        match tokio::time::timeout(HELLO_TIMEOUT, recv(&sock)).await {
            Ok(Ok(Some(Message::Hello { version, .. }))) if version == PROTOCOL_VERSION => {}
            outcome => {
                let _ = child.start_kill();
                let status = match child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("unknown ({e})"),
                };
                let reason = match outcome {
                    Ok(Ok(Some(Message::Hello { version, .. }))) => {
                        format!("it speaks protocol {version}, this service {PROTOCOL_VERSION}")
                    }
                    Ok(Ok(Some(other))) => format!("it sent {other:?} before hello"),
                    Ok(Ok(None)) => format!("it exited before hello ({status})"),
                    Ok(Err(e)) => format!("{e} ({status})"),
                    Err(_) => format!("no hello within {HELLO_TIMEOUT:?}"),
                };
                return Err(LauncherError::Gone { pid, reason });
            }
        }
        let waiters: Waiters = Arc::new(StdMutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_replies(sock.clone(), waiters.clone()));
        Ok(Conn {
            pid,
            sock,
            waiters,
            reader,
            child: StdMutex::new(Some(child)),
        })
    }

    /// Whether the socket is open and the process has not exited (checked both ways:
    /// the reader may not have seen the EOF of a launcher that died a moment ago).
    fn alive(&self) -> bool {
        let open = self.waiters.lock().is_ok_and(|w| w.is_some());
        let running = match self.child.lock() {
            Ok(mut c) => c.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(None))),
            Err(_) => false,
        };
        open && running
    }

    fn gone(&self, reason: &str) -> LauncherError {
        LauncherError::Gone {
            pid: self.pid,
            reason: reason.into(),
        }
    }

    async fn call(&self, req: Request) -> Result<Outcome, LauncherError> {
        let bytes = encode(&req)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self
                .waiters
                .lock()
                .map_err(|_| self.gone("reply table poisoned"))?;
            let Some(w) = waiters.as_mut() else {
                return Err(self.gone("socket closed"));
            };
            w.insert(req.seq, tx);
        }
        if let Err(e) = send(&self.sock, &bytes).await {
            if let Ok(mut w) = self.waiters.lock()
                && let Some(w) = w.as_mut()
            {
                w.remove(&req.seq);
            }
            return Err(self.gone(&format!("send: {e}")));
        }
        rx.await
            .map_err(|_| self.gone("socket closed before the reply"))
    }
}

/// Routes replies to their waiters until the socket closes; then fails the rest.
async fn read_replies(sock: Arc<AsyncFd<OwnedFd>>, waiters: Waiters) {
    loop {
        match recv(&sock).await {
            Ok(Some(Message::Reply { seq, outcome })) => {
                let tx = waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.as_mut()?.remove(&seq));
                match tx {
                    // The caller may have given up (its future dropped): nothing to do.
                    Some(tx) => drop(tx.send(outcome)),
                    None => tracing::warn!("launcher replied to unknown request {seq}"),
                }
            }
            Ok(Some(other)) => tracing::warn!("unexpected message from the launcher: {other:?}"),
            Err(LauncherError::Protocol(e)) => tracing::warn!("launcher: {e}"),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("{e}");
                break;
            }
        }
    }
    // Dropping the senders fails every waiting call with "socket closed".
    if let Ok(mut w) = waiters.lock() {
        *w = None;
    }
}

async fn send(sock: &AsyncFd<OwnedFd>, bytes: &[u8]) -> std::io::Result<()> {
    sock.async_io(Interest::WRITABLE, |fd| {
        send_packet(fd.as_fd(), bytes).map_err(std::io::Error::from)
    })
    .await
}

/// The next message; `None` at EOF, `Protocol` for one that does not decode.
async fn recv(sock: &AsyncFd<OwnedFd>) -> Result<Option<Message>, LauncherError> {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let n = sock
        .async_io(Interest::READABLE, |fd| {
            recv_packet(fd.as_fd(), &mut buf).map_err(std::io::Error::from)
        })
        .await;
    match n {
        Ok(Some(n)) => decode(&buf[..n]).map(Some),
        Ok(None) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(LauncherError::Protocol(
            format!("message larger than {MAX_PACKET} bytes"),
        )),
        Err(e) => Err(LauncherError::io("receive from the launcher")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}

    /// The service keeps the client in shared state and awaits it in handlers.
    #[allow(dead_code)]
    fn usable_from_any_task(l: &Launcher, req: CreateRequest) {
        send_sync(l);
        send(l.create(req));
        send(l.ping());
        send(l.start("a"));
    }
}
