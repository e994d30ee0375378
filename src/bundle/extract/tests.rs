//! Real extractions into temp dirs, of archives built in memory.

use std::fs;
use std::io::{Cursor, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use tar::{EntryType, Header};

use super::*;

const MTIME: u64 = 1_600_000_000;

/// Archive builder writing names raw, so that hostile ones survive.
struct Ar(tar::Builder<Vec<u8>>);

impl Ar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn raw(mut self, kind: EntryType, path: &str, mode: u32, link: &str, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        if path.len() > 100 {
            // GNU long name; the builder refuses `..` and `/` here, which
            // the tests needing long names do not use.
            self.0.append_data(&mut h, path, data).unwrap();
            return self;
        }
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, path, mode, "", data)
    }
    fn dir(self, path: &str, mode: u32) -> Self {
        self.raw(EntryType::Directory, path, mode, "", b"")
    }
    fn symlink(self, path: &str, target: &str) -> Self {
        self.raw(EntryType::Symlink, path, 0o777, target, b"")
    }
    fn link(self, path: &str, target: &str) -> Self {
        self.raw(EntryType::Link, path, 0o644, target, b"")
    }
    /// A pax extended header applying `records` to the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(EntryType::XHeader, "PaxHeader", 0o644, "", &data)
    }
    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
    fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A temp dir holding `dest` (empty) and `outside` (empty), nothing else.
