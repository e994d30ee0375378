//! `corral spec`: writes a default `config.json`, as `runc spec` does.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxBuilder, LinuxDeviceCgroupBuilder, Spec};

pub fn write(bundle: &Path, rootless: bool) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut spec = Spec::default();
    if rootless {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        spec.set_linux(Some(oci_spec::runtime::Linux::rootless(uid, gid)));
        spec.set_mounts(Some(oci_spec::runtime::get_rootless_mounts()));
    } else {
        if spec.linux().is_none() {
            spec.set_linux(Some(LinuxBuilder::default().build()?));
        }
        // runc's default: deny every device (the runtime appends the standard ones).
        // oci-spec's default list is empty, which leaves every device of the host open.
        if let Some(linux) = spec.linux_mut() {
            let mut resources = linux.resources().clone().unwrap_or_default();
            resources.set_devices(Some(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()?,
            ]));
            linux.set_resources(Some(resources));
        }
    }
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
    }
    let text = serde_json::to_string_pretty(&spec)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
