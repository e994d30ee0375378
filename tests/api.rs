//! End-to-end tests of `corral serve`: the real server on a random loopback port with
//! temporary directories, driven over HTTP. Containers are real (root required).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::server::{ADMIN, Server, USER, answer, call, client, upload_image};

/// The containers' directories in the service's data dir (its own dot-directories of
/// warm containers and of removals in progress left out).
fn containers_in(s: &Server) -> Vec<String> {
    std::fs::read_dir(s.data().join("containers"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The cgroup path the runtime recorded for container `id` (`/corral/...`).
fn cgroup_of(s: &Server, id: &str) -> String {
    let state = std::fs::read(s.dir.path().join("run").join(id).join("state.json")).unwrap();
    let v: Value = serde_json::from_slice(&state).unwrap();
    v["cgroupPath"].as_str().unwrap().to_string()
}

async fn metrics(s: &Server) -> String {
    let resp = client()
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// The value of the metric line `name` (`0` when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (up to 20 s) until the service holds a warm container.
async fn until_warm(s: &Server) {
    until_warm_n(s, 1).await
}

/// Waits (up to 20 s) until the service holds `n` warm containers.
async fn until_warm_n(s: &Server, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics(s).await, "corral_containers_warm") < f64::from(n) {
        assert!(Instant::now() < deadline, "no warm container was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn problem_type(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

async fn create(s: &Server, body: Value) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        &s.url("/v1/containers"),
        Some(USER),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_auth() {
    let s = Server::start();
    let (st, v) = call(reqwest::Method::GET, &s.url("/healthz"), None, None).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")));
    let (st, v) = call(reqwest::Method::GET, &s.url("/v1/info"), None, None).await;
    assert_eq!(st, 401);
    assert_eq!(problem_type(&v), "urn:corral:problem:unauthorized");
    let (st, _) = call(
        reqwest::Method::GET,
        &s.url("/v1/info"),
        Some("wrong-token-0123456789abcdefghijklmnopqrstuv"),
        None,
    )
    .await;
    assert_eq!(st, 401);
    let (st, v) = call(reqwest::Method::GET, &s.url("/v1/info"), Some(USER), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["cgroup_mode"].as_str(), Some("hybrid"));
    assert!(v["features"]["ociVersionMax"].is_string());
    // A user token cannot import or delete images.
    let (st, v) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/images/busybox"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(reqwest::Method::GET, &s.url("/v1/images"), Some(USER), None).await;
    assert_eq!(st, 200);
    assert!(
        v.as_array().unwrap().iter().any(|i| i["name"] == "busybox"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_from_image() {
    let s = Server::start();
    let (st, v) = create(
        &s,
        json!({"id": "life1", "image": "busybox",
        "process": {"args": ["sh", "-c", "echo hi; echo err >&2; exit 3"]}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["status"], "created");
    assert!(v["pid"].as_i64().unwrap() > 0);
    let (st, v) = create(&s, json!({"id": "life1", "image": "busybox"})).await;
    assert_eq!(
        (st, problem_type(&v)),
        (409, "urn:corral:problem:already-exists")
    );
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/life1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/life1/wait?timeout=20"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    assert_eq!(v["status"], "stopped");
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/life1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 409, "start of a stopped container: {v}");
    let logs = client()
        .get(s.url("/v1/containers/life1/logs?stream=stdout"))
        .bearer_auth(USER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "hi\n");
    let logs = client()
        .get(s.url("/v1/containers/life1/logs?stream=stderr"))
        .bearer_auth(USER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "err\n");
    let (st, _) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/life1/logs?stream=nope"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 400);
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let cgroup = format!("/sys/fs/cgroup/memory{}", cgroup_of(&s, "life1"));
    assert!(Path::new(&cgroup).exists(), "{cgroup}");
    let (st, _) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/containers/life1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/life1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (404, "urn:corral:problem:not-found")
    );
    assert!(
        !s.data().join("containers/life1").exists(),
        "container directory left behind"
    );
    assert!(!Path::new(&cgroup).exists(), "cgroup {cgroup} left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_from_an_image_take_warm_containers() {
    let mut s = Server::start();
    let script = "echo host=$(hostname) ids=$(id -u):$(id -g) pwd=$(pwd) x=$X; \
        cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
        /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares";
    for i in 0..4i64 {
        let id = format!("warm{i}");
        // The first create of the image is made at the request, and leaves a warm
        // container for the next (made with the first request's limits and process).
        if i > 0 {
            until_warm(&s).await;
        }
        let (st, v) = create(
            &s,
            json!({"id": id, "image": "busybox",
            "process": {"args": ["sh", "-c", script], "env": [format!("X=x{i}")],
                        "cwd": "/tmp", "user": {"uid": 1000 + i, "gid": 2000}},
            "resources": {"memory_bytes": (64 + i) << 20, "pids": 50 + i, "cpus": 0.5}}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["status"], "created", "{v}");
        let dir = s.data().join("containers").join(&id);
        assert_eq!(v["bundle"], dir.join("bundle").to_str().unwrap(), "{v}");
        // The bundle and the runtime's state describe the request, under its id.
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("bundle/config.json")).unwrap())
                .unwrap();
        assert_eq!(config["process"]["args"][2], script);
        assert_eq!(config["hostname"], id.as_str());
        let state: Value = serde_json::from_slice(
            &std::fs::read(s.dir.path().join("run").join(&id).join("state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["id"], id.as_str());
        assert_eq!(state["process"]["user"]["uid"], 1000 + i);
        let cgroup = cgroup_of(&s, &id);
        let (st, v) = call(
            reqwest::Method::POST,
            &s.url(&format!("/v1/containers/{id}/start")),
            Some(USER),
            None,
        )
        .await;
        assert_eq!((st, v["status"].as_str()), (200, Some("running")), "{v}");
        let (st, v) = call(
            reqwest::Method::POST,
            &s.url(&format!("/v1/containers/{id}/wait?timeout=20")),
            Some(USER),
            None,
        )
        .await;
        assert_eq!((st, v["exit_code"].as_i64()), (200, Some(0)), "{v}");
        let logs = client()
            .get(s.url(&format!("/v1/containers/{id}/logs?stream=both")))
            .bearer_auth(USER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let want = format!(
            "host={id} ids={}:2000 pwd=/tmp x=x{i}\n{}\n{}\n50000\n1024\n",
            1000 + i,
            (64 + i) << 20,
            50 + i
        );
        assert_eq!(logs, want);
        let (st, _) = call(
            reqwest::Method::DELETE,
            &s.url(&format!("/v1/containers/{id}")),
            Some(USER),
            None,
        )
        .await;
        assert_eq!(st, 204);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!s.dir.path().join("run").join(&id).exists());
        // The cgroup of a stopped container is removed in the background, soon.
        for h in ["memory", "pids", "cpu", "freezer"] {
            let path = format!("/sys/fs/cgroup/{h}{cgroup}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&path).exists() {
                assert!(Instant::now() < deadline, "cgroup {path} left behind");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let text = metrics(&s).await;
    assert_eq!(
        metric(&text, "corral_containers_created_total{from=\"image\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "corral_containers_created_total{from=\"warm\"}"),
        3.0,
        "{text}"
    );
    // A warm container reports a program missing from the image at create (400), as a
    // container made at the request does, and leaves nothing.
    until_warm(&s).await;
    let (st, v) = create(
        &s,
        json!({"id": "nope1", "image": "busybox", "process": {"args": ["/no/such/program"]}}),
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (400, "urn:corral:problem:bad-request"),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("/no/such/program"),
        "{v}"
    );
    assert!(!s.data().join("containers/nope1").exists());
    assert!(!s.dir.path().join("run/nope1").exists());
    // A warm container is never used for an image replaced since it was made.
    upload_image(&s, "marked", "one").await;
    let cat = json!({"image": "marked", "process": {"args": ["cat", "/marker"]}});
    for (i, marker) in ["one", "one", "two", "two"].iter().enumerate() {
        if i == 2 {
            let (st, v) = call(
                reqwest::Method::DELETE,
                &s.url("/v1/images/marked"),
                Some(ADMIN),
                None,
            )
            .await;
            assert_eq!(st, 204, "{v}");
            upload_image(&s, "marked", "two").await;
        }
        let id = format!("marked{i}");
        let mut body = cat.clone();
        body["id"] = json!(id);
        let (st, v) = create(&s, body).await;
        assert_eq!(st, 201, "{v}");
        for op in ["start", "wait?timeout=20"] {
            let (st, v) = call(
                reqwest::Method::POST,
                &s.url(&format!("/v1/containers/{id}/{op}")),
                Some(USER),
                None,
            )
            .await;
            assert_eq!(st, 200, "{v}");
        }
        let logs = client()
            .get(s.url(&format!("/v1/containers/{id}/logs")))
            .bearer_auth(USER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(logs, *marker, "container {id}");
        let (st, _) = call(
            reqwest::Method::DELETE,
            &s.url(&format!("/v1/containers/{id}")),
            Some(USER),
            None,
        )
        .await;
        assert_eq!(st, 204);
        // A warm container of each image: busybox's and this one's.
        until_warm_n(&s, 2).await;
    }
    // Stopped gracefully, the service leaves no warm container and no mount behind.
    s.stop();
    let warm: Vec<_> = std::fs::read_dir(s.dir.path().join("run/.warm"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(warm.is_empty(), "warm containers left: {warm:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = s.data().to_string_lossy().into_owned();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&data)).collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_container_kill_delete_stats_and_follow() {
    let s = Server::start();
    let (st, v) = create(&s, json!({"id": "run1", "image": "busybox",
        "process": {"args": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done; sleep 1000"]},
        "resources": {"memory_bytes": 67108864, "pids": 20}})).await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/run1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/run1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (409, "urn:corral:problem:conflict"),
        "start of a running container: {v}"
    );
    let (st, v) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/containers/run1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!((st, problem_type(&v)), (409, "urn:corral:problem:conflict"));
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/run1/stats"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v.to_string().contains("memory"), "{v}");
    assert_eq!(
        std::fs::read_to_string("/sys/fs/cgroup/memory/corral/run1/memory.limit_in_bytes")
            .unwrap()
            .trim(),
        "67108864"
    );
    // follow: the three lines arrive while the container runs; stop it to end the stream.
    let follow = tokio::spawn({
        let url = s.url("/v1/containers/run1/logs?stream=stdout&follow=true");
        async move {
            client()
                .get(url)
                .bearer_auth(USER)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    // Stop it only once all three lines are in its log (bounded wait, no fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = client()
            .get(s.url("/v1/containers/run1/logs?stream=stdout"))
            .bearer_auth(USER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text == "1\n2\n3\n" {
            break;
        }
        assert!(Instant::now() < deadline, "output so far: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/run1/kill"),
        Some(USER),
        Some(json!({"signal": "SIGNOPE"})),
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (400, "urn:corral:problem:bad-request")
    );
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/run1/kill"),
        Some(USER),
        Some(json!({"signal": 9})),
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/run1/wait?timeout=20"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["signal"], 9, "{v}");
    let text = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .expect("follow did not end")
        .unwrap();
    assert_eq!(text, "1\n2\n3\n");
    let (st, _) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/containers/run1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_service_restart() {
    let mut s = Server::start();
    let (st, v) = create(
        &s,
        json!({"id": "keep1", "image": "busybox",
        "process": {"args": ["sh", "-c", "echo before; exec sleep 1000"]}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/keep1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200);
    s.stop();
    s.spawn();
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/keep1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/keep1/kill"),
        Some(USER),
        Some(json!({"signal": "KILL"})),
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/keep1/wait?timeout=20"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["signal"], 9, "{v}");
    let logs = client()
        .get(s.url("/v1/containers/keep1/logs"))
        .bearer_auth(USER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "before\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests() {
    let s = Server::start_with("[limits]\nmax_body_bytes = 65536\n");
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/nope"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (404, "urn:corral:problem:not-found")
    );
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/bad%20id"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (400, "urn:corral:problem:invalid-id")
    );
    let (st, v) = create(&s, json!({"id": "../x", "image": "busybox"})).await;
    assert_eq!(
        (st, problem_type(&v)),
        (400, "urn:corral:problem:invalid-id"),
        "{v}"
    );
    // Ids with a leading dot name the service's own directories (.trash, .warm).
    for id in [".trash", ".warm", ".x"] {
        let (st, v) = create(&s, json!({"id": id, "image": "busybox"})).await;
        assert_eq!(
            (st, problem_type(&v)),
            (400, "urn:corral:problem:invalid-id"),
            "{id}: {v}"
        );
    }
    let (st, v) = create(&s, json!({"image": "no-such-image"})).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = create(&s, json!({"image": "busybox", "process": {"args": "sh"}})).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("process.args"),
        "{v}"
    );
    let (st, v) = create(
        &s,
        json!({"image": "busybox", "resources": {"pids": 100000000}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    // Malformed JSON.
    let resp = client()
        .post(s.url("/v1/containers"))
        .bearer_auth(USER)
        .header("content-type", "application/json")
        .body("{\"image\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Wrong content type.
    let resp = client()
        .post(s.url("/v1/containers"))
        .bearer_auth(USER)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // Oversized body.
    let resp = client()
        .post(s.url("/v1/containers"))
        .bearer_auth(USER)
        .header("content-type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Nothing was left behind by any of these.
    let left = containers_in(&s);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A tar header for a root-owned regular file of `size` bytes, mode 0644.
fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A tar of a bundle: `config.json` + `rootfs/` (the busybox test rootfs).
fn bundle_tar(config: &Value) -> Vec<u8> {
    let rootfs = std::env::var("CORRAL_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/rootfs/busybox"))
        });
    assert!(
        rootfs.join("bin/busybox").exists(),
        "no test rootfs at {} (run `make rootfs`)",
        rootfs.display()
    );
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let data = serde_json::to_vec(config).unwrap();
    let mut h = file_header(data.len() as u64);
    b.append_data(&mut h, "config.json", &data[..]).unwrap();
    b.append_dir_all("rootfs", &rootfs).unwrap();
    b.into_inner().unwrap()
}

fn safe_config(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
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
    v["root"]["readonly"] = json!(true);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_upload_and_policy() {
    let s = Server::start();
    let tar = bundle_tar(&safe_config(&["sh", "-c", "echo from-bundle"]));
    let resp = client()
        .post(s.url("/v1/containers?id=up1"))
        .bearer_auth(USER)
        .header("content-type", "application/x-tar")
        .body(tar)
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(st, 201, "{v}");
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/up1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/up1/wait?timeout=20"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!((st, v["exit_code"].as_i64()), (200, Some(0)), "{v}");
    let logs = client()
        .get(s.url("/v1/containers/up1/logs"))
        .bearer_auth(USER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "from-bundle\n");
    // Hostile: a bind mount of the host's /etc.
    let mut cfg = safe_config(&["true"]);
    cfg["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/host", "type": "bind", "source": "/etc", "options": ["rbind"]}),
    );
    let resp = client()
        .post(s.url("/v1/containers?id=evil1"))
        .bearer_auth(USER)
        .header("content-type", "application/x-tar")
        .body(bundle_tar(&cfg))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(problem_type(&v), "urn:corral:problem:policy-violation");
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"].as_str().unwrap().starts_with("mounts[")),
        "{v}"
    );
    assert!(
        !s.data().join("containers/evil1").exists(),
        "refused bundle left on disk"
    );
    // Hostile: the rootfs is a symlink to the host's root.
    let mut b = tar::Builder::new(Vec::new());
    let data = serde_json::to_vec(&safe_config(&["true"])).unwrap();
    let mut h = file_header(data.len() as u64);
    b.append_data(&mut h, "config.json", &data[..]).unwrap();
    let mut h = file_header(0);
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    b.append_link(&mut h, "rootfs", "/").unwrap();
    let resp = client()
        .post(s.url("/v1/containers?id=evil3"))
        .bearer_auth(USER)
        .header("content-type", "application/x-tar")
        .body(b.into_inner().unwrap())
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (st, problem_type(&v)),
        (403, "urn:corral:problem:policy-violation"),
        "{v}"
    );
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "root.path"),
        "{v}"
    );
    assert!(!s.data().join("containers/evil3").exists());
    // Hostile: a tar entry that climbs out of the destination.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = file_header(1);
    h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"../x\0");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let resp = client()
        .post(s.url("/v1/containers?id=evil2"))
        .bearer_auth(USER)
        .header("content-type", "application/x-tar")
        .body(b.into_inner().unwrap())
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(st, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("leaves the destination"),
        "{v}"
    );
    assert!(!s.data().join("containers/evil2").exists());
    assert!(!s.data().join("containers/x").exists() && !s.data().join("x").exists());
}

/// A tar holding one file of `size` bytes: any reader of it must read it all.
fn big_file_tar(size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = vec![b'x'; size];
    let mut h = file_header(size as u64);
    b.append_data(&mut h, "big", &data[..]).unwrap();
    b.into_inner().unwrap()
}

/// Posts `body` as a tar, with a Content-Length or (`chunked`) streamed in pieces.
async fn post_tar(url: &str, token: &str, body: Vec<u8>, chunked: bool) -> (u16, Value) {
    let req = client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/x-tar");
    let req = if chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    } else {
        req.body(body)
    };
    answer(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_are_413() {
    let s = Server::start_with("[limits]\nmax_body_bytes = 65536\nmax_upload_bytes = 100000\n");
    let tar = big_file_tar(200_000);
    for chunked in [false, true] {
        let (st, v) = post_tar(&s.url("/v1/containers?id=big1"), USER, tar.clone(), chunked).await;
        assert_eq!(
            (st, problem_type(&v)),
            (413, "urn:corral:problem:payload-too-large"),
            "bundle upload, chunked {chunked}: {v}"
        );
        let (st, v) = post_tar(&s.url("/v1/images?name=big"), ADMIN, tar.clone(), chunked).await;
        assert_eq!(
            (st, problem_type(&v)),
            (413, "urn:corral:problem:payload-too-large"),
            "image upload, chunked {chunked}: {v}"
        );
    }
    // Under the body limit, but over max_upload_bytes once decompressed: 413 too.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&big_file_tar(200_000)).unwrap();
        e.finish().unwrap()
    };
    assert!(gz.len() < 65536);
    for url in ["/v1/containers?id=gz1", "/v1/images?name=gz"] {
        let resp = client()
            .post(s.url(url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/gzip")
            .body(gz.clone())
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (st, problem_type(&v)),
            (413, "urn:corral:problem:payload-too-large"),
            "{url}: {v}"
        );
    }
    // Under the limit, the same kind of upload is read (and refused for what it holds).
    let (st, v) = post_tar(
        &s.url("/v1/containers?id=small1"),
        USER,
        big_file_tar(1000),
        true,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let left = containers_in(&s);
    assert!(left.is_empty(), "left behind: {left:?}");
    let (st, _) = call(
        reqwest::Method::GET,
        &s.url("/v1/images/big"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 404, "a refused image upload was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_deeper_than_the_limit_is_400() {
    let s = Server::start();
    let nested = format!("{}\"sh\"{}", "[".repeat(40), "]".repeat(40));
    let body = format!("{{\"image\": \"busybox\", \"process\": {{\"args\": {nested}}}}}");
    let resp = client()
        .post(s.url("/v1/containers"))
        .bearer_auth(USER)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(problem_type(&v), "urn:corral:problem:bad-request");
    assert!(
        v["detail"].as_str().unwrap().contains("deeper than 32"),
        "{v}"
    );
    // The kill body is JSON too.
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/x/kill"),
        Some(USER),
        Some(serde_json::from_str(&format!("{{\"signal\": {nested}}}")).unwrap()),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("deeper than 32"),
        "{v}"
    );
}

/// Reads from `stream` until EOF or error; returns what came and when it ended.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    use std::io::Read;
    let t0 = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the server kept the connection open for {within:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(_) => break,
        }
    }
    (got, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out() {
    use std::io::Write;
    let s = Server::start_with("[limits]\nheader_read_timeout_secs = 1\nbody_timeout_secs = 1\n");
    let addr = s.base.trim_start_matches("http://").to_string();
    // Half a request line, then nothing: closed after the header read timeout.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /heal").unwrap();
    let (_, took) = read_until_closed(&mut c, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // Headers that trickle in, one byte at a time: cut off all the same.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    let t0 = Instant::now();
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if t0.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let (_, _) = read_until_closed(&mut c, Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "trickled headers were not cut off"
    );
    // A body that never arrives whole: 408 after the body timeout.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"image\":"
    )
    .unwrap();
    let (got, took) = read_until_closed(&mut c, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("urn:corral:problem:timeout"), "{text}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // A prompt client is served as ever.
    let (st, _) = call(reqwest::Method::GET, &s.url("/healthz"), None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_create_times_out_and_leaves_nothing() {
    let s = Server::start_with("[limits]\ncreate_timeout_secs = 1\n");
    // An admin may upload hooks: a createRuntime hook that takes 4 s stalls the create.
    let mut cfg = safe_config(&["true"]);
    cfg["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "4"]}]});
    let t0 = Instant::now();
    let (st, v) = post_tar(
        &s.url("/v1/containers?id=hung1"),
        ADMIN,
        bundle_tar(&cfg),
        false,
    )
    .await;
    assert_eq!(
        (st, problem_type(&v)),
        (504, "urn:corral:problem:gateway-timeout"),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("within 1s"), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // Once the create has settled, the container is removed: runtime state, cgroup, its
    // directory (and so the id is free again).
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = s.dir.path().join("run/hung1");
    let cgroup = Path::new("/sys/fs/cgroup/memory/corral/hung1");
    while s.data().join("containers/hung1").exists() || state.exists() || cgroup.exists() {
        assert!(
            Instant::now() < deadline,
            "left behind: dir {} state {} cgroup {}",
            s.data().join("containers/hung1").exists(),
            state.exists(),
            cgroup.exists()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url("/v1/containers/hung1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_and_concurrency_limits() {
    let s = Server::start_with("[limits]\nmax_containers = 1\nmax_concurrent_requests = 1\n");
    let (st, v) = create(
        &s,
        json!({"id": "lim1", "image": "busybox", "process": {"args": ["sleep", "1000"]}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = create(&s, json!({"id": "lim2", "image": "busybox"})).await;
    assert_eq!(
        (st, problem_type(&v)),
        (409, "urn:corral:problem:conflict"),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("maximum of 1"),
        "{v}"
    );
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/lim1/start"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200);
    // A wait holds the only slot: another request is refused at once with 429.
    let wait = tokio::spawn({
        let url = s.url("/v1/containers/lim1/wait?timeout=3");
        async move { call(reqwest::Method::POST, &url, Some(USER), None).await }
    });
    // Let the wait take the slot before anything else asks (a request sent at the same
    // moment could take it first, and the wait would be the one refused).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wait.is_finished(),
        "the wait ended at once: {:?}",
        wait.await
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let resp = client()
            .get(s.url("/v1/info"))
            .bearer_auth(USER)
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 429 {
            assert_eq!(resp.headers()["retry-after"], "1");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(problem_type(&v), "urn:corral:problem:too-many-requests");
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The wait ends at its timeout with 408, the container still running.
    let (st, v) = wait.await.unwrap();
    assert_eq!(
        (st, problem_type(&v)),
        (408, "urn:corral:problem:timeout"),
        "{v}"
    );
    let (st, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/lim1/kill"),
        Some(USER),
        Some(json!({"signal": "KILL"})),
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = call(
        reqwest::Method::POST,
        &s.url("/v1/containers/lim1/wait?timeout=20"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!((st, v["signal"].as_i64()), (200, Some(9)), "{v}");
    let (st, _) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/containers/lim1"),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 204);
}

/// The busybox test rootfs (as the other suites use it).
fn busybox_rootfs() -> PathBuf {
    let p = std::env::var_os("CORRAL_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/rootfs/busybox"));
    assert!(
        p.join("bin/busybox").is_file(),
        "no busybox rootfs at {}: run `make rootfs`",
        p.display()
    );
    p
}

/// A built image in an images dir: `<dir>/<name>/rootfs` (a copy of busybox) declaring
/// one language at `version`, and its recipe stamp.
fn built_image(dir: &Path, name: &str, version: &str, stamp: &str) {
    let root = dir.join(name).join("rootfs");
    if !root.exists() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(busybox_rootfs())
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(
        root.join("etc/corral-image.json"),
        json!({"name": name, "languages": [{"name": "lisp", "version": version, "command": "sbcl"}]})
            .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join(name).join("rootfs.stamp"), format!("{stamp}\n")).unwrap();
}

async fn image_info(s: &Server, name: &str) -> Value {
    let (st, v) = call(
        reqwest::Method::GET,
        &s.url(&format!("/v1/images/{name}")),
        Some(USER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v
}

/// `images_dir`: built images are imported on start with the languages they declare,
/// imported again when their recipe stamp changes, and kept while a container uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_dir_is_imported_with_languages() {
    common::require_root();
    let imgs = tempfile::tempdir().unwrap();
    built_image(imgs.path(), "lisp", "1.0", "recipe v1");
    std::fs::create_dir_all(imgs.path().join(".debcache/x")).unwrap(); // ignored
    std::fs::create_dir_all(imgs.path().join("half-built")).unwrap(); // no rootfs: ignored
    let mut s = Server::start_with(&format!("images_dir = \"{}\"\n", imgs.path().display()));

    let (st, v) = call(reqwest::Method::GET, &s.url("/v1/images"), Some(USER), None).await;
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["busybox", "lisp"], "{v}");
    let lisp = &v.as_array().unwrap()[1];
    assert_eq!(
        lisp["languages"],
        json!([{"name": "lisp", "version": "1.0", "command": "sbcl"}]),
        "{lisp}"
    );
    assert_eq!(lisp["source"], "recipe:lisp");
    assert_eq!(lisp["labels"]["org.corral.recipe-stamp"], "recipe v1");
    assert_eq!(v.as_array().unwrap()[0]["languages"], json!([]));

    // Unchanged: not imported again.
    s.stop();
    s.spawn();
    assert_eq!(image_info(&s, "lisp").await["created"], lisp["created"]);

    // Rebuilt: imported again, with the new version.
    s.stop();
    built_image(imgs.path(), "lisp", "2.0", "recipe v2");
    s.spawn();
    let info = image_info(&s, "lisp").await;
    assert_eq!(info["languages"][0]["version"], "2.0", "{info}");
    assert_eq!(info["labels"]["org.corral.recipe-stamp"], "recipe v2");

    // Rebuilt while a container uses it: the store's copy stays until it is free.
    let (st, v) = create(
        &s,
        json!({"id": "lisp-user", "image": "lisp", "process": {"args": ["cat", "/etc/corral-image.json"]}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    s.stop();
    built_image(imgs.path(), "lisp", "3.0", "recipe v3");
    s.spawn();
    assert_eq!(
        image_info(&s, "lisp").await["languages"][0]["version"],
        "2.0"
    );
    let (st, v) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/containers/lisp-user?force=true"),
        Some(USER),
        None,
    )
    .await;
    assert!(st == 204 || st == 200, "{st} {v}");
    s.stop();
    s.spawn();
    assert_eq!(
        image_info(&s, "lisp").await["languages"][0]["version"],
        "3.0"
    );
}
