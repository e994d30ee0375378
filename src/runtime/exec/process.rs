//! The process `exec` starts: an OCI process JSON (`--process FILE`), or the
//! container's own process with runc's flags applied on top.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxCapabilities, Process};

use super::ExecError;
use crate::runtime::state::Record;

/// runc's `exec` flags for a process given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub args: Vec<String>,
    pub tty: bool,
    pub cwd: Option<PathBuf>,
    /// `KEY=VALUE`, added to the container's environment (replacing the same key).
    pub env: Vec<String>,
    /// `uid[:gid]`, numeric.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    /// Capabilities added to every set (`CAP_NET_ADMIN`).
    pub caps: Vec<String>,
    pub no_new_privs: bool,
}

/// Where the process comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Flags(Flags),
}

/// The process to start, before validation (`plan::process_plan` does that).
pub fn build(source: &Source, rec: &Record) -> Result<Process, ExecError> {
    match source {
        Source::File(path) => from_file(path, rec),
        Source::Flags(f) => from_flags(f, rec),
    }
}

fn from_file(path: &Path, rec: &Record) -> Result<Process, ExecError> {
    let text = std::fs::read(path).map_err(|e| ExecError::ProcessFile {
        path: path.to_path_buf(),
        field: String::new(),
        reason: e.to_string(),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    let mut p: Process =
        serde_path_to_error::deserialize(de).map_err(|e| ExecError::ProcessFile {
            path: path.to_path_buf(),
            field: match e.path().to_string() {
                f if f == "." => String::new(),
                f => f,
            },
            reason: e.into_inner().to_string(),
        })?;
    // What the process does not say, it takes from the container (as runc does).
    let container = rec.process.as_ref();
    if p.capabilities().is_none() {
        p.set_capabilities(container.and_then(|c| c.capabilities().clone()));
    }
    if p.rlimits().is_none() {
        p.set_rlimits(container.and_then(|c| c.rlimits().clone()));
    }
    Ok(p)
}

fn from_flags(f: &Flags, rec: &Record) -> Result<Process, ExecError> {
    if f.args.is_empty() {
        return Err(ExecError::Usage(
            "exec needs a command to run (or --process FILE)".into(),
        ));
    }
    let mut p = rec.process.clone().unwrap_or_default();
    p.set_args(Some(f.args.clone()));
    if let Some(cwd) = &f.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &f.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if key.is_empty() {
            return Err(ExecError::Usage(format!(
                "--env {kv:?}: expected KEY=VALUE"
            )));
        }
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    p.set_terminal(Some(f.tty));
    if f.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(u) = &f.user {
        let (uid, gid) = parse_user(u)?;
        p.user_mut().set_uid(uid);
        if let Some(g) = gid {
            p.user_mut().set_gid(g);
        }
    }
    if !f.additional_gids.is_empty() {
        let mut gids = p.user().additional_gids().clone().unwrap_or_default();
        gids.extend(&f.additional_gids);
        p.user_mut().set_additional_gids(Some(gids));
    }
    if !f.caps.is_empty() {
        let mut c: LinuxCapabilities = p.capabilities().clone().unwrap_or_default();
        for name in &f.caps {
            let cap = parse_cap(name)?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, i, pm, a) = (
                add(c.bounding()),
                add(c.effective()),
                add(c.inheritable()),
                add(c.permitted()),
                add(c.ambient()),
            );
            c.set_bounding(b)
                .set_effective(e)
                .set_inheritable(i)
                .set_permitted(pm)
                .set_ambient(a);
        }
        p.set_capabilities(Some(c));
    }
    Ok(p)
}

/// `uid[:gid]`, numeric (runc's `--user` takes no names: the container's passwd file is
/// not read).
fn parse_user(u: &str) -> Result<(u32, Option<u32>), ExecError> {
    let bad = || ExecError::Usage(format!("--user {u:?}: expected uid[:gid], numeric"));
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

fn parse_cap(name: &str) -> Result<Capability, ExecError> {
    let full = if name.to_ascii_uppercase().starts_with("CAP_") {
        name.to_ascii_uppercase()
    } else {
        format!("CAP_{}", name.to_ascii_uppercase())
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| ExecError::Usage(format!("--cap {name:?}: unknown capability {full}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_caps() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("1:2").unwrap(), (1, Some(2)));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
        assert!(parse_cap("CAP_NET_ADMIN").is_ok());
        assert!(parse_cap("net_admin").is_ok());
        assert!(parse_cap("CAP_NOPE").is_err());
    }
}
