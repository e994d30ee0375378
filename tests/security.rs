//! Escapes and leaks: the runtime binary must be out of the container's reach
//! (CVE-2019-5736 class), no fd of the runtime may leak in, symlinks in the image must
//! not send mounts to the host, ids must not name paths, and the default process is
//! unprivileged.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::{Bundle, CORRAL, Corral, Outcome, tempdir};

/// Makes `file` the child's fd `target` (without close-on-exec) before it execs.
fn pass_fd(cmd: &mut Command, file: &File, target: i32) {
    let raw = file.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = if raw == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn run_cmd(c: &Corral, id: &str, b: &Bundle, extra: &[&str]) -> Command {
    b.write();
    c.track(id);
    let mut cmd = c.cmd();
    cmd.arg("run")
        .args(extra)
        .arg("--bundle")
        .arg(b.path())
        .arg(id);
    cmd
}

#[test]
fn the_containers_processes_run_the_containers_binary() {
    let c = Corral::new("sec-exe");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.sh(&format!(
        "readlink /proc/1/exe; readlink /proc/self/exe; \
         for p in /proc/[0-9]*; do readlink $p/exe; done | sort -u; \
         test -e {CORRAL} && echo runtime-visible; test -e {} && echo root-visible; \
         exec sleep 300",
        c.root().display()
    ));
    let pid = c.create_and_start(&id, &b);
    c.wait_output(&id, 3);
    let (out, err) = c.container_output(&id);
    assert_eq!(
        out, "/bin/busybox\n/bin/busybox\n/bin/busybox\n",
        "stderr: {err}"
    );
    // From the host: the init is the image's busybox (same inode), not the runtime.
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
    let busybox = std::fs::metadata(common::rootfs().join("bin/busybox")).unwrap();
    assert_eq!((exe.dev(), exe.ino()), (busybox.dev(), busybox.ino()));
}

#[test]
fn a_created_init_is_out_of_reach_of_other_containers() {
    // While created, the init still runs the runtime's binary. Another container that
    // can see it (here: one sharing the host's pid namespace, without CAP_SYS_PTRACE)
    // must not be able to open /proc/<init>/exe, read it, or write through it.
    let c = Corral::new("sec-5736");
    let a = c.id("a");
    let mut ba = Bundle::new();
    ba.args(&["sleep", "300"]);
    c.create(&a, &ba).ok();
    let pid = c.pid(&a);
    // Through the link itself: the binary may have been replaced on disk since.
    let exe = format!("/proc/{pid}/exe");
    let before = std::fs::read(&exe).unwrap();

    let mut bb = Bundle::new();
    bb.without_namespace("pid").sh(&format!(
        "readlink /proc/{pid}/exe; echo readlink-rc=$?; \
         cat /proc/{pid}/exe > /dev/null; echo read-rc=$?; \
         echo pwned >> /proc/{pid}/exe; echo write-rc=$?; \
         for f in /proc/{pid}/fd/*; do readlink $f && echo leaked $f; done; echo fds-checked; \
         cat /proc/{pid}/environ > /dev/null; echo environ-rc=$?"
    ));
    let out = c.run(&c.id("b"), &bb).ok();
    assert_eq!(
        out.lines(),
        [
            "readlink-rc=1",
            "read-rc=1",
            "write-rc=1",
            "fds-checked",
            "environ-rc=1"
        ],
        "{out}"
    );
    assert!(out.stderr.contains("Permission denied"), "{out}");
    assert_eq!(
        std::fs::read(&exe).unwrap(),
        before,
        "the runtime binary was modified"
    );
    assert_eq!(c.status(&a), "created");
}

#[test]
fn only_stdio_reaches_the_container() {
    let c = Corral::new("sec-fds");
    let id = c.id("a");
    let leak = tempdir("corral-leak-");
    let f = File::create(leak.path().join("secret")).unwrap();
    let mut b = Bundle::new();
    // `ls` itself holds fd 3 (the directory it lists).
    b.args(&["ls", "/proc/self/fd"]);
    let mut cmd = run_cmd(&c, &id, &b, &[]);
    pass_fd(&mut cmd, &f, 5);
    let out = Outcome::from_output("corral run (fd 5 open)", cmd.output().unwrap()).ok();
    assert_eq!(out.lines(), ["0", "1", "2", "3"], "{out}");
}

#[test]
fn a_running_init_holds_only_stdio() {
    let c = Corral::new("sec-initfds");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    let pid = c.create_and_start(&id, &b);
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    fds.sort();
    assert_eq!(
        fds,
        [0, 1, 2],
        "the init kept runtime fds (state lock, fifo, ...)"
    );
}

#[test]
fn preserve_fds_passes_exactly_the_extra_fds() {
    let c = Corral::new("sec-preserve");
    let id = c.id("a");
    let dir = tempdir("corral-preserve-");
    std::fs::write(dir.path().join("three"), "content of fd 3\n").unwrap();
    std::fs::write(dir.path().join("four"), "content of fd 4\n").unwrap();
    let three = File::open(dir.path().join("three")).unwrap();
    let four = File::open(dir.path().join("four")).unwrap();
    let mut b = Bundle::new();
    b.sh("cat <&3; if [ -e /proc/self/fd/4 ]; then echo fd4-leaked; else echo fd4-closed; fi");
    let mut cmd = run_cmd(&c, &id, &b, &["--preserve-fds", "1"]);
    pass_fd(&mut cmd, &three, 3);
    pass_fd(&mut cmd, &four, 4);
    let out = Outcome::from_output("corral run --preserve-fds 1", cmd.output().unwrap()).ok();
    assert_eq!(out.lines(), ["content of fd 3", "fd4-closed"], "{out}");
}

/// A rootfs copy with `mnt/abs -> <host>` and `mnt/rel -> ../../../..<host>`.
fn hostile_bundle(host: &Path) -> Bundle {
    let b = Bundle::with_rootfs_copy();
    let mnt = b.rootfs().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::os::unix::fs::symlink(host, mnt.join("abs")).unwrap();
    let rel = format!(
        "{}{}",
        "../".repeat(12),
        host.to_str().unwrap().trim_start_matches('/')
    );
    std::os::unix::fs::symlink(rel, mnt.join("rel")).unwrap();
    b
}

fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect()
}

