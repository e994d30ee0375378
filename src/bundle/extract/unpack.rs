//! The extraction loop: each entry is checked, then created with `*at()`
//! calls relative to a directory descriptor reached without following
//! symlinks (see [`fsops`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, futimens, mkdirat, utimensat};
use nix::unistd::{linkat, symlinkat};

use super::Extracted;
use super::error::{ExtractError, PathRule, io_err, parent_err};
use super::fsops;
use super::limits::Limits;
use super::meta::{DIR_MODE_MASK, FILE_MODE_MASK, Meta};
use super::path::{self, EntryPath, Whiteout};
use super::stream::{self, Meter};
use super::whiteout;

/// Which public entry point is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    /// [`extract`](super::extract): `.wh.` names are refused.
    Bundle,
    /// [`apply_layer`](super::apply_layer): `.wh.` names are whiteouts.
    Layer,
}

/// What an allowed entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
}

const COPY_BUF: usize = 128 * 1024;

/// Reads the whole archive from `reader` into the tree under `root`.
pub(super) fn run<R: Read>(
    reader: R,
    root: BorrowedFd<'_>,
    limits: &Limits,
    flavor: Flavor,
) -> Result<Extracted, ExtractError> {
    let (stream, meter) = stream::open(reader, limits)?;
    let mut archive = tar::Archive::new(stream);
    let mut unpacker = Unpacker {
        root,
        limits,
        flavor,
        chown: fsops::running_as_root(),
        stats: Extracted::default(),
        ours: HashSet::new(),
        dirs: BTreeMap::new(),
        buf: vec![0; COPY_BUF],
    };
    let entries = archive
        .entries()
        .map_err(|e| meter.error(e, ExtractError::Tar))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| meter.error(e, ExtractError::Tar))?;
        unpacker.entry(&mut entry, &meter)?;
    }
    archive.into_inner().drain()?;
    unpacker.finish()
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    limits: &'a Limits,
    flavor: Flavor,
    /// Restore ownership (only root can).
    chown: bool,
    stats: Extracted,
    /// Layer mode: every path this layer created, with its ancestors.
    ours: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set once their content is in, by path; the
    /// latest entry of a path wins, and a directory that a later entry replaces leaves
    /// (with those below it), so its metadata never lands on an implied directory made
    /// at its place afterwards.
    dirs: BTreeMap<Vec<u8>, Meta>,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meter: &Meter,
    ) -> Result<(), ExtractError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let entry_type = entry.header().entry_type();
        if entry_type.is_pax_global_extensions() {
            // Archive-wide pax defaults (e.g. git's commit comment): ignored,
            // as Docker and containerd do.
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = path::lossy(&raw);
        let path = EntryPath::parse(&raw, self.limits).map_err(|rule| ExtractError::Path {
            path: shown.clone(),
            rule,
        })?;
        let whiteout_err = |reason| ExtractError::Whiteout {
            path: shown.clone(),
            reason,
        };
        match self.flavor {
            Flavor::Bundle if path.has_whiteout_name() => {
                return Err(whiteout_err(
                    "whiteout files are only allowed in image layers",
                ));
            }
            Flavor::Bundle => {}
            Flavor::Layer => match path.whiteout().map_err(whiteout_err)? {
                Whiteout::No => {}
                wh => return whiteout::apply(self.root, &path, &wh, &self.ours, &shown),
            },
        }
        let kind = kind_of(entry_type, &raw, &shown)?;
        let Some((parent, name)) = path.split_last() else {
            // `.` or `./`: the destination itself, whose metadata the archive
            // does not get to change.
            return match kind {
                Kind::Dir => Ok(()),
                _ => Err(ExtractError::Path {
                    path: shown,
                    rule: PathRule::IsRoot,
                }),
            };
        };
        let meta = Meta::read(entry).map_err(|reason| ExtractError::InvalidHeader {
            path: shown.clone(),
            reason,
        })?;
        if meta.sparse {
            return Err(ExtractError::ForbiddenType {
                path: shown,
                kind: "sparse files",
            });
        }
        match kind {
            Kind::File => {
                let dir = self.slot(parent, name, false, &shown)?;
                self.file(entry, &dir, name, &meta, meter, &shown)?;
            }
            Kind::Dir => {
                let dir = self.slot(parent, name, true, &shown)?;
                match mkdirat(&dir, name, Mode::from_bits_truncate(0o700)) {
                    // Kept by `slot`: a directory over a directory.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_err(&shown, "creating directory")(e)),
                }
                self.own(dir.as_fd(), name, &meta, &shown)?;
                self.dirs.insert(path.as_bytes().to_vec(), meta);
            }
            Kind::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                path::check_symlink_target(&target, self.limits).map_err(|rule| {
                    ExtractError::SymlinkTarget {
                        path: shown.clone(),
                        rule,
                    }
                })?;
                let dir = self.slot(parent, name, false, &shown)?;
                symlinkat(target.as_ref(), &dir, name)
                    .map_err(io_err(&shown, "creating symlink"))?;
                self.own(dir.as_fd(), name, &meta, &shown)?;
                utimensat(
                    &dir,
                    name,
                    &meta.mtime,
                    &meta.mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(io_err(&shown, "setting mtime"))?;
            }
            Kind::HardLink => self.hard_link(entry, &path, (parent, name), &shown)?,
        }
        if self.flavor == Flavor::Layer {
            for p in path.self_and_ancestors() {
                if !self.ours.insert(p.to_vec()) {
                    break; // its ancestors are in already
                }
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        meter: &Meter,
        shown: &str,
    ) -> Result<(), ExtractError> {
        // O_EXCL: the name was just cleared, and if anything reappeared
        // (a symlink included) we fail instead of opening it.
        let fd = openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io_err(shown, "creating file"))?;
        let mut file = File::from(fd);
        let expected = entry.size();
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(meter.error(e, |source| ExtractError::Io {
                        path: shown.to_owned(),
                        op: "reading data",
                        source,
                    }));
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| ExtractError::Io {
                    path: shown.to_owned(),
                    op: "writing file",
                    source,
                })?;
            written += n as u64;
        }
        if written != expected {
            return Err(ExtractError::Truncated {
                path: shown.to_owned(),
                written,
                expected,
            });
        }
        self.stats.bytes += written;
        if self.chown {
            fsops::fchown(file.as_fd(), meta.uid, meta.gid).map_err(io_err(shown, "chown"))?;
        }
        // After chown, which may clear setuid bits anyway; we never set them.
        fchmod(&file, Mode::from_bits_truncate(meta.mode & FILE_MODE_MASK))
            .map_err(io_err(shown, "chmod"))?;
        futimens(&file, &meta.mtime, &meta.mtime).map_err(io_err(shown, "setting mtime"))
    }

    /// A hard link to `target`, which must already exist beneath the root
    /// (in `extract`, where the root started empty, that means extracted
    /// earlier from this archive) and is found without following symlinks.
    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        path: &EntryPath,
        (parent, name): (&[u8], &[u8]),
        shown: &str,
    ) -> Result<(), ExtractError> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        let target_err = |rule| ExtractError::LinkTarget {
            path: shown.to_owned(),
            target: path::lossy(&raw),
            rule,
        };
        let target = EntryPath::parse(&raw, self.limits).map_err(target_err)?;
        let Some((target_parent, target_name)) = target.split_last() else {
            return Err(target_err(PathRule::IsDirectory));
        };
        if target == *path {
            return Ok(()); // linking a name to itself changes nothing
        }
        let target_dir = fsops::open_dir(self.root, target_parent, false).map_err(|e| match e {
            Errno::ENOENT => target_err(PathRule::Missing),
            Errno::ELOOP => target_err(PathRule::ThroughSymlink),
            Errno::ENOTDIR => target_err(PathRule::ThroughNonDirectory),
            Errno::EXDEV => target_err(PathRule::Escapes),
            e => io_err(shown, "opening hard link target directory")(e),
        })?;
        match fsops::lstat_at(target_dir.as_fd(), target_name) {
            Ok(None) => return Err(target_err(PathRule::Missing)),
            Ok(Some(st)) if fsops::is_dir(&st) => return Err(target_err(PathRule::IsDirectory)),
            Ok(Some(_)) => {}
            Err(e) => return Err(io_err(shown, "inspecting hard link target")(e)),
        }
        let dir = self.slot(parent, name, false, shown)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink.
        linkat(&target_dir, target_name, &dir, name, AtFlags::empty()).map_err(|e| match e {
            Errno::ENOENT => target_err(PathRule::Missing),
            e => io_err(shown, "creating hard link")(e),
        })
    }

    /// Opens (creating) the directory `parent` and clears `name` in it for
    /// a new entry: whatever is there is removed (a directory with its
    /// content, a symlink as itself), except a directory when `want_dir`,
    /// which is kept.
    fn slot(
        &mut self,
        parent: &[u8],
        name: &[u8],
        want_dir: bool,
        shown: &str,
    ) -> Result<OwnedFd, ExtractError> {
        let dir = fsops::open_dir(self.root, parent, true)
            .map_err(parent_err(shown, "creating parent directories"))?;
        match fsops::lstat_at(dir.as_fd(), name) {
            Ok(None) => {}
            Ok(Some(st)) if want_dir && fsops::is_dir(&st) => {}
            Ok(Some(st)) => {
                fsops::remove_at(dir.as_fd(), name)
                    .map_err(io_err(shown, "replacing existing entry"))?;
                if fsops::is_dir(&st) {
                    self.forget_dirs(&path::join(parent, name));
                }
            }
            Err(e) => return Err(io_err(shown, "inspecting existing entry")(e)),
        }
        Ok(dir)
    }

    /// Drops the pending metadata of the directory `removed` and of those below it.
    fn forget_dirs(&mut self, removed: &[u8]) {
        self.dirs.remove(removed);
        let below = path::join(removed, b"");
        let doomed: Vec<Vec<u8>> = self
            .dirs
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.dirs.remove(&p);
        }
    }

    /// Restores the owner of `name` (never following it) when root.
    fn own(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), ExtractError> {
        if !self.chown {
            return Ok(());
        }
        fsops::lchown_at(dir, name, meta.uid, meta.gid).map_err(io_err(shown, "chown"))
    }

    /// Sets directory modes and mtimes, children before parents (so a
    /// read-only parent cannot block its children).
    fn finish(self) -> Result<Extracted, ExtractError> {
        let mut dirs: Vec<(&Vec<u8>, &Meta)> = self.dirs.iter().collect();
        dirs.sort_by_key(|(p, _)| Reverse(p.iter().filter(|&&b| b == b'/').count()));
        for (dir_path, meta) in dirs {
            let shown = path::lossy(dir_path);
            let fd = match fsops::open_dir(self.root, dir_path, false) {
                Ok(fd) => fd,
                // Replaced by a later entry (possibly by a symlink): nothing to do.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(io_err(&shown, "reopening directory")(e)),
            };
            fchmod(&fd, Mode::from_bits_truncate(meta.mode & DIR_MODE_MASK))
                .map_err(io_err(&shown, "chmod"))?;
            futimens(&fd, &meta.mtime, &meta.mtime).map_err(io_err(&shown, "setting mtime"))?;
        }
        Ok(self.stats)
    }
}

/// Maps a tar type flag to what we create, refusing everything else.
fn kind_of(entry_type: tar::EntryType, raw: &[u8], shown: &str) -> Result<Kind, ExtractError> {
    let forbidden = |kind| {
        Err(ExtractError::ForbiddenType {
            path: shown.to_owned(),
            kind,
        })
    };
    match entry_type {
        // Pre-POSIX archives mark directories with a trailing slash only.
        tar::EntryType::Regular if raw.ends_with(b"/") => Ok(Kind::Dir),
        tar::EntryType::Regular => Ok(Kind::File),
        tar::EntryType::Directory => Ok(Kind::Dir),
        tar::EntryType::Symlink => Ok(Kind::Symlink),
        tar::EntryType::Link => Ok(Kind::HardLink),
        tar::EntryType::Char => forbidden("character devices"),
        tar::EntryType::Block => forbidden("block devices"),
        tar::EntryType::Fifo => forbidden("fifos"),
        tar::EntryType::GNUSparse => forbidden("sparse files"),
        tar::EntryType::Continuous => forbidden("contiguous files"),
        other => Err(ExtractError::UnsupportedType {
            path: shown.to_owned(),
            flag: other.as_byte(),
        }),
    }
}
