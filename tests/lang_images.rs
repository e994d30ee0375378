//! The language images that `make images` builds (python, gcc; from
//! `rootfs-images/<name>/build.sh` into `build/images/<name>/rootfs`, or
//! `$CORRAL_TEST_IMAGES/<name>/rootfs`), run the way sandboxes run them: read-only
//! root, a tmpfs on /tmp, the workspace bound on /work, uid/gid 1000, no
//! capabilities, no_new_privs. Missing images fail the tests (run `make images`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use corral::bundle::extract::Limits;
use corral::images::ImageStore;
use serde_json::{Value, json};

use common::{Bundle, Corral, tempdir};

/// The directory of built images.
fn images_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("CORRAL_TEST_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/images"))
    })
}

/// The root filesystem of image `name`, asserted to be built.
fn image(name: &str) -> PathBuf {
    let root = images_dir().join(name).join("rootfs");
    assert!(
        root.join("etc/corral-image.json").is_file(),
        "image {name} is not built ({} has no etc/corral-image.json): run `make images`, \
         or set CORRAL_TEST_IMAGES to the directory it built",
        root.display()
    );
    root
}

/// The image's own metadata.
fn metadata(name: &str) -> Value {
    let path = image(name).join("etc/corral-image.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The version `metadata(image)` gives for `language`.
fn version(image: &str, language: &str) -> String {
    let meta = metadata(image);
    meta["languages"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == language))
        .and_then(|l| l["version"].as_str())
        .unwrap_or_else(|| panic!("image {image} declares no {language}: {meta}"))
        .to_string()
}

/// A sandbox-like bundle over the image `name`, with `work` (owned by 1000) on /work.
fn sandbox(name: &str, work: &Path) -> Bundle {
    let mut b = Bundle::new();
    b.set("/root/path", json!(image(name).to_str().unwrap()))
        .set("/root/readonly", json!(true))
        .set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .set("/process/cwd", json!("/work"))
        .set(
            "/process/env",
            json!([
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "HOME=/tmp",
                "LANG=C.UTF-8"
            ]),
        )
        .set("/process/noNewPrivileges", json!(true))
        .capabilities(&[])
        .tmpfs("/tmp", &["nosuid", "nodev", "mode=1777", "size=64m"])
        .bind(work, "/work", &["rw"]);
    b
}

/// A host dir for /work, writable by uid 1000.
fn workspace() -> tempfile::TempDir {
    let dir = tempdir("corral-work-");
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .unwrap();
    dir
}

#[test]
fn python_runs_as_the_sandbox_user_on_a_read_only_root() {
    let c = Corral::new("py");
    let work = workspace();
    let mut b = sandbox("python", work.path());
    b.args(&["python3", "-c", "print(1+1)"]);
    let out = c.run(&c.id("add"), &b).ok();
    assert_eq!(out.lines(), ["2"], "{out}");

    // The version the image declares is the one that runs; the user is `sandbox`.
    b.args(&[
        "python3",
        "-c",
        "import platform, pwd, os; print(platform.python_version()); print(pwd.getpwuid(os.getuid()).pw_name)",
    ]);
    let out = c.run(&c.id("ver"), &b).ok();
    assert_eq!(out.lines(), [version("python", "python"), "sandbox".into()]);

    // The standard library's bytecode is used as it is in the image: never stale,
    // never (re)written (no PYTHONDONTWRITEBYTECODE needed).
    b.args(&["python3", "-v", "-c", "import json, decimal, email.parser"]);
    let out = c.run(&c.id("pyc"), &b).ok();
    assert!(
        out.stderr.contains("json/__pycache__/__init__.cpython-"),
        "json's .pyc was not used:\n{out}"
    );
    for bad in ["bytecode is stale", "could not create", "# created '"] {
        assert!(!out.stderr.contains(bad), "{bad:?} in python -v:\n{out}");
    }
}

#[test]
fn gcc_and_gxx_compile_and_run_in_the_workspace() {
    let c = Corral::new("gcc");
    let work = workspace();
    std::fs::write(
        work.path().join("hello.c"),
        "#include <stdio.h>\nint main(void) { printf(\"hello, %d\\n\", 6 * 7); return 0; }\n",
    )
    .unwrap();
    std::fs::write(
        work.path().join("hello.cpp"),
        "#include <iostream>\n#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; \
         std::cout << \"sum \" << v[0] + v[1] + v[2] << std::endl; }\n",
    )
    .unwrap();
    let mut b = sandbox("gcc", work.path());
    b.args(&[
        "sh",
        "-c",
        "gcc -O2 -Wall -o hello hello.c && ./hello && g++ -O2 -o hellopp hello.cpp && ./hellopp",
    ]);
    let out = c.run(&c.id("cc"), &b).ok();
    assert_eq!(out.lines(), ["hello, 42", "sum 6"], "{out}");
    let meta = std::fs::metadata(work.path().join("hello")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), 1000, "the binary belongs to the sandbox user");

    // The versions declared are the compilers' own.
    b.args(&["sh", "-c", "gcc -dumpfullversion; g++ -dumpfullversion"]);
    let out = c.run(&c.id("ver"), &b).ok();
    assert_eq!(
        out.lines(),
        [version("gcc", "c"), version("gcc", "c++")],
        "{out}"
    );

    // A compile error is an ordinary failure with the diagnostics on stderr.
    std::fs::write(work.path().join("bad.c"), "int main(void) { return x; }\n").unwrap();
    b.args(&["gcc", "-o", "bad", "bad.c"]);
    let out = c.run(&c.id("err"), &b).fails();
    assert!(out.stderr.contains("undeclared"), "{out}");
}

