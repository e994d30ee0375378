//! A directory tree as a tar stream, so that a copy into the store goes
//! through the same safe extractor as an upload
//! ([`extract`](crate::bundle::extract::extract)): its limits, its refusal of
//! paths through symlinks, its dropping of setuid bits.
//!
//! The walk never follows a symlink: entries are examined with `lstat`, and
//! files are opened with `O_NOFOLLOW` and checked to still be regular files.
//! Hard links inside the tree stay hard links (tar `Link` entries). Device
//! nodes, fifos and sockets are left out (the runtime makes `/dev`) and
//! logged. Entries are written in sorted order with the owner, mode and mtime
//! of the source.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

/// Writes the tree under `root` (not `root` itself) to `out` as a tar stream.
/// Errors name the path they failed on.
pub(super) fn write_tar<W: Write>(root: &Path, out: W) -> io::Result<()> {
    let mut builder = Builder::new(out);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Depth-first, children sorted: a directory's entry comes before its content.
    let mut todo: Vec<PathBuf> = children(root, Path::new(""))?;
    todo.reverse();
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(at(&path))?;
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_size(0);
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(at(&path))?;
            let mut kids = children(root, &rel)?;
            kids.reverse();
            todo.extend(kids);
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(at(&path))?;
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(at(&path))?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &rel, first)
                        .map_err(at(&path))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            let file = open_regular(&path, &meta)?;
            builder
                .append_data(&mut header, &rel, file)
                .map_err(at(&path))?;
        } else {
            tracing::info!(path = %path.display(), "not copying a special file into the image");
        }
    }
    builder.into_inner().map_err(at(root))?.flush()
}

/// The names in `root/rel`, sorted, as paths relative to `root`.
fn children(root: &Path, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = root.join(rel);
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).map_err(at(&dir))? {
        names.push(entry.map_err(at(&dir))?.file_name());
    }
    names.sort();
    Ok(names.into_iter().map(|n| rel.join(n)).collect())
}

/// Opens `path` without following a symlink, and checks it is the regular
/// file `meta` described (not swapped since).
fn open_regular(path: &Path, meta: &fs::Metadata) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(at(path))?;
    let now = file.metadata().map_err(at(path))?;
    if !now.is_file() || now.ino() != meta.ino() || now.dev() != meta.dev() {
        return Err(io::Error::other(format!(
            "{}: changed while being copied",
            path.display()
        )));
    }
    Ok(file)
}

/// Adds the path to an I/O error.
fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_owned();
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn files_dirs_symlinks_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"hello").unwrap();
        fs::hard_link(root.join("a/b/f"), root.join("a/g")).unwrap();
        symlink("/etc/passwd", root.join("l")).unwrap();
        let mut out = Vec::new();
        write_tar(root, &mut out).unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((path, e.header().entry_type(), link));
        }
        let expect = [
            ("a/", EntryType::Directory, None),
            ("a/b/", EntryType::Directory, None),
            ("a/b/f", EntryType::Regular, None),
            ("a/g", EntryType::Link, Some("a/b/f")),
            ("l", EntryType::Symlink, Some("/etc/passwd")),
        ];
        assert_eq!(seen.len(), expect.len(), "{seen:?}");
        for ((p, t, l), (ep, et, el)) in seen.iter().zip(expect) {
            assert_eq!(p.trim_end_matches('/'), ep.trim_end_matches('/'));
            assert_eq!(*t, et, "{p}");
            assert_eq!(l.as_deref(), el, "{p}");
        }
    }
}