#[test]
fn symlinks_in_the_image_cannot_send_mounts_to_the_host() {
    let c = Corral::new("sec-symlink");
    let id = c.id("a");
    let host = tempdir("corral-escape-");
    let mut b = hostile_bundle(host.path());
    let host_str = host.path().to_str().unwrap();
    b.tmpfs("/mnt/abs/x", &[])
        .tmpfs("/mnt/rel/y", &[])
        .bind(host.path(), "/mnt/abs/bound", &["ro"])
        .sh(&format!(
            "awk '{{print $5}}' /proc/self/mountinfo | grep ^{host_str}/ | sort; exec sleep 300"
        ));
    c.create(&id, &b).ok();
    assert!(
        entries(host.path()).is_empty(),
        "create wrote into the host dir: {:?}",
        entries(host.path())
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(host_str),
        "a container mount landed on the host: {mounts}"
    );
    // The mounts were made where the links point inside the rootfs.
    let inside = b.rootfs().join(host.path().strip_prefix("/").unwrap());
    for d in ["x", "y", "bound"] {
        assert!(
            inside.join(d).is_dir(),
            "{} missing",
            inside.join(d).display()
        );
    }
    c.start(&id).ok();
    c.wait_output(&id, 3);
    let want = ["bound", "x", "y"]
        .map(|d| format!("{host_str}/{d}\n"))
        .concat();
    assert_eq!(c.container_output(&id).0, want);
    assert!(entries(host.path()).is_empty());
}

