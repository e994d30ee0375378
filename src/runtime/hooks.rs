//! OCI hooks: programs run at fixed moments of the lifecycle, given the container's
//! state on stdin, each with an optional timeout (config.md#posix-platform-hooks).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::Hook;

/// A hook that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook {path}: start: {err}")]
    Spawn {
        phase: &'static str,
        path: String,
        err: std::io::Error,
    },
    #[error("{phase} hook {path}: {status}{stderr}")]
    Failed {
        phase: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{phase} hook {path}: timed out after {secs}s")]
    Timeout {
        phase: &'static str,
        path: String,
        secs: i64,
    },
}

/// Runs `hooks` in order with `state` (the OCI state JSON) on stdin; the first failure
/// stops the list.
pub fn run(phase: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    for h in hooks {
        run_one(phase, h, state)?;
    }
    Ok(())
}

/// Runs every hook of `hooks`; a failure is a warning and the next hook still runs
/// (poststart and poststop, per the runtime spec).
pub fn run_warn(phase: &'static str, hooks: &[Hook], state: &[u8]) {
    for h in hooks {
        if let Err(e) = run_one(phase, h, state) {
            tracing::warn!("{e}");
            eprintln!("corral: warning: {e}");
        }
    }
}

fn run_one(phase: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().to_string_lossy().into_owned();
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some(arg0) = args.first() {
            cmd.arg0(arg0);
        }
        cmd.args(args.iter().skip(1));
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| HookError::Spawn {
        phase,
        path: path.clone(),
        err,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error (EPIPE).
        let _ = stdin.write_all(state);
    }
    let timeout = hook.timeout().filter(|t| *t > 0);
    if let Some(secs) = timeout {
        let pidfd = crate::runtime::linux::process::pidfd_open(child.id() as i32).ok();
        if let Some(fd) = pidfd {
            let mut pfd = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = Duration::from_secs(secs as u64)
                .as_millis()
                .min(i32::MAX as u128) as i32;
            let ready = nix::poll::poll(
                &mut pfd,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            )
            .unwrap_or(1);
            if ready == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { phase, path, secs });
            }
        }
    }
    let out = child.wait_with_output().map_err(|err| HookError::Spawn {
        phase,
        path: path.clone(),
        err,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let status = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".into(),
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text.trim();
    Err(HookError::Failed {
        phase,
        path,
        status,
        stderr: if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        },
    })
}
