//! `process.terminal` with `--console-socket`: the runtime sends the pty master over the
//! socket with SCM_RIGHTS; the test talks to the container through it.

mod common;

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Bundle, Corral, Outcome, tempdir};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

struct Console {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl Console {
    fn new() -> Self {
        let dir = tempdir("corral-console-");
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener.set_nonblocking(true).unwrap();
        Console {
            _dir: dir,
            path,
            listener,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Accepts the runtime's connection (failing early if `child` exits first) and
    /// receives the pty master.
    fn receive_master(&self, mut child: Option<&mut Child>) -> OwnedFd {
        let deadline = Instant::now() + LIMIT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept on console socket: {e}"),
            }
            if let Some(ch) = child.as_deref_mut()
                && let Some(st) = ch.try_wait().unwrap()
            {
                panic!("corral exited ({st}) without connecting to the console socket");
            }
            assert!(
                Instant::now() < deadline,
                "nobody connected to the console socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        recv_fd(&stream)
    }
}

fn recv_fd(stream: &UnixStream) -> OwnedFd {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg on the console socket");
    for c in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            assert_eq!(fds.len(), 1, "expected exactly one fd, got {fds:?}");
            // SAFETY: the kernel just installed this fd for us alone.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("the console socket message carried no fd");
}

/// Everything the container writes to its terminal, until the last slave fd closes.
fn read_all(master: &OwnedFd) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the pty never closed; read so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(30_000) as i32).unwrap();
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => panic!("poll pty: {e}"),
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::Error::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
            Err(e) => panic!("read pty: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tty_bundle(script: &str) -> Bundle {
    let mut b = Bundle::new();
    b.set("/process/terminal", json!(true)).sh(script);
    b
}

fn spawn_run(c: &Corral, id: &str, b: &Bundle, console: &Console) -> Child {
    b.write();
    c.track(id);
    c.cmd()
        .args(["run", "--console-socket", console.path(), "--bundle"])
        .arg(b.path())
        .arg(id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral run")
}

fn finish(child: Child) -> Outcome {
    Outcome::from_output(
        "corral run --console-socket",
        child.wait_with_output().unwrap(),
    )
}

#[test]
fn run_with_a_terminal() {
    let c = Corral::new("tty-run");
    let id = c.id("a");
    let console = Console::new();
    let b = tty_bundle("tty; echo hi; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; exit 5");
    let mut child = spawn_run(&c, &id, &b, &console);
    let master = console.receive_master(Some(&mut child));
    let text = read_all(&master);
    let out = finish(child).code_is(5);
    assert_eq!(text, "/dev/pts/0\r\nhi\r\nall-tty\r\n", "{out}");
    assert_eq!(
        out.stdout, "",
        "container output leaked to corral's stdout: {out}"
    );
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn terminal_input_reaches_the_container() {
    let c = Corral::new("tty-input");
    let id = c.id("a");
    let console = Console::new();
    let b = tty_bundle("stty -echo; echo ready; read line; echo \"got:$line\"");
    let mut child = spawn_run(&c, &id, &b, &console);
    let master = console.receive_master(Some(&mut child));
    // Wait for the prompt, so that echo is off before we type.
    let mut seen = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while !String::from_utf8_lossy(&seen).contains("ready") {
        assert!(
            Instant::now() < deadline,
            "no prompt: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u16)).unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = nix::unistd::read(&master, &mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    nix::unistd::write(&master, b"typed words\n").unwrap();
    let text = read_all(&master);
    finish(child).ok();
    assert_eq!(text, "got:typed words\r\n");
}

#[test]
fn console_size() {
    let c = Corral::new("tty-size");
    let id = c.id("a");
    let console = Console::new();
    let mut b = tty_bundle("stty size");
    b.set("/process/consoleSize", json!({"height": 30, "width": 100}));
    let mut child = spawn_run(&c, &id, &b, &console);
    let master = console.receive_master(Some(&mut child));
    let text = read_all(&master);
    finish(child).ok();
    assert_eq!(text, "30 100\r\n");
}

#[test]
fn create_then_start_with_a_terminal() {
    let c = Corral::new("tty-create");
    let id = c.id("a");
    let console = Console::new();
    let b = tty_bundle("echo started; tty");
    // The runtime connects and sends the master during create; nobody needs to accept
    // before create returns.
    c.create_with(&id, &b, &["--console-socket", console.path()])
        .ok();
    let master = console.receive_master(None);
    assert_eq!(c.status(&id), "created");
    c.start(&id).ok();
    let text = read_all(&master);
    assert_eq!(text, "started\r\n/dev/pts/0\r\n");
    c.wait_status(&id, "stopped", LIMIT);
    c.delete(&id).ok();
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn terminal_without_console_socket_fails() {
    let c = Corral::new("tty-nosock");
    let id = c.id("a");
    let b = tty_bundle("true");
    c.create(&id, &b)
        .one_line_error(&["terminal", "--console-socket"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn console_socket_without_terminal_fails() {
    let c = Corral::new("tty-noterm");
    let id = c.id("a");
    let console = Console::new();
    let mut b = Bundle::new();
    b.args(&["true"]);
    c.create_with(&id, &b, &["--console-socket", console.path()])
        .one_line_error(&["terminal", "console-socket"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn missing_console_socket_fails() {
    let c = Corral::new("tty-missing");
    let id = c.id("a");
    let dir = tempdir("corral-console-");
    let sock = dir.path().join("nobody-listens.sock");
    let b = tty_bundle("true");
    c.create_with(&id, &b, &["--console-socket", sock.to_str().unwrap()])
        .one_line_error(&[sock.to_str().unwrap(), "No such file"]);
    c.assert_nothing_left(&id, Some(&b));
    assert!(!Path::new(&sock).exists());
}
