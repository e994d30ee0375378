//! What a monitor leaves in the container's data directory, for the service to read
//! (even after the service, the launcher or the monitor itself has been restarted):
//!
//! - `stdout.log`, `stderr.log`: the container's output, appended, each capped;
//! - `stdout.log.truncated`, `stderr.log.truncated`: present once output was dropped
//!   at the cap (JSON: the cap and, when the monitor is done, the bytes dropped);
//! - `exit.json`: written atomically once the init has exited (see [`ExitRecord`]);
//! - `monitor.log`: the monitor's own diagnostics (normally empty).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STDOUT_LOG: &str = "stdout.log";
pub const STDERR_LOG: &str = "stderr.log";
pub const EXIT_FILE: &str = "exit.json";
pub const MONITOR_LOG: &str = "monitor.log";
/// Appended to a log's name for its truncation marker.
pub const TRUNCATED_SUFFIX: &str = ".truncated";

/// How the container's init ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, when the init exited.
    pub exit_code: Option<i32>,
    /// The signal number, when the init was killed by a signal.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container (the cgroup's
    /// `oom_kill` counter), not a guess from the signal.
    pub oom_killed: bool,
    /// RFC 3339, UTC: when the monitor saw the init exit.
    pub finished_at: String,
}

/// The exit record in `dir`, once the monitor has written it. Written by rename, so it
/// is either absent or complete.
pub fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read(dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether output of the log `name` (`STDOUT_LOG` or `STDERR_LOG`) in `dir` was dropped.
pub fn log_truncated(dir: &Path, name: &str) -> bool {
    marker_path(dir, name).exists()
}

fn marker_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{TRUNCATED_SUFFIX}"))
}

/// Writes `data` as `dir/name` atomically (the runtime's helper: a temp file renamed
/// over the name, so that a reader sees the old content or the new, never a part).
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    crate::runtime::atomic::write_atomic(&dir.join(name), data, 0o600)
}

/// Creates the (empty) temp file that [`write_exit`] writes and renames, ahead of the
/// exit: a new inode on the exit's path would cost ext4 a search for one not recently
/// freed.
pub fn prepare_exit(dir: &Path) -> std::io::Result<()> {
    let tmp = crate::runtime::atomic::temp_path(&dir.join(EXIT_FILE));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map(drop)
}

pub fn write_exit(dir: &Path, rec: &ExitRecord) -> std::io::Result<()> {
    let data = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    write_atomic(dir, EXIT_FILE, &data)
}

/// Opens `dir/name` for appending: never through a symlink, never inherited.
pub fn open_append(dir: &Path, name: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(name))
}

/// One capped log file. Output past the cap (or that could not be written) is dropped
/// and counted; the first drop creates the truncation marker.
pub struct LogSink {
    dir: PathBuf,
    name: &'static str,
    file: File,
    /// Bytes in the file, counting what earlier monitors appended.
    size: u64,
    limit: u64,
    dropped: u64,
    /// A write failed (and was reported) already.
    failed: bool,
}

impl LogSink {
    pub fn open(dir: &Path, name: &'static str, limit: u64) -> std::io::Result<Self> {
        let file = open_append(dir, name)?;
        let size = file.metadata()?.len();
        Ok(LogSink {
            dir: dir.to_path_buf(),
            name,
            file,
            size,
            limit,
            dropped: 0,
            failed: false,
        })
    }

    /// The file's name (`stdout.log` or `stderr.log`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Appends what fits under the cap. Returns the first write error (that chunk is
    /// dropped; later chunks are still tried, and their errors not returned again).
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let room = usize::try_from(self.limit.saturating_sub(self.size)).unwrap_or(usize::MAX);
        let keep = data.len().min(room);
        if keep > 0 {
            if let Err(e) = self.file.write_all(&data[..keep]) {
                // Part of the chunk may be in the file: take the size from the kernel.
                if let Ok(m) = self.file.metadata() {
                    self.size = m.len();
                }
                self.drop_bytes(data.len());
                return if std::mem::replace(&mut self.failed, true) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            self.size += keep as u64;
        }
        self.drop_bytes(data.len() - keep);
        Ok(())
    }

    fn drop_bytes(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.dropped == 0 {
            // Best effort: the counters are rewritten by `finish`.
            let _ = self.write_marker();
        }
        self.dropped += n as u64;
    }

    fn write_marker(&self) -> std::io::Result<()> {
        let doc = serde_json::json!({"limit": self.limit, "dropped": self.dropped});
        write_atomic(
            &self.dir,
            &format!("{}{TRUNCATED_SUFFIX}", self.name),
            doc.to_string().as_bytes(),
        )
    }

    /// Records the final count of dropped bytes. The log itself needs no flush: every
    /// write went straight to the file (no user-space buffer), so a restarted service
    /// reads all of it; like the exit record, it is not fsync'd (a synchronous disk
    /// flush per stream cost the `wait` of every container a disk round trip, and a
    /// host crash ends the container anyway).
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.dropped > 0 {
            self.write_marker()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_caps_and_marks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT_LOG), b"old\n").unwrap();
        let mut s = LogSink::open(dir.path(), STDOUT_LOG, 10).unwrap();
        s.write(b"abc").unwrap();
        assert!(!log_truncated(dir.path(), STDOUT_LOG));
        s.write(b"defgh").unwrap();
        assert!(log_truncated(dir.path(), STDOUT_LOG));
        s.write(b"ij").unwrap();
        s.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(STDOUT_LOG)).unwrap(),
            b"old\nabcdef"
        );
        assert!(log_truncated(dir.path(), STDOUT_LOG));
        let marker: serde_json::Value =
            serde_json::from_slice(&std::fs::read(marker_path(dir.path(), STDOUT_LOG)).unwrap())
                .unwrap();
        assert_eq!(marker, serde_json::json!({"limit": 10, "dropped": 4}));
    }

    #[test]
    fn exit_record_round_trips_and_is_absent_before() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit(dir.path()), None);
        let rec = ExitRecord {
            exit_code: None,
            signal: Some(9),
            oom_killed: true,
            finished_at: "2026-01-01T00:00:00.000000000Z".into(),
        };
        write_exit(dir.path(), &rec).unwrap();
        assert_eq!(read_exit(dir.path()), Some(rec));
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert!(text.contains("\"exit_code\":null"), "{text}");
        assert!(!dir.path().join(".exit.json.tmp").exists());
    }
}