struct Scene {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        Self { tmp, dest, outside }
    }
    fn out(&self) -> &str {
        self.outside.to_str().unwrap()
    }
    fn extract(&self, archive: Vec<u8>, limits: &Limits) -> Result<Extracted, ExtractError> {
        extract(Cursor::new(archive), &self.dest, limits)
    }
    fn layer(&self, archive: Vec<u8>) -> Result<Extracted, ExtractError> {
        apply_layer(Cursor::new(archive), &self.dest, &Limits::default())
    }
    fn assert_clean(&self) {
        assert_eq!(names(&self.dest), Vec::<String>::new(), "dest not empty");
        assert_eq!(
            names(&self.outside),
            Vec::<String>::new(),
            "outside written"
        );
        assert_eq!(
            names(self.tmp.path()),
            ["dest", "outside"],
            "sibling written"
        );
    }
    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dest.join(rel)).unwrap()
    }
    fn meta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.dest.join(rel)).unwrap()
    }
    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.dest.join(rel)).is_ok()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn perm(m: &fs::Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

fn good_archive() -> Ar {
    Ar::new()
        .dir("./", 0o700)
        .dir("etc/", 0o750)
        .file("etc/conf", 0o640, b"hello")
        .file("bin/tool", 0o755, b"#!/bin/sh\n")
        .symlink("lib", "usr/lib")
        .symlink("passwd", "/etc/passwd")
        .link("etc/conf2", "etc/conf")
        .dir("tmp", 0o1777)
        .file("./usr//lib/./x", 0o600, b"x")
}

#[test]
fn good_archive_plain_and_gzip() {
    for archive in [good_archive().tar(), good_archive().gz()] {
        let s = Scene::new();
        let dest_mode = perm(&fs::metadata(&s.dest).unwrap());
        let done = s.extract(archive, &Limits::default()).unwrap();
        assert_eq!(
            done,
            Extracted {
                entries: 9,
                bytes: 5 + 10 + 1
            }
        );
        assert_eq!(
            names(&s.dest),
            ["bin", "etc", "lib", "passwd", "tmp", "usr"]
        );
        assert_eq!(s.read("etc/conf"), "hello");
        assert_eq!(s.read("usr/lib/x"), "x");
        assert_eq!(perm(&s.meta("etc")), 0o750);
        assert_eq!(perm(&s.meta("etc/conf")), 0o640);
        assert_eq!(perm(&s.meta("bin/tool")), 0o755);
        assert_eq!(perm(&s.meta("bin")), 0o755, "implied parent");
        assert_eq!(perm(&s.meta("tmp")), 0o1777, "sticky kept on dirs");
        assert_eq!(
            fs::read_link(s.dest.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(
            fs::read_link(s.dest.join("passwd")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(s.meta("etc/conf2").ino(), s.meta("etc/conf").ino());
        for rel in ["etc", "etc/conf", "lib", "tmp"] {
            assert_eq!(s.meta(rel).mtime(), MTIME as i64, "{rel}");
        }
        assert_eq!(
            perm(&fs::metadata(&s.dest).unwrap()),
            dest_mode,
            "./ ignored"
        );
    }
}

#[test]
fn ownership_and_pax_records() {
    let archive = Ar::new()
        .pax(&[
            ("mtime", b"1234567890.5"),
            ("uid", b"4000000"),
            ("SCHILY.xattr.user.x", b"y"),
        ])
        .file("f", 0o644, b"data")
        .pax(&[("uid", b"1234")])
        .symlink("l", "f") // chown must not reach f through l
        .pax(&[("path", b"a-very-long-name-".repeat(10).as_slice())])
        .file("ignored", 0o644, b"");
    let s = Scene::new();
    s.extract(archive.tar(), &Limits::default()).unwrap();
    let m = s.meta("f");
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 500_000_000));
    if fsops::running_as_root() {
        assert_eq!(m.uid(), 4_000_000);
        assert_eq!(s.meta("l").uid(), 1234);
    }
    assert!(s.exists(&"a-very-long-name-".repeat(10)));
}

#[test]
fn privilege_bits_are_stripped() {
    let s = Scene::new();
    let archive = Ar::new()
        .file("suid", 0o4755, b"")
        .file("sgid", 0o2755, b"")
        .file("sticky", 0o1644, b"")
        .dir("gdir", 0o2775)
        .dir("tmp", 0o1777);
    s.extract(archive.tar(), &Limits::default()).unwrap();
    let modes: Vec<u32> = ["suid", "sgid", "sticky", "gdir", "tmp"]
        .iter()
        .map(|p| perm(&s.meta(p)))
        .collect();
    assert_eq!(modes, [0o755, 0o755, 0o644, 0o775, 0o1777]);
}

/// Runs a hostile archive (prefixed with a benign entry, so cleanup has
/// something to undo) and checks that nothing stayed anywhere.
fn attack(build: impl FnOnce(&Scene, Ar) -> Ar, limits: &Limits) -> String {
    let s = Scene::new();
    let archive = build(&s, Ar::new().file("ok/file", 0o644, b"fine")).tar();
    let err = s
        .extract(archive, limits)
        .expect_err("hostile archive accepted");
    s.assert_clean();
    err.to_string()
}

fn msg(build: impl FnOnce(&Scene, Ar) -> Ar) -> String {
    attack(build, &Limits::default())
}

#[test]
fn path_escapes_are_refused() {
    assert_eq!(
        msg(|_, a| a.file("../x", 0o644, b"x")),
        r#"entry "../x": path leaves the destination"#
    );
    assert!(msg(|_, a| a.file("a/../../x", 0o644, b"x")).ends_with("path leaves the destination"));
    let abs = msg(|s, a| a.file(&format!("{}/pwned", s.out()), 0o644, b"x"));
    assert!(abs.ends_with("path leaves the destination"), "{abs}");
    assert_eq!(
        msg(|_, a| a.file("", 0o644, b"")),
        r#"entry "": path is empty"#
    );
    assert_eq!(
        msg(|_, a| a.pax(&[("path", b"a\0b")]).file("x", 0o644, b"")),
        r#"entry "a\0b": path contains a NUL byte"#
    );
}

#[test]
fn symlinks_are_never_followed() {
    let through = r#"entry "a/pwned": path goes through a symlink"#;
    assert_eq!(
        msg(|s, a| a.symlink("a", s.out()).file("a/pwned", 0o644, b"x")),
        through
    );
    assert_eq!(
        msg(|_, a| a.symlink("a", "..").file("a/x", 0o644, b"x")),
        r#"entry "a/x": path goes through a symlink"#
    );
    assert!(
        msg(|s, a| a.symlink("a", s.out()).dir("a/sub/", 0o755))
            .ends_with("goes through a symlink")
    );
    // The exact attack, against the real /etc.
    let before = fs::metadata("/etc/passwd").unwrap();
    let err = msg(|_, a| {
        a.symlink("a", "/etc")
            .file("a/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
    });
    assert_eq!(err, r#"entry "a/passwd": path goes through a symlink"#);
    let after = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        (before.ino(), before.len(), before.mtime()),
        (after.ino(), after.len(), after.mtime())
    );
}

#[test]
fn hard_links_stay_inside() {
    assert_eq!(
        msg(|_, a| a.link("a/b", "/etc/passwd")),
        r#"entry "a/b": hard link target "/etc/passwd" leaves the destination"#
    );
    assert!(
        msg(|_, a| a.link("h", "../outside/f"))
            .ends_with(r#"hard link target "../outside/f" leaves the destination"#)
    );
    assert!(
        msg(|s, a| a.symlink("l", s.out()).link("h", "l/f"))
            .ends_with(r#"hard link target "l/f" goes through a symlink"#)
    );
    assert!(msg(|_, a| a.link("h", "nope")).ends_with(r#"hard link target "nope" does not exist"#));
    assert!(msg(|_, a| a.link("h", "ok")).ends_with(r#"hard link target "ok" is a directory"#));
}

#[test]
fn special_files_are_refused() {
    let special = |kind, path: &'static str| msg(move |_, a| a.raw(kind, path, 0o600, "", b""));
    assert_eq!(
        special(EntryType::Block, "dev/sda"),
        r#"entry "dev/sda": block devices are not allowed"#
    );
    assert_eq!(
        special(EntryType::Char, "dev/null"),
        r#"entry "dev/null": character devices are not allowed"#
    );
    assert_eq!(
        special(EntryType::Fifo, "p"),
        r#"entry "p": fifos are not allowed"#
    );
    let pax_sparse = msg(|_, a| a.pax(&[("GNU.sparse.major", b"1")]).file("s", 0o644, b""));
    assert_eq!(pax_sparse, r#"entry "s": sparse files are not allowed"#);
    assert_eq!(
        special(EntryType::new(b'V'), "v"),
        r#"entry "v": entry type 'V' is not supported"#
    );
    assert_eq!(
        msg(|_, a| a.file("a/.wh.b", 0o644, b"")),
        r#"entry "a/.wh.b": whiteout files are only allowed in image layers"#
    );
}

#[test]
fn limits_are_enforced() {
    let limits = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let many = |_: &Scene, a: Ar| (0..5).fold(a, |a, i| a.file(&format!("f{i}"), 0o644, b""));
    assert_eq!(
        attack(many, &limits(|l| l.max_entries = 3)),
        "archive has more than 3 entries"
    );
    let big = |_: &Scene, a: Ar| a.file("big", 0o644, &vec![7u8; 1 << 20]);
    assert_eq!(
        attack(big, &limits(|l| l.max_total_bytes = 65536)),
        "archive exceeds 65536 bytes uncompressed"
    );
    let deep = |_: &Scene, a: Ar| a.file("a/b/c/d/e", 0o644, b"");
    assert_eq!(
        attack(deep, &limits(|l| l.max_path_depth = 4)),
        r#"entry "a/b/c/d/e": path is 5 components deep, over the limit of 4"#
    );
    let long = |_: &Scene, a: Ar| a.file(&"d/".repeat(70), 0o644, b""); // GNU long name
    assert!(msg(long).ends_with("path is 70 components deep, over the limit of 64"));
    let wide = |_: &Scene, a: Ar| a.file(&"n".repeat(60), 0o644, b"");
    assert!(
        attack(wide, &limits(|l| l.max_path_len = 50))
            .ends_with("path is 60 bytes long, over the limit of 50")
    );
}

#[test]
fn zip_bomb_is_stopped_by_ratio() {
    let s = Scene::new();
    let zeros = vec![0u8; 50 << 20];
    let bomb = Ar::new().file("zeros", 0o644, &zeros).gz();
    let limits = Limits {
        max_compression_ratio: 100,
        ..Limits::default()
    };
    let err = s.extract(bomb, &limits).unwrap_err();
    assert!(
        matches!(err, ExtractError::CompressionRatio { limit: 100, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("gzip stream expands more than 100 times")
    );
    s.assert_clean();
}

#[test]
fn broken_streams_are_refused() {
    let s = Scene::new();
    // A bad CRC is only noticed after the tar end marker: the drain checks it.
    let mut gz = good_archive().gz();
    let crc = gz.len() - 8;
    gz[crc] ^= 0xff;
    let err = s.extract(gz, &Limits::default()).unwrap_err();
    assert!(err.to_string().starts_with("gzip stream: "), "{err}");
    s.assert_clean();
    let tar = Ar::new().file("f", 0o644, &[1u8; 4096]).tar();
    let err = s
        .extract(tar[..2048].to_vec(), &Limits::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"entry "f": archive ends after 1536 of 4096 data bytes"#
    );
    s.assert_clean();
    let err = s
        .extract(good_archive().gz()[..200].to_vec(), &Limits::default())
        .unwrap_err();
    assert!(err.to_string().starts_with("gzip stream: "), "{err}");
    s.assert_clean();
}

#[test]
fn destination_must_be_an_empty_directory() {
    let s = Scene::new();
    fs::write(s.dest.join("keep"), "mine").unwrap();
    let err = s
        .extract(good_archive().tar(), &Limits::default())
        .unwrap_err();
    assert!(
        matches!(err, ExtractError::DestinationNotEmpty { .. }),
        "{err}"
    );
    assert_eq!(s.read("keep"), "mine");
    let missing = s.tmp.path().join("missing");
    let err = extract(
        Cursor::new(good_archive().tar()),
        &missing,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::Destination { .. }), "{err}");
}

#[test]
fn duplicates_replace_without_following() {
    let s = Scene::new();
    let archive = Ar::new()
        .file("f", 0o644, b"one")
        .file("f", 0o600, b"two")
        .file("orig", 0o644, b"orig")
        .link("h", "orig")
        .file("h", 0o644, b"new") // must not write through the hard link
        .symlink("s", "/etc/passwd")
        .file("s", 0o644, b"plain") // must replace the link, not follow it
        .dir("d", 0o700)
        .file("d/keep", 0o644, b"k")
        .dir("d", 0o755)
        .file("x", 0o644, b"")
        .dir("x", 0o711)
        .dir("y/z", 0o755)
        .file("y", 0o644, b"file over dir");
    s.extract(archive.tar(), &Limits::default()).unwrap();
    assert_eq!((s.read("f"), perm(&s.meta("f"))), ("two".into(), 0o600));
    assert_eq!((s.read("orig"), s.read("h")), ("orig".into(), "new".into()));
    assert_ne!(s.meta("orig").ino(), s.meta("h").ino());
    assert!(s.meta("s").is_file());
    assert_eq!((s.read("d/keep"), perm(&s.meta("d"))), ("k".into(), 0o755));
    assert!(s.meta("x").is_dir());
    assert_eq!(s.read("y"), "file over dir");
}

#[test]
fn whiteouts_hide_lower_content() {
    let s = Scene::new();
    let lower = Ar::new()
        .file("a/b", 0o644, b"b")
        .file("a/c", 0o644, b"c")
        .file("d/old", 0o644, b"")
        .file("d/sub/deep", 0o644, b"")
        .file("e/gone/deep", 0o644, b"");
    s.layer(lower.gz()).unwrap();
    let upper = Ar::new()
        .file("a/.wh.b", 0o644, b"")
        .file("d/early", 0o644, b"") // this layer's, before the marker: kept
        .file("d/.wh..wh..opq", 0o644, b"")
        .file("d/new", 0o644, b"")
        .file("e/.wh.gone", 0o644, b"")
        .file("nodir/.wh.x", 0o644, b"") // nothing to hide
        .file(".wh..wh.plnk", 0o644, b""); // AUFS metadata, ignored
    let done = s.layer(upper.tar()).unwrap();
    assert_eq!(done.entries, 7);
    assert_eq!(names(&s.dest.join("a")), ["c"]);
    assert_eq!(names(&s.dest.join("d")), ["early", "new"]);
    assert_eq!(names(&s.dest.join("e")), Vec::<String>::new());
    assert!(!s.exists("nodir") && !s.exists(".wh..wh.plnk"));
}

#[test]
fn layers_refuse_symlinked_parents_and_bad_whiteouts() {
    let s = Scene::new();
    fs::write(s.outside.join("victim"), "v").unwrap();
    s.layer(Ar::new().symlink("lib", s.out()).tar()).unwrap();
    let err = s
        .layer(Ar::new().file("lib/.wh.victim", 0o644, b"").tar())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"entry "lib/.wh.victim": path goes through a symlink"#
    );
    let err = s
        .layer(Ar::new().file("lib/evil", 0o644, b"").tar())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"entry "lib/evil": path goes through a symlink"#
    );
    assert_eq!(names(&s.outside), ["victim"]);
    let err = s
        .layer(Ar::new().file("x/.wh...", 0o644, b"").tar())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"entry "x/.wh...": whiteout does not name a file"#
    );
    let err = s
        .layer(Ar::new().file(".wh.x/y", 0o644, b"").tar())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"entry ".wh.x/y": a whiteout cannot have children"#
    );
}

#[test]
fn openat2_and_component_walk_agree() {
    let s = Scene::new();
    fs::create_dir_all(s.dest.join("d/e")).unwrap();
    fs::write(s.dest.join("f"), "").unwrap();
    symlink(&s.outside, s.dest.join("abs")).unwrap();
    symlink("d", s.dest.join("rel")).unwrap();
    let root = fsops::open_root(&s.dest).unwrap();
    for openat2 in [true, false] {
        let open = |rel: &str, create| {
            fsops::open_dir_with(root.as_fd(), rel.as_bytes(), create, openat2).map(drop)
        };
        assert_eq!(open("d/e", false), Ok(()));
        assert_eq!(open("abs", false), Err(Errno::ELOOP), "openat2={openat2}");
        assert_eq!(open("abs/x", true), Err(Errno::ELOOP));
        assert_eq!(open("rel/e", false), Err(Errno::ELOOP));
        assert_eq!(open("f/x", true), Err(Errno::ENOTDIR));
        assert_eq!(open("n/m", false), Err(Errno::ENOENT));
        assert_eq!(open(&format!("n{openat2}/m"), true), Ok(()));
    }
    assert_eq!(perm(&s.meta("ntrue")), 0o755);
    assert_eq!(names(&s.outside), Vec::<String>::new());
}

#[test]
fn pax_times_parse() {
    let t = |s: &str| meta::parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
    assert_eq!(t("12"), Some((12, 0)));
    assert_eq!(t("12.000000001999"), Some((12, 1)));
    assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
    assert_eq!(t("1e3"), None);
    assert_eq!(t(""), None);
}
