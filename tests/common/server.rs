//! A `corral serve` on a random loopback port with its own root, data dir and tokens,
//! and a small JSON client: for the tests that drive the HTTP API.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN: &str = "admin-token-0123456789abcdefghijklmnopqrstuvwxyz";
pub const USER: &str = "user-token-0123456789abcdefghijklmnopqrstuvwxyzAB";

/// A running `corral serve` with its own root, data dir and tokens.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with("")
    }

    /// `extra` is appended to the TOML config (for example `[limits]` overrides).
    pub fn start_with(extra: &str) -> Server {
        super::require_root();
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("admin {ADMIN} admin\nuser {USER} alice\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("corral.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nroot = \"{}\"\ndata = \"{}\"\ntokens = \"{}\"\n{extra}",
                dir.path().join("run").display(),
                dir.path().join("data").display(),
                tokens.display()
            ),
        )
        .unwrap();
        let mut s = Server {
            child: None,
            base: String::new(),
            dir,
            config,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CORRAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let base = loop {
            assert!(Instant::now() < deadline, "server did not start: {seen:?}");
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(addr) = l.strip_prefix("corral: listening on ") {
                        break addr.trim().to_string();
                    }
                    seen.push(l);
                }
                _ => panic!("server exited before listening: {seen:?}"),
            }
        };
        // Keep draining stderr so the server never blocks on it; its lines go to the
        // test's output (shown when the test fails).
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("server: {l}");
            }
        });
        self.base = base;
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM (graceful), as an operator restarting it would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// The service's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The address the service listens on (`127.0.0.1:port`).
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Force-delete whatever the test left, through the runtime, then stop.
        let root = self.dir.path().join("run");
        let out = Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new(env!("CARGO_BIN_EXE_corral"))
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .status();
            }
        }
        self.stop();
        // The runs tmpfs, if the service could not unmount it (its runners were still
        // removing containers).
        let _ = nix::mount::umount2(&self.data().join("runs"), nix::mount::MntFlags::MNT_DETACH);
        // Unmount container rootfs overlays the test left (warm containers' and those
        // of deleted containers being removed included).
        let containers = self.data().join("containers");
        for dir in [
            containers.clone(),
            containers.join(".warm"),
            containers.join(".trash"),
        ] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let _ = corral::images::ContainerRootfs::unmount(&e.path());
            }
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(req.send().await.unwrap()).await
}

/// Status and body (JSON, else the text as a string) of a response; an error must be
/// a problem document.
pub async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    if status >= 400 {
        assert!(
            ctype.starts_with("application/problem+json"),
            "{status} without a problem document: {ctype} {text}"
        );
    }
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// A rootfs tar of the test rootfs (busybox) with `/marker` holding `marker`.
pub fn image_tar(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", super::rootfs()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(marker.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "marker", marker.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

/// Imports [`image_tar`]`(marker)` as image `name` (201 expected).
pub async fn upload_image(s: &Server, name: &str, marker: &str) {
    let resp = client()
        .post(s.url(&format!("/v1/images?name={name}")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-tar")
        .body(image_tar(marker))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 201, "{}", resp.text().await.unwrap());
}
