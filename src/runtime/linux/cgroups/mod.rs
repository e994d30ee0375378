//! TEMPORARY STUB: replaced by the real module.
#![allow(dead_code, unused_variables)]
use oci_spec::runtime::LinuxResources;
#[derive(Debug, thiserror::Error)]
#[error("cgroup error: {0}")]
pub struct CgroupError(pub String);
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    Hybrid,
    V2,
}
pub fn detect_mode() -> CgroupMode {
    CgroupMode::Hybrid
}
#[derive(Debug, Clone)]
pub struct CgroupPath(pub String);
impl CgroupPath {
    pub fn parse(v: Option<&str>, id: &str, systemd: bool) -> Result<Self, CgroupError> {
        Ok(Self(v.map(String::from).unwrap_or(format!("/corral/{id}"))))
    }
}
impl std::fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub struct Cgroup;
impl Cgroup {
    pub fn create(p: &CgroupPath, r: Option<&LinuxResources>) -> Result<Self, CgroupError> {
        Ok(Cgroup)
    }
    pub fn open(p: &CgroupPath) -> Result<Self, CgroupError> {
        Ok(Cgroup)
    }
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(vec![])
    }
    pub fn kill_all(&self, sig: nix::sys::signal::Signal) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn host_dirs(&self) -> Vec<(String, std::path::PathBuf)> {
        vec![]
    }
    pub fn delete(&self) -> Result<(), CgroupError> {
        Ok(())
    }
}
