//! Property tests of [`extract`] over generated hostile archives (see [`hostile`]), against
//! an oracle written apart from it (see [`model`]).
//!
//! Each case extracts into `R/l1/box/dest`, where `R` also holds canary files,
//! directories and symlinks (one of them to a second temp dir, `FAR`), and the archive's
//! symlinks and hard links aim at them. Properties, for every case:
//!
//! * nothing outside `dest` changes (type, mode, owner, size, content, times, inode, link
//!   count of everything under `R` and `FAR`), and `dest` keeps its mode and owner: no
//!   path escapes and no symlink is followed, not even one outside `dest`;
//! * when the oracle says the archive is valid, extraction succeeds and `dest` holds
//!   exactly the oracle's tree (names, types, content, symlink targets, hard link groups,
//!   modes with privilege bits stripped, mtimes, owners when root), with the oracle's
//!   counts;
//! * when the oracle refuses the archive, extraction fails, leaves `dest` empty, and the
//!   service answers the error with a 4xx (never a 500: the upload caused it).
//!
//! The run is seeded ([`crate::testing::seeded_runner`]), so a failure reproduces.

mod hostile;
mod model;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, fstatat};

use proptest::test_runner::TestCaseError;

use super::{ExtractError, extract};
use hostile::Archive;
use model::{Content, Model, Node};

/// Cases of the property: with up to 12 members each, about 18 s in release mode on two
/// busy cores.
const CASES: u32 = 2500;

/// The temp dirs of a run: `R` (with `dest` inside) and `FAR`.
struct Scene {
    root: tempfile::TempDir,
    far: tempfile::TempDir,
    dest: PathBuf,
    /// Everything under `R` but `dest`, and under `FAR`, before the run.
    before: BTreeMap<PathBuf, String>,
    dest_meta: (u32, u32, u32),
}

impl Scene {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let far = tempfile::tempdir().expect("temp dir");
        let r = root.path();
        let dest = r.join("l1/box/dest");
        fs::create_dir_all(&dest).expect("mkdir dest");
        let write = |p: PathBuf, text: &str| fs::write(p, text).expect("write canary");
        write(r.join("canary_file"), "canary");
        fs::create_dir(r.join("canary_dir")).expect("mkdir");
        write(r.join("canary_dir/inner_file"), "inner");
        write(r.join("l1/canary_file"), "l1");
        write(r.join("l1/box/sibling_file"), "sibling");
        symlink(far.path(), r.join("l1/box/canary_link")).expect("symlink");
        symlink(r.join("canary_file"), r.join("l1/box/ln_canary")).expect("symlink");
        write(far.path().join("far_file"), "far");
        fs::create_dir(far.path().join("far_dir")).expect("mkdir");
        let meta = fs::metadata(&dest).expect("stat dest");
        let mut scene = Scene {
            root,
            far,
            dest,
            before: BTreeMap::new(),
            dest_meta: (meta.mode(), meta.uid(), meta.gid()),
        };
        scene.before = scene.outside();
        scene
    }

    /// Symlink and hard link targets that lead out of `dest`.
    fn canaries(&self) -> Vec<Vec<u8>> {
        let r = self.root.path();
        let abs = [
            r.join("canary_file"),
            r.join("canary_dir"),
            r.join("canary_dir/inner_file"),
            self.far.path().to_path_buf(),
            self.far.path().join("far_file"),
            r.join("l1/box/canary_link"),
            self.dest.clone(),
        ];
        let rel = [
            "..",
            "../sibling_file",
            "../canary_link",
            "../canary_link/far_dir",
            "../ln_canary",
            "../../canary_file",
            "../../../canary_dir",
            "../../../canary_dir/inner_file",
            "/",
        ];
        abs.iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .chain(rel.iter().map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    /// A description of everything under `R` (but `dest`) and `FAR`, never following a
    /// symlink.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for top in [self.root.path(), self.far.path()] {
            describe_tree(top, &self.dest, &mut out);
        }
        out
    }

    /// Empties `dest` (whatever modes the extraction left).
    fn clear(&self) {
        for e in fs::read_dir(&self.dest).expect("list dest").flatten() {
            let p = e.path();
            let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            if is_dir {
                open_up(&p);
                fs::remove_dir_all(&p).expect("remove");
            } else {
                fs::remove_file(&p).expect("remove");
            }
        }
    }
}

/// Gives the owner full access to every directory under `dir`, so that it can be removed.
fn open_up(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&e.path());
        }
    }
}

