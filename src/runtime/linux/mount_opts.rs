//! Parsing of OCI mount options (`"ro"`, `"nosuid"`, `"rbind"`, `"rshared"`, `"size=64m"`,
//! ...) into `mount(2)` flags, propagation flags and the filesystem data string.

use nix::mount::MsFlags;

/// The parsed form of one mount's `options` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself (and for the read-only remount of a bind mount).
    pub flags: MsFlags,
    /// Flags to clear: only meaningful for bind remounts (e.g. `rw`, `suid`).
    pub cleared: MsFlags,
    /// Propagation changes applied after the mount, in order (`MS_SHARED | MS_REC`, ...).
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined (`size=65536k,mode=755`).
    pub data: String,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `tmpcopyup`: copy the content of the directory below a tmpfs into it.
    pub tmpcopyup: bool,
}

/// An option that corral recognises but does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mount option {0:?} is not supported")]
pub struct UnsupportedOption(pub String);

impl MountOptions {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> Result<Self, UnsupportedOption> {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
            bind: false,
            tmpcopyup: false,
        };
        let mut data = Vec::new();
        for opt in options {
            let opt = opt.as_ref();
            if let Some((set, flag)) = flag_option(opt) {
                if set {
                    out.flags |= flag;
                    out.cleared &= !flag;
                } else {
                    out.flags &= !flag;
                    out.cleared |= flag;
                }
                continue;
            }
            if let Some(p) = propagation_option(opt) {
                out.propagation.push(p);
                continue;
            }
            match opt {
                "bind" => {
                    out.bind = true;
                    out.flags |= MsFlags::MS_BIND;
                }
                "rbind" => {
                    out.bind = true;
                    out.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                }
                "tmpcopyup" => out.tmpcopyup = true,
                // Recursive attribute changes need mount_setattr(2), and id-mapped
                // mounts need a user namespace fd: neither is implemented yet.
                "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec"
                | "rnoatime" | "ratime" | "rrelatime" | "rnorelatime" | "rnodiratime"
                | "rdiratime" | "rstrictatime" | "rnostrictatime" | "rnosymfollow"
                | "rsymfollow" | "idmap" | "ridmap" => {
                    return Err(UnsupportedOption(opt.to_string()));
                }
                "" => {}
                other => data.push(other),
            }
        }
        out.data = data.join(",");
        Ok(out)
    }
}

/// `(true, flag)` sets the flag, `(false, flag)` clears it.
fn flag_option(opt: &str) -> Option<(bool, MsFlags)> {
    Some(match opt {
        "defaults" => (false, MsFlags::empty()),
        "ro" => (true, MsFlags::MS_RDONLY),
        "rw" => (false, MsFlags::MS_RDONLY),
        "nosuid" => (true, MsFlags::MS_NOSUID),
        "suid" => (false, MsFlags::MS_NOSUID),
        "nodev" => (true, MsFlags::MS_NODEV),
        "dev" => (false, MsFlags::MS_NODEV),
        "noexec" => (true, MsFlags::MS_NOEXEC),
        "exec" => (false, MsFlags::MS_NOEXEC),
        "sync" => (true, MsFlags::MS_SYNCHRONOUS),
        "async" => (false, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (true, MsFlags::MS_DIRSYNC),
        "remount" => (true, MsFlags::MS_REMOUNT),
        "mand" => (true, MsFlags::MS_MANDLOCK),
        "nomand" => (false, MsFlags::MS_MANDLOCK),
        "atime" => (false, MsFlags::MS_NOATIME),
        "noatime" => (true, MsFlags::MS_NOATIME),
        "diratime" => (false, MsFlags::MS_NODIRATIME),
        "nodiratime" => (true, MsFlags::MS_NODIRATIME),
        "relatime" => (true, MsFlags::MS_RELATIME),
        "norelatime" => (false, MsFlags::MS_RELATIME),
        "strictatime" => (true, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
        "silent" => (true, MsFlags::MS_SILENT),
        "loud" => (false, MsFlags::MS_SILENT),
        "lazytime" => (true, MsFlags::MS_LAZYTIME),
        "nolazytime" => (false, MsFlags::MS_LAZYTIME),
        "nosymfollow" => (true, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "symfollow" => (false, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        _ => return None,
    })
}

fn propagation_option(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// The `rootfsPropagation` value of the spec, as mount flags.
pub fn rootfs_propagation(value: &str) -> Option<MsFlags> {
    propagation_option(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation() {
        let o = MountOptions::parse(&[
            "nosuid",
            "noexec",
            "nodev",
            "mode=755",
            "size=65536k",
            "rslave",
        ])
        .unwrap();
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert!(!o.bind);
    }

    #[test]
    fn later_options_win() {
        let o = MountOptions::parse(&["ro", "rw", "rbind"]).unwrap();
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert!(o.bind && o.flags.contains(MsFlags::MS_REC | MsFlags::MS_BIND));
    }

    #[test]
    fn unsupported_is_refused() {
        assert_eq!(
            MountOptions::parse(&["idmap"]),
            Err(UnsupportedOption("idmap".into()))
        );
    }
}