/// proc and sysfs go on ordinary directories only (runc's rule): an image whose `/proc`
/// or `/sys` is a symlink, to a host path or inside the image, or whose `/proc` is a file,
/// is refused by name, and nothing reaches the link's target.
#[test]
fn proc_and_sys_are_mounted_on_ordinary_directories_only() {
    let c = Corral::new("sec-procsym");
    let host = tempdir("corral-escape-");
    for (i, (dir, target, why)) in [
        ("proc", Some(host.path().to_path_buf()), "symlink"),
        ("sys", Some(host.path().to_path_buf()), "symlink"),
        ("proc", Some("tmp".into()), "symlink"),
        ("proc", None, "not a directory"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Bundle::with_rootfs_copy();
        let path = b.rootfs().join(dir);
        std::fs::remove_dir(&path).unwrap();
        match &target {
            Some(t) => std::os::unix::fs::symlink(t, &path).unwrap(),
            None => std::fs::write(&path, "").unwrap(),
        }
        b.sh("grep -c ^Name: /proc/self/status");
        let id = c.id(&format!("{dir}{i}"));
        let fs = if dir == "proc" { "proc" } else { "sysfs" };
        c.run(&id, &b).one_line_error(&[
            &format!("filesystem {fs} must be mounted on an ordinary directory"),
            &format!("/{dir}"),
            why,
        ]);
        assert!(
            entries(host.path()).is_empty(),
            "{dir} was mounted on the host dir"
        );
    }
}

#[test]
fn ids_are_limited_to_a_safe_charset() {
    let c = Corral::new("sec-ids");
    let b = Bundle::new();
    b.write();
    let long = "x".repeat(1025);
    for id in [
        "a b",
        "a;b",
        "a$b",
        "a\\b",
        "a*b",
        "a\tb",
        "a\nb",
        "é",
        "a:b",
        long.as_str(),
    ] {
        let out = c.exec(&["create", "--bundle", b.path().to_str().unwrap(), id]);
        out.one_line_error(&["invalid container id"]);
    }
    assert!(entries(c.root()).is_empty(), "{:?}", entries(c.root()));
    // Every allowed character.
    let ok = c.id("AZaz09_+.-");
    let mut b = Bundle::new();
    b.args(&["true"]);
    c.run(&ok, &b).ok();
}

#[test]
fn ids_cannot_reach_outside_the_state_root() {
    // A directory next to the state root that looks like a container: commands given
    // "../<name>" must refuse it, not act on it.
    let c = Corral::new("sec-decoy");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create(&id, &b).ok();
    let parent = tempdir("corral-decoy-");
    let decoy = parent.path().join("decoy");
    Command::new("cp")
        .arg("-a")
        .arg(c.root().join(&id))
        .arg(&decoy)
        .status()
        .unwrap();
    let rel = format!("../{}", decoy.strip_prefix("/").unwrap().display());
    let rel = format!(
        "{}{}",
        "../".repeat(c.root().components().count()),
        rel.trim_start_matches("../")
    );
    for args in [
        vec!["delete", "--force", &rel],
        vec!["kill", &rel, "KILL"],
        vec!["state", &rel],
        vec!["start", &rel],
    ] {
        c.exec(&args).one_line_error(&["invalid container id"]);
    }
    assert!(
        decoy.join("state.json").exists(),
        "the decoy outside the root was touched"
    );
    assert_eq!(c.status(&id), "created", "the real container was affected");
}

#[test]
fn the_default_process_cannot_mount_or_remount() {
    let c = Corral::new("sec-mount");
    let mut b = Bundle::new();
    b.sh(
        "mount -o remount,rw /; echo remount-rc=$?; mount -t tmpfs t /tmp; echo mount-rc=$?; \
         umount /proc/keys; echo umount-rc=$?; wc -c < /proc/keys",
    );
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        out.lines(),
        ["remount-rc=1", "mount-rc=1", "umount-rc=1", "0"],
        "{out}"
    );
}

#[test]
fn runtime_state_is_not_visible_inside() {
    let c = Corral::new("sec-state");
    let mut b = Bundle::new();
    b.sh(&format!(
        "ls {root} 2>/dev/null && echo root-visible; ls {bundle} 2>/dev/null && echo bundle-visible; echo done",
        root = c.root().display(),
        bundle = b.path().display()
    ));
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "done\n");
}
