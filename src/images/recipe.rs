//! Recipes: scripts that build a root filesystem into a directory
//! (`rootfs-images/<recipe>/build.sh OUTDIR`). They are the operator's own
//! files, trusted like the service binary; what they print is kept only to
//! explain a failure.

use std::path::Path;
use std::process::{Command, Stdio};

/// Bytes of a failing recipe's stderr kept in the error.
const STDERR_TAIL: usize = 2048;

/// The recipe name of `script`: its directory's name (`busybox` for
/// `rootfs-images/busybox/build.sh`), else the script's own file stem.
pub(super) fn recipe_name(script: &Path) -> String {
    script
        .parent()
        .and_then(Path::file_name)
        .or_else(|| script.file_stem())
        .map_or_else(
            || "unknown".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// Runs `script OUTDIR` (stdin closed, output captured) and waits for it.
/// The error says how it failed, with the end of its stderr.
pub(super) fn run(script: &Path, outdir: &Path) -> Result<(), String> {
    let output = Command::new(script)
        .arg(outdir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let trimmed = stderr.trim_end();
    let start = trimmed
        .char_indices()
        .rev()
        .take_while(|(i, _)| trimmed.len() - i <= STDERR_TAIL)
        .last()
        .map_or(trimmed.len(), |(i, _)| i);
    Err(format!("{}: {}", output.status, &trimmed[start..]))
}
