//! Hostile requests against `corral serve`: each is a 4xx that names the field (never a
//! 500 for the client's own mistake), races between clients have one winner, and a
//! sandbox learns nothing of the host from its pid 1.

mod common;

use common::server::{Server, USER, call};
use serde_json::{Value, json};

async fn post(s: &Server, path: &str, body: Option<Value>) -> (u16, Value) {
    call(reqwest::Method::POST, &s.url(path), Some(USER), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_execve_cannot_take_are_400_naming_the_field() {
    let s = Server::start();
    let long = "x".repeat(200_000);
    let (st, v) = post(
        &s,
        "/v1/containers",
        Some(json!({"image": "busybox", "process": {"args": ["echo", long]}})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("process.args[1]") && text.contains("131071"),
        "{v}"
    );

    let env: Vec<String> = (0..12)
        .map(|i| format!("V{i}={}", "e".repeat(100_000)))
        .collect();
    let (st, v) = post(
        &s,
        "/v1/containers",
        Some(json!({"image": "busybox", "process": {"args": ["true"], "env": env}})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("process.env"), "{v}");

    // A run with 10 MB of environment.
    let env: Vec<String> = (0..100)
        .map(|i| format!("V{i}={}", "e".repeat(100_000)))
        .collect();
    let (st, v) = post(
        &s,
        "/v1/runs",
        Some(json!({"image": "busybox", "env": env, "steps": [{"name": "a", "args": ["true"]}]})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("env"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_start_is_a_4xx_or_a_message() {
    let s = Server::start_with("[limits]\nwarm_containers = 0\n");
    // A container whose program is not there: refused at create or at start, as the
    // client's mistake, never as the service's failure.
    let (st, v) = post(
        &s,
        "/v1/containers",
        Some(
            json!({"id": "noprog", "image": "busybox", "process": {"args": ["/no/such/program"]}}),
        ),
    )
    .await;
    if st == 201 {
        let (st, v) = post(&s, "/v1/containers/noprog/start", None).await;
        assert!((400..500).contains(&st), "start: {st} {v}");
        assert!(v.to_string().contains("/no/such/program"), "{v}");
    } else {
        assert!((400..500).contains(&st), "create: {st} {v}");
        assert!(v.to_string().contains("/no/such/program"), "{v}");
    }
    // A judged run's program that cannot be executed says why in `message`, cold or
    // from a warm container (the second run of one config claims a warm one).
    for round in 0..3 {
        let (st, v) = post(
            &s,
            "/v1/runs",
            Some(json!({"image": "busybox",
                "files": [{"path": "notelf", "content": "not a program\n", "mode": 493}],
                "steps": [{"name": "exec", "args": ["./notelf"]}]})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let r = &v["steps"][0]["results"][0];
        assert_eq!(r["verdict"], "RUNTIME_ERROR", "round {round}: {v}");
        let message = r["message"].as_str().unwrap_or("");
        assert!(
            message.contains("./notelf") && message.contains("ENOEXEC"),
            "round {round}: no reason in message: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_have_one_winner() {
    let s = Server::start();
    for round in 0..10 {
        let id = format!("twice{round}");
        let (st, v) = post(
            &s,
            "/v1/containers",
            Some(json!({"id": id, "image": "busybox", "process": {"args": ["sleep", "30"]}})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        if round % 2 == 0 {
            let (st, v) = post(&s, &format!("/v1/containers/{id}/start"), None).await;
            assert_eq!(st, 200, "{v}");
        }
        let url = s.url(&format!("/v1/containers/{id}?force=true"));
        let (a, b) = tokio::join!(
            call(reqwest::Method::DELETE, &url, Some(USER), None),
            call(reqwest::Method::DELETE, &url, Some(USER), None)
        );
        let mut codes = [a.0, b.0];
        codes.sort();
        assert_eq!(codes, [204, 404], "round {round}: {a:?} {b:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandboxs_pid_1_shows_nothing_of_the_host() {
    let s = Server::start();
    let data = s.data().to_string_lossy().into_owned();
    let (st, v) = post(
        &s,
        "/v1/runs",
        Some(json!({"image": "busybox", "steps": [
            {"name": "a", "args": ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm"]}
        ]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let out = v["steps"][0]["results"][0]["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        out.starts_with("corral init"),
        "pid 1's command line: {out:?}"
    );
    for host in [
        data.as_str(),
        "--root",
        "--data",
        "launcher",
        "/work",
        "/tmp",
    ] {
        assert!(!out.contains(host), "pid 1 shows {host:?}: {out:?}");
    }
}
