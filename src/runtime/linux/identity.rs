//! The process's identity: uid, gid, supplementary groups and the five capability sets,
//! switched in the order the kernel requires.

use caps::{CapSet, CapsHashSet};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use super::error::{Context, SysError, SysResult};
use crate::runtime::plan::CapsPlan;

/// Becomes `uid:gid` with `groups`, ending with exactly the capabilities of `caps`.
///
/// Order: drop the bounding set (needs CAP_SETPCAP, still held); keep the permitted set
/// across the uid change (PR_SET_KEEPCAPS); switch groups, gid, uid; then set the
/// effective, permitted and inheritable sets and raise the ambient ones.
pub fn switch(
    uid: u32,
    gid: u32,
    groups: &[u32],
    setgroups_allowed: bool,
    caps: Option<&CapsPlan>,
) -> SysResult<()> {
    if let Some(c) = caps {
        for cap in caps::all() {
            if !c.bounding.contains(&cap) {
                match caps::drop(None, CapSet::Bounding, cap) {
                    Ok(()) => {}
                    // A capability newer than the running kernel: nothing to drop.
                    Err(_) if !caps::runtime::thread_all_supported().contains(&cap) => {}
                    Err(e) => {
                        return Err(SysError::new(
                            format!("drop {cap} from the bounding set: {e}"),
                            nix::Error::EPERM,
                        ));
                    }
                }
            }
        }
    }
    nix::sys::prctl::set_keepcaps(true).ctx(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    if setgroups_allowed {
        let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&gids).ctx(|| format!("setgroups {groups:?}"))?;
    }
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    setresgid(g, g, g).ctx(|| format!("setresgid {gid}"))?;
    setresuid(u, u, u).ctx(|| format!("setresuid {uid}"))?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "prctl(PR_SET_KEEPCAPS, 0)".into())?;
    if let Some(c) = caps {
        // Inheritable first, while CAP_SETPCAP is still effective; then effective, which
        // must stay within the permitted set when that shrinks.
        set(CapSet::Inheritable, &c.inheritable)?;
        set(CapSet::Effective, &c.effective)?;
        set(CapSet::Permitted, &c.permitted)?;
        // Ambient capabilities must be permitted and inheritable; set them one by one so
        // that an impossible one is named in the error.
        caps::clear(None, CapSet::Ambient).map_err(|e| cap_err("clear the ambient set", e))?;
        for cap in &c.ambient {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| cap_err(&format!("raise ambient {cap}"), e))?;
        }
    }
    Ok(())
}

fn set(which: CapSet, value: &CapsHashSet) -> SysResult<()> {
    caps::set(None, which, value).map_err(|e| cap_err(&format!("set {which:?} capabilities"), e))
}

fn cap_err(what: &str, e: caps::errors::CapsError) -> SysError {
    SysError::new(format!("{what}: {e}"), nix::Error::EPERM)
}
