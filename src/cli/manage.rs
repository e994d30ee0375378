//! The commands on a running container: exec, ps, events and update.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use oci_spec::runtime::LinuxResources;
use serde_json::json;

use super::args::{ExecArgs, ListFormat, UpdateArgs};
use crate::runtime::exec::{ExecOptions, Flags, Source};
use crate::runtime::state::Store;
use crate::runtime::{control, events, exec};

pub fn exec_cmd(store: &Store, a: &ExecArgs) -> Result<i32> {
    if a.process_label.is_some() {
        bail!("--process-label: SELinux labels are not supported by corral");
    }
    if a.apparmor.is_some() {
        bail!("--apparmor: AppArmor profiles are not supported by corral");
    }
    if !a.cgroup.is_empty() {
        bail!("--cgroup: running an exec'd process in a sub-cgroup is not supported by corral");
    }
    let source = match &a.process {
        Some(p) => {
            if !a.command.is_empty() {
                bail!("--process and a command cannot be given together");
            }
            Source::File(p.clone())
        }
        None => Source::Flags(Flags {
            args: a.command.clone(),
            tty: a.tty,
            cwd: a.cwd.clone(),
            env: a.env.clone(),
            user: a.user.clone(),
            additional_gids: a.additional_gids.clone(),
            caps: a.cap.clone(),
            no_new_privs: a.no_new_privs,
        }),
    };
    let opts = ExecOptions {
        id: a.id.clone(),
        source,
        console_socket: a.console_socket.clone(),
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds.min(i32::MAX as u32 - 3) as i32,
        ignore_paused: a.ignore_paused,
    };
    Ok(exec::exec(store, &opts)?)
}

/// `ps`: json is the list of host pids; table is ps(1)'s output (default `-ef`) filtered
/// to the container's processes, as runc prints it.
pub fn ps(store: &Store, id: &str, format: ListFormat, ps_args: &[String]) -> Result<()> {
    let pids = control::pids(store, id)?;
    let mut out = std::io::stdout().lock();
    if format == ListFormat::Json {
        writeln!(out, "{}", serde_json::to_string(&pids)?)?;
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .with_context(|| format!("ps {}: no PID column in {header:?}", args.join(" ")))?;
    writeln!(out, "{header}")?;
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `events`: one stats event with `--stats`; otherwise a stats event every `interval`
/// and an `oom` event as soon as the OOM killer strikes, until the container stops.
pub fn events(store: &Store, id: &str, stats: bool, interval: &str) -> Result<()> {
    let w = events::Watch::open(store, id)?;
    let mut out = std::io::stdout().lock();
    if stats {
        writeln!(out, "{}", w.stats()?)?;
        return Ok(());
    }
    let every = parse_duration(interval)?;
    let tick = every.min(Duration::from_millis(100));
    let mut ooms = w.oom_kills().unwrap_or(0);
    let mut next = Instant::now();
    while w.running() {
        let now_ooms = w.oom_kills().unwrap_or(ooms);
        if now_ooms > ooms {
            writeln!(out, "{}", w.oom_event())?;
            out.flush()?;
        }
        ooms = now_ooms;
        if Instant::now() >= next {
            match w.stats() {
                Ok(s) => writeln!(out, "{s}")?,
                Err(e) if !w.running() => {
                    tracing::debug!("stats after stop: {e}");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            out.flush()?;
            next = Instant::now() + every;
        }
        std::thread::sleep(tick);
    }
    Ok(())
}

/// A Go-style duration (`100ms`, `5s`, `1m`, `1h`, or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--interval {s:?}: expected a duration like 500ms, 5s or 1m");
    let idx = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(idx);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        bail!("--interval {s:?}: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `update`: the resources from `--resources` (a file or `-`) or from the flags.
pub fn update(store: &Store, a: &UpdateArgs) -> Result<()> {
    let flags_given = a.memory.is_some()
        || a.memory_swap.is_some()
        || a.memory_reservation.is_some()
        || a.kernel_memory.is_some()
        || a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
        || a.pids_limit.is_some()
        || a.blkio_weight.is_some();
    let resources: LinuxResources = match &a.resources {
        Some(src) => {
            if flags_given {
                bail!("--resources cannot be combined with other update flags");
            }
            let mut text = Vec::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .context("read resources from stdin")?;
            } else {
                text = std::fs::read(src).with_context(|| format!("read {src}"))?;
            }
            let de = &mut serde_json::Deserializer::from_slice(&text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("resources {src}: {}: {}", e.path(), e.inner()))?
        }
        None => {
            if !flags_given {
                bail!("update needs --resources or at least one limit flag");
            }
            from_flags(a)?
        }
    };
    control::update(store, &a.id, &resources)?;
    Ok(())
}

fn from_flags(a: &UpdateArgs) -> Result<LinuxResources> {
    let mem = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref().map(|s| parse_size(flag, s)).transpose()
    };
    let mut memory = serde_json::Map::new();
    for (key, flag, v) in [
        ("limit", "--memory", &a.memory),
        ("swap", "--memory-swap", &a.memory_swap),
        ("reservation", "--memory-reservation", &a.memory_reservation),
        ("kernel", "--kernel-memory", &a.kernel_memory),
    ] {
        if let Some(n) = mem(flag, v)? {
            memory.insert(key.into(), json!(n));
        }
    }
    let mut cpu = serde_json::Map::new();
    if let Some(v) = a.cpu_shares {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = a.cpu_quota {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = a.cpu_period {
        cpu.insert("period".into(), json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        cpu.insert("mems".into(), json!(v));
    }
    let mut r = serde_json::Map::new();
    if !memory.is_empty() {
        r.insert("memory".into(), memory.into());
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), cpu.into());
    }
    if let Some(l) = a.pids_limit {
        r.insert("pids".into(), json!({"limit": l}));
    }
    if let Some(w) = a.blkio_weight {
        r.insert("blockIO".into(), json!({"weight": w}));
    }
    serde_json::from_value(r.into()).context("build resources from the flags")
}

/// A size in bytes: `1048576`, `64m`, `1.5g`, `512KiB`; `-1` is unlimited.
pub fn parse_size(flag: &str, s: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("{flag} {s:?}: expected a size such as 67108864, 64m or 1g");
    if s.trim() == "-1" {
        return Ok(-1);
    }
    let t = s.trim().to_ascii_lowercase();
    let idx = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(idx);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !(v >= 0.0 && v < i64::MAX as f64) {
        return Err(bad());
    }
    Ok(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("--memory", "100").unwrap(), 100);
        assert_eq!(parse_size("--memory", "-1").unwrap(), -1);
        assert!(parse_size("--memory", "lots").is_err());
        assert!(parse_size("--memory", "-5").is_err());
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