fn describe_tree(path: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    if path == skip {
        return;
    }
    let Ok(m) = fs::symlink_metadata(path) else {
        out.insert(path.to_owned(), "unreadable".into());
        return;
    };
    let what = if m.file_type().is_symlink() {
        format!("-> {:?}", fs::read_link(path).ok())
    } else if m.is_file() {
        format!("{:?}", fs::read(path).ok())
    } else {
        String::new()
    };
    out.insert(
        path.to_owned(),
        format!(
            "mode {:o} owner {}:{} size {} mtime {}.{} ctime {}.{} ino {} nlink {} {what}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.nlink()
        ),
    );
    if m.is_dir() {
        for e in fs::read_dir(path).into_iter().flatten().flatten() {
            describe_tree(&e.path(), skip, out);
        }
    }
}

/// One name in `dest` as `lstat` and a read that never follows show it.
struct Seen {
    kind: SeenKind,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    ino: u64,
}

enum SeenKind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Other,
}

/// What is in the directory `dir`, by path (as components). Works from directory fds:
/// the tree may be deeper than PATH_MAX.
fn observe(dir: BorrowedFd<'_>, prefix: &model::Path, out: &mut BTreeMap<model::Path, Seen>) {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let this = openat(dir, ".", flags | OFlag::O_DIRECTORY, Mode::empty()).expect("open dir");
    let names: Vec<Vec<u8>> = Dir::from_fd(this)
        .expect("opendir")
        .iter()
        .map(|e| e.expect("readdir").file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for name in names {
        let st = fstatat(dir, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).expect("lstat");
        let mut path = prefix.clone();
        path.push(name.clone());
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = openat(
                    dir,
                    name.as_slice(),
                    flags | OFlag::O_DIRECTORY,
                    Mode::empty(),
                )
                .expect("open dir");
                observe(sub.as_fd(), &path, out);
                SeenKind::Dir
            }
            libc::S_IFREG => {
                let fd = openat(dir, name.as_slice(), flags, Mode::empty()).expect("open");
                let mut data = Vec::new();
                fs::File::from(fd).read_to_end(&mut data).expect("read");
                SeenKind::File(data)
            }
            libc::S_IFLNK => SeenKind::Symlink(
                readlinkat(dir, name.as_slice())
                    .expect("readlink")
                    .into_vec(),
            ),
            _ => SeenKind::Other,
        };
        out.insert(
            path,
            Seen {
                kind,
                mode: st.st_mode & 0o7777,
                owner: (st.st_uid, st.st_gid),
                mtime: (st.st_mtime, st.st_mtime_nsec),
                ino: st.st_ino,
            },
        );
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Compares `dest` with the oracle's tree.
fn check_tree(dest: &Path, model: &Model) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    let dest = fs::File::open(dest).map_err(|e| e.to_string())?;
    observe(dest.as_fd(), &Vec::new(), &mut seen);
    let shown = |p: &model::Path| String::from_utf8_lossy(&p.join(&b'/')).into_owned();
    let expected: Vec<String> = model.tree.keys().map(shown).collect();
    let got: Vec<String> = seen.keys().map(shown).collect();
    if expected != got {
        return Err(format!("names differ: expected {expected:?}, got {got:?}"));
    }
    let root = running_as_root();
    let mut inodes: BTreeMap<usize, u64> = BTreeMap::new();
    for (p, node) in &model.tree {
        let s = &seen[p];
        let fail = |what: String| Err(format!("{}: {what}", shown(p)));
        let (meta, check_mode) = match (node, &s.kind) {
            (Node::Dir, SeenKind::Dir) => match model.dirs.get(p) {
                Some(meta) => (meta.clone(), true),
                None if s.mode != 0o755 => {
                    return fail(format!("implied directory has mode {:o}", s.mode));
                }
                None => continue,
            },
            (Node::Inode(i), kind) => {
                let inode = &model.inodes[*i];
                if *inodes.entry(*i).or_insert(s.ino) != s.ino {
                    return fail("not a hard link to its target".into());
                }
                match (&inode.content, kind) {
                    (Content::File(want), SeenKind::File(data)) if want == data => {
                        (inode.meta.clone(), true)
                    }
                    (Content::Symlink(want), SeenKind::Symlink(target)) if want == target => {
                        (inode.meta.clone(), false)
                    }
                    _ => return fail("not the file or symlink the archive holds".into()),
                }
            }
            _ => return fail("not a directory".into()),
        };
        if check_mode && s.mode != meta.mode {
            return fail(format!("mode {:o}, expected {:o}", s.mode, meta.mode));
        }
        if s.mtime != (meta.mtime, 0) {
            return fail(format!("mtime {:?}, expected {}", s.mtime, meta.mtime));
        }
        if root && s.owner != meta.owner {
            return fail(format!("owner {:?}, expected {:?}", s.owner, meta.owner));
        }
    }
    if seen.values().any(|s| matches!(s.kind, SeenKind::Other)) {
        return Err("a special file was created".into());
    }
    let distinct: std::collections::BTreeSet<u64> = inodes.values().copied().collect();
    if distinct.len() != inodes.len() {
        return Err("separate files share an inode".into());
    }
    Ok(())
}