#[test]
fn images_carry_no_apt_docs_or_privilege_bits() {
    for name in ["python", "gcc"] {
        let root = image(name);
        for gone in [
            "usr/bin/apt-get",
            "var/lib/apt/lists",
            "var/cache/apt",
            "usr/share/man",
            "usr/share/locale",
        ] {
            assert!(
                std::fs::symlink_metadata(root.join(gone)).is_err(),
                "{name}: {gone} should not be in the image"
            );
        }
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("sandbox:x:1000:1000:")),
            "{name}: no sandbox user in /etc/passwd:\n{passwd}"
        );
        let out = std::process::Command::new("find")
            .arg(&root)
            .args(["-xdev", "-perm", "/6000", "-type", "f"])
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "{name}: setuid/setgid files: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The built images go through the store's copy (the safe extractor) intact: the
/// languages come out of their metadata, and the copy still runs.
#[test]
fn built_images_import_into_the_store_with_their_languages() {
    common::require_root();
    let tmp = tempdir("corral-lang-store-");
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let limits = Limits {
        max_total_bytes: 2 << 30,
        max_entries: 200_000,
        ..Limits::default()
    };
    for name in ["python", "gcc"] {
        let info = store
            .import_tree(name, &image(name), "test", BTreeMap::new(), &limits)
            .unwrap_or_else(|e| panic!("import {name}: {e}"));
        let declared: Value = metadata(name)["languages"].clone();
        assert_eq!(
            serde_json::to_value(&info.languages).unwrap(),
            declared,
            "{name}"
        );
        assert!(info.size_bytes > 10 << 20, "{name}: {info:?}");
    }
    let c = Corral::new("store");
    let work = workspace();
    let mut b = sandbox("python", work.path());
    let root = store.rootfs("python").unwrap();
    b.set("/root/path", json!(root.to_str().unwrap()));
    b.args(&["python3", "-c", "import sqlite3, ssl, hashlib; print('ok')"]);
    let out = c.run(&c.id("copy"), &b).ok();
    assert_eq!(out.lines(), ["ok"], "{out}");
}
