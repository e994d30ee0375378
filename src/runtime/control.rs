//! Operations on a live container's cgroup: `pause`, `resume`, `ps` and `update`.

use oci_spec::runtime::LinuxResources;

use super::error::{Error, Result};
use super::id;
use super::linux::cgroups::Cgroup;
use super::ops::cgroup_path;
use super::state::{Record, Store};
use super::status::{Status, status};

/// The container's record and cgroup, under its lock (dropped on return of the caller).
fn open(store: &Store, id: &str) -> Result<(super::state::Lock, Record, Cgroup)> {
    id::validate(id)?;
    let lock = store.lock(id)?;
    let rec = store.load(id)?;
    let cg = Cgroup::open(&cgroup_path(&rec)?)?;
    Ok((lock, rec, cg))
}

/// `pause`: freezes every process of a created or running container (runc allows both).
pub fn pause(store: &Store, id: &str) -> Result<()> {
    let (_lock, rec, cg) = open(store, id)?;
    match status(store, &rec) {
        Status::Running | Status::Created => {}
        Status::Paused => return Err(Error::status(format!("container {id} is already paused"))),
        s => return Err(Error::status(format!("container {id} is not running: {s}"))),
    }
    cg.freeze()?;
    Ok(())
}

/// `resume`: thaws a paused container.
pub fn resume(store: &Store, id: &str) -> Result<()> {
    let (_lock, rec, cg) = open(store, id)?;
    match status(store, &rec) {
        Status::Paused => {}
        s => return Err(Error::status(format!("container {id} is not paused: {s}"))),
    }
    cg.thaw()?;
    Ok(())
}

/// `ps`: the host pids of every process in the container's cgroup.
pub fn pids(store: &Store, id: &str) -> Result<Vec<i32>> {
    let (_lock, rec, cg) = open(store, id)?;
    if status(store, &rec) == Status::Stopped && cg.pids()?.is_empty() {
        return Err(Error::status(format!("container {id} is not running")));
    }
    let mut pids = cg.pids()?;
    pids.sort_unstable();
    Ok(pids)
}

/// `update`: applies new limits to a created, running or paused container. The whole
/// set is checked first (see [`check`] and `Cgroup::apply`): an invalid value changes
/// nothing.
pub fn update(store: &Store, id: &str, resources: &LinuxResources) -> Result<()> {
    let (_lock, rec, cg) = open(store, id)?;
    if status(store, &rec) == Status::Stopped {
        return Err(Error::status(format!(
            "cannot update container {id}: it is stopped"
        )));
    }
    check(resources)?;
    cg.apply(resources)?;
    Ok(())
}

/// Checks that the kernel would refuse (or silently clamp) only part way through an
/// update, so that they fail before the first write.
pub fn check(r: &LinuxResources) -> Result<()> {
    let bad = |field: &str, value: String, why: &str| {
        Err(Error::Usage(format!(
            "linux.resources.{field}: invalid value {value}: {why}"
        )))
    };
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0 && !(2..=262_144).contains(s)) {
            return bad("cpu.shares", s.to_string(), "must be 2..=262144");
        }
        if let Some(p) = c
            .period()
            .filter(|p| *p != 0 && !(1000..=1_000_000).contains(p))
        {
            return bad(
                "cpu.period",
                p.to_string(),
                "must be 1000..=1000000 (microseconds)",
            );
        }
        if let Some(q) = c.quota().filter(|q| *q > 0 && *q < 1000) {
            return bad(
                "cpu.quota",
                q.to_string(),
                "must be at least 1000 (microseconds), or -1",
            );
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            check_cpuset("cpu.cpus", cpus, "/sys/devices/system/cpu/online")?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            check_cpuset("cpu.mems", mems, "/sys/devices/system/node/online")?;
        }
    }
    if let Some(w) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0 && !(10..=1000).contains(w))
    {
        return bad("blockIO.weight", w.to_string(), "must be 10..=1000");
    }
    if let Some(l) = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l < -1) {
        return bad(
            "pids.limit",
            l.to_string(),
            "must be > 0, or -1 (unlimited)",
        );
    }
    Ok(())
}

/// A cpuset list (`0-2,4`) whose every member is in the host's `online` list.
fn check_cpuset(field: &str, list: &str, online_file: &str) -> Result<()> {
    let invalid = |why: String| {
        Error::Usage(format!(
            "linux.resources.{field}: invalid value {list:?}: {why}"
        ))
    };
    let wanted = parse_list(list).ok_or_else(|| invalid("not a list like 0-2,4".into()))?;
    if let Ok(text) = std::fs::read_to_string(online_file)
        && let Some(online) = parse_list(text.trim())
        && let Some(n) = wanted.iter().find(|n| !online.contains(n))
    {
        return Err(invalid(format!(
            "{n} is not online (online: {})",
            text.trim()
        )));
    }
    Ok(())
}

/// Parses the kernel's list format (`0-3,5,7-8`).
pub fn parse_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_list("3"), Some(vec![3]));
        assert_eq!(parse_list("2-1"), None);
        assert_eq!(parse_list("a"), None);
        assert_eq!(parse_list(""), None);
    }

    #[test]
    fn checks_before_writing() {
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"period":10}}"#).unwrap();
        assert!(check(&r).unwrap_err().to_string().contains("cpu.period"));
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"cpus":"0-x"}}"#).unwrap();
        assert!(check(&r).unwrap_err().to_string().contains("cpu.cpus"));
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"cpus":"100000"}}"#).unwrap();
        assert!(check(&r).unwrap_err().to_string().contains("not online"));
        let r: LinuxResources =
            serde_json::from_str(r#"{"cpu":{"shares":512,"quota":50000,"period":100000}}"#)
                .unwrap();
        assert!(check(&r).is_ok());
    }
}