/// The status the service answers an extraction error with.
fn status_of(e: &ExtractError) -> axum::http::StatusCode {
    let kind = crate::service::extract_error_kind(e);
    crate::api::error::ApiError::from(crate::service::ServiceError::new(kind, e.to_string()))
        .kind
        .status()
}

/// Runs one case; `Ok(true)` when the archive was (rightly) extracted, `Ok(false)` when
/// it was (rightly) refused.
fn one_case(scene: &Scene, archive: &Archive) -> Result<bool, String> {
    let tar = archive.tar();
    let stream = archive.stream(&tar);
    // The bytes out of the decompressor.
    let plain = match archive.wrap {
        hostile::Wrap::Gzip => &tar,
        _ => &stream,
    };
    let expected = match archive.wrap {
        hostile::Wrap::GzipCut(_) if stream.is_empty() => Ok(Model::default()),
        hostile::Wrap::GzipCut(_) => Err("gzip ends early".to_string()),
        _ if plain.len() as u64 > archive.limits.max_total_bytes => {
            Err("over max_total_bytes".to_string())
        }
        _ => {
            let parsed = model::read_tar(plain);
            let model = Model::apply(&parsed.entries, &archive.limits);
            match (parsed.clean, model) {
                (false, _) => Err("the tar stream is malformed or cut".to_string()),
                (true, model) => model,
            }
        }
    };
    let result = extract(Cursor::new(stream), &scene.dest, &archive.limits);
    let outside = scene.outside();
    if outside != scene.before {
        let changed: Vec<_> = outside
            .iter()
            .filter(|(p, d)| scene.before.get(*p) != Some(d))
            .map(|(p, _)| p)
            .chain(scene.before.keys().filter(|p| !outside.contains_key(*p)))
            .collect();
        return Err(format!(
            "changed outside the destination: {changed:?} ({result:?})"
        ));
    }
    let meta = fs::metadata(&scene.dest).map_err(|e| e.to_string())?;
    if (meta.mode(), meta.uid(), meta.gid()) != scene.dest_meta {
        return Err("the destination's mode or owner changed".into());
    }
    let extracted = result.is_ok();
    match (expected, result) {
        (Ok(model), Ok(done)) => {
            check_tree(&scene.dest, &model)?;
            if (done.entries, done.bytes) != (model.entries, model.bytes) {
                return Err(format!(
                    "counted {done:?}, expected {} entries and {} bytes",
                    model.entries, model.bytes
                ));
            }
        }
        (Err(_), Err(e)) => {
            if fs::read_dir(&scene.dest)
                .map_err(|e| e.to_string())?
                .next()
                .is_some()
            {
                return Err(format!("{e}: the destination was not emptied"));
            }
            let status = status_of(&e);
            if !status.is_client_error() {
                return Err(format!("{e}: the service would answer {status}"));
            }
        }
        (Ok(_), Err(e)) => return Err(format!("valid archive refused: {e}")),
        (Err(why), Ok(done)) => return Err(format!("accepted ({done:?}) although {why}")),
    }
    Ok(extracted)
}

#[test]
fn hostile_archives_extract_exactly_or_fail_with_a_4xx() {
    let scene = Scene::new();
    let strategy = hostile::archive(scene.canaries(), 12);
    let mut runner = crate::testing::seeded_runner(CASES);
    let extracted = AtomicU32::new(0);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |archive| {
        // Also before: a case that panicked did not clean up after itself.
        scene.clear();
        let outcome = one_case(&scene, &archive);
        scene.clear();
        let ok = outcome.map_err(TestCaseError::fail)?;
        extracted.fetch_add(u32::from(ok), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let extracted = extracted.into_inner();
    eprintln!(
        "extract property: {CASES} cases, {extracted} extracted, {} refused, {:?}",
        CASES - extracted,
        started.elapsed()
    );
    // Both outcomes were tested, each a fair number of times.
    assert!(
        (CASES / 20..CASES * 19 / 20).contains(&extracted),
        "{extracted} of {CASES} extracted"
    );
}
