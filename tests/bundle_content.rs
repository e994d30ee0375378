//! Uploaded bundles whose rootfs content is hostile or unusable where the runtime needs a
//! file or a directory (`/dev/null` a symlink to a host file, `/proc` a regular file, ...):
//! the service refuses them with a 4xx problem that names the path, never a 500 (which
//! would mean the service itself failed). Containers are real (root required).

use std::path::Path;

use serde_json::{Value, json};

mod common;

use common::server::{Server, USER, answer, client};

/// A tar header for a root-owned entry of `size` bytes with `mode`.
fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// What the test puts in the rootfs after the busybox tree (later entries replace
/// earlier ones of the same name).
enum Extra {
    Symlink(&'static str, &'static str),
    File(&'static str),
}

/// A bundle tar: `config.json` + `rootfs/` (the busybox test rootfs) + `extra`.
fn bundle_tar(config: &Value, extra: &[Extra]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let data = serde_json::to_vec(config).unwrap();
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    b.append_data(&mut h, "config.json", &data[..]).unwrap();
    b.append_dir_all("rootfs", common::rootfs()).unwrap();
    for e in extra {
        match e {
            Extra::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, format!("rootfs/{path}"), target)
                    .unwrap();
            }
            Extra::File(path) => {
                let mut h = header(tar::EntryType::Regular, 1, 0o644);
                b.append_data(&mut h, format!("rootfs/{path}"), &b"x"[..])
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The service's sandbox config (passes the user-token policy), without the `/dev` tmpfs
/// when `dev_tmpfs` is false, so that the rootfs's own `/dev` is used.
fn config(dev_tmpfs: bool) -> Value {
    let args = vec!["true".to_string()];
    let caps = corral::service::sandbox::default_caps();
    let req = corral::service::sandbox::SandboxRequest {
        id: "b",
        args: &args,
        env: &["PATH=/bin".to_string()],
        cwd: "/",
        uid: 0,
        gid: 0,
        memory_bytes: 64 << 20,
        pids: 64,
        cpus: 1.0,
        capabilities: &caps,
    };
    let spec = corral::service::sandbox::spec(&req, Path::new("rootfs")).unwrap();
    let mut v = serde_json::to_value(spec).unwrap();
    if !dev_tmpfs {
        v["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != json!("/dev"));
    }
    v
}

async fn upload(s: &Server, id: &str, body: Vec<u8>) -> (u16, Value) {
    let req = client()
        .post(s.url(&format!("/v1/containers?id={id}")))
        .bearer_auth(USER)
        .header("content-type", "application/x-tar")
        .body(body);
    answer(req.send().await.unwrap()).await
}

/// Each case: whether the config mounts a tmpfs on `/dev`, what the rootfs holds, and
/// the path the refusal must name. Before the runtime marked these failures as the
/// container's own, they were 500s (`init: create device /dev/null: ...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_content_in_the_runtimes_way_is_a_4xx_naming_the_path() {
    let s = Server::start();
    let cases: Vec<(bool, Vec<Extra>, &str)> = vec![
        (
            false,
            vec![Extra::Symlink("dev/null", "/proc/sys/kernel/core_pattern")],
            "/dev/null",
        ),
        // The bundle.
        (
            false,
            vec![
                Extra::Symlink("dev/null", "/proc/sys/kernel/core_pattern"),
                Extra::Symlink("dev/console", "/etc/passwd"),
                Extra::Symlink("dev/ptmx", "/etc/shadow"),
            ],
            "/dev/null",
        ),
        (
            false,
            vec![Extra::Symlink("dev/tty", "/etc/passwd")],
            "/dev/tty",
        ),
        (false, vec![Extra::File("dev/zero")], "/dev/zero"),
        (true, vec![Extra::File("proc")], "/proc"),
        (true, vec![Extra::File("dev")], "/dev"),
        (true, vec![Extra::Symlink("proc", "proc")], "/proc"),
    ];
    for (i, (dev_tmpfs, extra, path)) in cases.into_iter().enumerate() {
        let id = format!("content{i}");
        let (st, v) = upload(&s, &id, bundle_tar(&config(dev_tmpfs), &extra)).await;
        assert!(st == 400 || st == 403, "case {i} ({path}): {st} {v}");
        assert!(
            [
                "urn:corral:problem:bad-request",
                "urn:corral:problem:policy-violation"
            ]
            .contains(&v["type"].as_str().unwrap_or_default()),
            "case {i}: {v}"
        );
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(path), "case {i}: {path} not named: {v}");
        assert!(
            !s.data().join("containers").join(&id).exists(),
            "case {i}: refused bundle left on disk"
        );
    }
}
