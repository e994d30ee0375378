//! No process starts in, or from, the kernel's own file systems: a `cwd` or program under
//! `/proc`, `/sys` or `/dev` is how a process reaches what the runtime holds
//! (`/proc/self/fd/N`, `/proc/self/exe`, `/proc/1/root`: runc's CVE-2024-21626 and
//! CVE-2019-5736). The runtime checks the real cwd and program after it resolves them;
//! this rule refuses them before anything is made (defence in depth).
//!
//! Lexical, like the rest of the policy: `.` and `..` are folded as the kernel would
//! fold them from the root, so `/tmp/../proc/self/exe` is refused too.

use std::path::{Component, Path, PathBuf};

use super::Violation;

/// The roots a process may neither start in nor exec from.
pub const SYSTEM_ROOTS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The process fields this rule reads, each with the JSON path it reports.
pub struct ProcessPaths<'a> {
    /// `process.cwd` (or the request's own field name), with the path it is at.
    pub cwd: Option<(&'a str, &'a str)>,
    /// `process.args`: the program is `args[0]`.
    pub args: Option<(&'a str, &'a [String])>,
    /// `process.env`: `PATH` decides where a program without a `/` is looked up.
    pub env: Option<(&'a str, &'a [String])>,
}

/// Pushes a violation for each field of `p` that leads into a system root.
pub fn check(p: &ProcessPaths<'_>, out: &mut Vec<Violation>) {
    let cwd = p.cwd.map(|(_, c)| c).unwrap_or("/");
    if let Some((field, c)) = p.cwd
        && let Some(root) = system_root(Path::new("/"), c)
    {
        out.push(refused(field, c, root, "the working directory"));
    }
    if let Some((field, args)) = p.args
        && let Some(program) = args.first()
        && program.contains('/')
        && let Some(root) = system_root(Path::new(cwd), program)
    {
        out.push(refused(
            &format!("{field}[0]"),
            program,
            root,
            "the program",
        ));
    }
    if let Some((field, env)) = p.env {
        for (i, e) in env.iter().enumerate() {
            let Some(path) = e.strip_prefix("PATH=") else {
                continue;
            };
            for dir in path.split(':') {
                if let Some(root) = system_root(Path::new(cwd), dir) {
                    out.push(refused(
                        &format!("{field}[{i}]"),
                        dir,
                        root,
                        "a PATH directory",
                    ));
                    break;
                }
            }
        }
    }
}

fn refused(field: &str, value: &str, root: &str, what: &str) -> Violation {
    Violation::new(
        field,
        format!(
            "{value:?}: {what} may not be under {root} (the kernel's file systems lead out of the container)"
        ),
    )
}

/// The system root that `path` (relative paths taken from `base`) lies in, if any.
pub fn system_root(base: &Path, path: &str) -> Option<&'static str> {
    let folded = fold(&base.join(path));
    SYSTEM_ROOTS
        .into_iter()
        .find(|root| folded.starts_with(root))
}

/// `path` with `.`, `..` and repeated separators folded from the root (`..` of `/` is
/// `/`, as in the kernel).
fn fold(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(cwd: &str, args: &[&str], env: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        check(
            &ProcessPaths {
                cwd: Some(("process.cwd", cwd)),
                args: Some(("process.args", &args)),
                env: Some(("process.env", &env)),
            },
            &mut out,
        );
        out.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn system_paths_are_refused_by_field() {
        assert_eq!(violations("/proc/self/fd/7", &["sh"], &[]), ["process.cwd"]);
        assert_eq!(violations("/proc/1/root/..", &["sh"], &[]), ["process.cwd"]);
        assert_eq!(violations("/tmp/../sys", &["sh"], &[]), ["process.cwd"]);
        assert_eq!(violations("//dev//", &["sh"], &[]), ["process.cwd"]);
        assert_eq!(
            violations("/", &["/proc/self/exe"], &[]),
            ["process.args[0]"]
        );
        assert_eq!(
            violations("/proc", &["self/fd/3/bin/sh"], &[]),
            ["process.cwd", "process.args[0]"]
        );
        assert_eq!(
            violations("/", &["../../proc/self/exe"], &[]),
            ["process.args[0]"]
        );
        assert_eq!(
            violations("/", &["sh"], &["A=1", "PATH=/bin:/proc/self/fd/3"]),
            ["process.env[1]"]
        );
    }

    #[test]
    fn ordinary_paths_pass() {
        assert!(violations("/", &["sh"], &["PATH=/usr/bin:/bin"]).is_empty());
        assert!(violations("/box", &["./a.out"], &[]).is_empty());
        assert!(violations("/procfs", &["/device/x"], &[]).is_empty());
        assert!(violations("/home/sys", &["../dev-tools/run"], &[]).is_empty());
        // A name without a slash is looked up in PATH, which is checked on its own.
        assert!(violations("/", &["proc"], &[]).is_empty());
    }
}
