//! The oracle: what an archive says, written apart from the extractor.
//!
//! [`read_tar`] walks the stream block by block as POSIX says (and as GNU tar and the
//! tar crate read it): a pax `size` record overrides the header's size, GNU long names
//! and pax `path`/`linkpath` records override the header's names, an end-of-file or a
//! zero block at a header boundary ends the archive, and anything else that does not
//! parse is an error. Only the header's numeric fields are decoded with the tar crate.
//!
//! [`Model::apply`] then plays the entries on an in-memory tree with the extractor's
//! documented rules (module docs of `extract`): paths that are empty, absolute, hold
//! `..` or a NUL, or break a limit are refused; `.wh.` names are refused in bundles;
//! only files, directories, symlinks and hard links are allowed; no entry may reach its
//! place through a symlink or a non-directory; missing parents are made `0755`; a later
//! entry replaces an earlier one of the same name (a directory with its content), but a
//! directory over a directory only takes the new metadata; a hard link must name a
//! non-directory that exists (found without following symlinks), and links a symlink
//! as itself; `.` as a directory is ignored. A directory that is replaced forgets its
//! metadata. Any name component over NAME_MAX, or a symlink target the kernel cannot
//! store, fails the upload.

use std::collections::BTreeMap;

use super::super::Limits;
use super::hostile::BLOCK;

/// One entry as a reader sees it, after pax and GNU extensions.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) typ: u8,
    pub(super) path: Vec<u8>,
    pub(super) link: Vec<u8>,
    pub(super) data: Vec<u8>,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) owner: (u32, u32),
}

/// The entries of a stream, and whether it ended cleanly after them.
pub(super) struct Parsed {
    pub(super) entries: Vec<Entry>,
    pub(super) clean: bool,
}

/// Reads `bytes` as a tar stream (see the module docs).
pub(super) fn read_tar(bytes: &[u8]) -> Parsed {
    let mut entries = Vec::new();
    // Pending GNU long name, GNU long link name and pax records for the next entry.
    let mut long: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    let mut at = 0usize;
    let dirty = |entries| Parsed {
        entries,
        clean: false,
    };
    loop {
        let pending = long.is_some() || long_link.is_some() || pax.is_some();
        if at == bytes.len() {
            return Parsed {
                entries,
                clean: !pending,
            };
        }
        if at + BLOCK > bytes.len() {
            return dirty(entries);
        }
        let block = &bytes[at..at + BLOCK];
        if block.iter().all(|&b| b == 0) {
            return Parsed {
                entries,
                clean: !pending,
            };
        }
        let header = tar::Header::from_byte_slice(block);
        let sum = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return dirty(entries);
        }
        let typ = block[156];
        let extension = matches!(typ, b'L' | b'K' | b'x' | b'g');
        let Ok(mut size) = header.entry_size() else {
            return dirty(entries);
        };
        let pax_size = pax
            .as_deref()
            .and_then(|p| pax_value(p, b"size"))
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
        if !extension && let Some(s) = pax_size {
            size = s;
        }
        let start = at + BLOCK;
        let Some(next) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s / BLOCK as u64 * BLOCK as u64)
            .and_then(|s| (start as u64).checked_add(s))
        else {
            return dirty(entries);
        };
        let end = (start as u64).saturating_add(size).min(bytes.len() as u64) as usize;
        let data = bytes.get(start..end).unwrap_or_default().to_vec();
        let slot = match typ {
            b'L' => Some(&mut long),
            b'K' => Some(&mut long_link),
            b'x' => Some(&mut pax),
            _ => None,
        };
        match slot {
            Some(slot) if slot.is_some() => return dirty(entries),
            Some(slot) => *slot = Some(data),
            None => {
                let strip = |mut v: Vec<u8>| {
                    if v.last() == Some(&0) {
                        v.pop();
                    }
                    v
                };
                let pax = pax.take();
                let from_pax = |key: &[u8]| pax.as_deref().and_then(|p| pax_value(p, key));
                let path = match long.take() {
                    Some(l) => strip(l),
                    None => from_pax(b"path")
                        .map(<[u8]>::to_vec)
                        .unwrap_or_else(|| header.path_bytes().into_owned()),
                };
                let link = match long_link.take() {
                    Some(l) => strip(l),
                    None => from_pax(b"linkpath")
                        .map(<[u8]>::to_vec)
                        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
                        .unwrap_or_default(),
                };
                let id = |v: std::io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok());
                entries.push(Entry {
                    typ,
                    path,
                    link,
                    data,
                    mode: header.mode().unwrap_or(0),
                    mtime: header.mtime().map_or(0, |t| t as i64),
                    owner: (id(header.uid()).unwrap_or(0), id(header.gid()).unwrap_or(0)),
                });
            }
        }
        if next > bytes.len() as u64 {
            // The data (or the padding after it) is cut short.
            return dirty(entries);
        }
        at = next as usize;
    }
}

/// The value of the first `key` record of a pax block.
fn pax_value<'a>(mut pax: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    while !pax.is_empty() {
        let space = pax.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&pax[..space]).ok()?.parse().ok()?;
        let record = pax.get(space + 1..len)?.strip_suffix(b"\n")?;
        let eq = record.iter().position(|&b| b == b'=')?;
        if &record[..eq] == key {
            return Some(&record[eq + 1..]);
        }
        pax = &pax[len..];
    }
    None
}

/// A path inside the destination, as components.
pub(super) type Path = Vec<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    Dir,
    /// A file or a symlink: an index into [`Model::inodes`], shared by hard links.
    Inode(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Content {
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

/// What a file or symlink (or a directory entry) sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    /// Already masked: `0o777` for files, `0o1777` for directories, none for symlinks.
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) owner: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Inode {
    pub(super) content: Content,
    pub(super) meta: Meta,
}

/// The tree an archive describes.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) tree: BTreeMap<Path, Node>,
    pub(super) inodes: Vec<Inode>,
    /// The metadata of directories made by directory entries; a directory missing here
    /// was implied by a deeper entry (mode 0755, the extractor's owner).
    pub(super) dirs: BTreeMap<Path, Meta>,
    /// Entries processed and file bytes written, as [`Extracted`](super::super::Extracted)
    /// counts them.
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

const NAME_MAX: usize = 255;
/// Longest symlink target Linux stores (`PATH_MAX` less the NUL).
const SYMLINK_MAX: usize = 4095;

/// Normalises a path as the extractor's rules say, or says why it is refused.
fn parse(raw: &[u8], limits: &Limits) -> Result<Path, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.len() > limits.max_path_len {
        return Err("path too long");
    }
    if raw.contains(&0) {
        return Err("NUL in path");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("`..` in path"),
            c => out.push(c.to_vec()),
        }
    }
    if out.len() > limits.max_path_depth {
        return Err("path too deep");
    }
    Ok(out)
}

impl Model {
    /// Plays `entries` (a bundle upload) on an empty tree.
    pub(super) fn apply(entries: &[Entry], limits: &Limits) -> Result<Model, String> {
        let mut model = Model::default();
        for (i, e) in entries.iter().enumerate() {
            model.entry(e, limits).map_err(|why| {
                format!("entry {i} ({}): {why}", String::from_utf8_lossy(&e.path))
            })?;
        }
        Ok(model)
    }

    fn entry(&mut self, e: &Entry, limits: &Limits) -> Result<(), &'static str> {
        self.entries += 1;
        if self.entries > limits.max_entries {
            return Err("too many entries");
        }
        if e.typ == b'g' {
            return Ok(());
        }
        let path = parse(&e.path, limits)?;
        if path.iter().any(|c| c.starts_with(b".wh.")) {
            return Err("whiteout name in a bundle");
        }
        let is_dir = match e.typ {
            b'0' | 0 => e.path.ends_with(b"/"),
            b'5' => true,
            b'1' | b'2' => false,
            _ => return Err("not plain content"),
        };
        if path.is_empty() {
            return if is_dir {
                Ok(())
            } else {
                Err("names the destination")
            };
        }
        let meta = |mask: u32| Meta {
            mode: e.mode & mask,
            mtime: e.mtime,
            owner: e.owner,
        };
        match e.typ {
            _ if is_dir => {
                self.slot(&path, true)?;
                self.tree.insert(path.clone(), Node::Dir);
                self.dirs.insert(path, meta(0o1777));
            }
            b'1' => return self.hard_link(&path, &e.link, limits),
            b'2' => {
                if e.link.is_empty() || e.link.len() > limits.max_path_len || e.link.contains(&0) {
                    return Err("bad symlink target");
                }
                self.slot(&path, false)?;
                if e.link.len() > SYMLINK_MAX {
                    return Err("symlink target longer than the kernel takes");
                }
                self.new_inode(path, Content::Symlink(e.link.clone()), meta(0));
            }
            _ => {
                self.slot(&path, false)?;
                self.bytes += e.data.len() as u64;
                self.new_inode(path, Content::File(e.data.clone()), meta(0o777));
            }
        }
        Ok(())
    }

    fn new_inode(&mut self, path: Path, content: Content, meta: Meta) {
        self.inodes.push(Inode { content, meta });
        self.tree.insert(path, Node::Inode(self.inodes.len() - 1));
    }

    /// Makes the missing parents of `path` and clears `path` itself (keeping a directory
    /// when `want_dir`).
    fn slot(&mut self, path: &Path, want_dir: bool) -> Result<(), &'static str> {
        if path.iter().any(|c| c.len() > NAME_MAX) {
            return Err("name component over NAME_MAX");
        }
        for n in 1..path.len() {
            match self.tree.get(&path[..n]) {
                None => drop(self.tree.insert(path[..n].to_vec(), Node::Dir)),
                Some(Node::Dir) => {}
                Some(Node::Inode(_)) => return Err("parent is a symlink or a file"),
            }
        }
        match self.tree.get(path) {
            None => {}
            Some(Node::Dir) if want_dir => {}
            Some(_) => self.remove(path),
        }
        Ok(())
    }

    /// Removes `path` and everything under it.
    fn remove(&mut self, path: &Path) {
        self.tree.retain(|p, _| !p.starts_with(path));
        self.dirs.retain(|p, _| !p.starts_with(path));
    }

    fn hard_link(&mut self, path: &Path, raw: &[u8], limits: &Limits) -> Result<(), &'static str> {
        let target = parse(raw, limits)?;
        if target.is_empty() {
            return Err("hard link to the destination");
        }
        if target == *path {
            return Ok(());
        }
        if target.iter().any(|c| c.len() > NAME_MAX) {
            return Err("hard link target component over NAME_MAX");
        }
        for n in 1..target.len() {
            if self.tree.get(&target[..n]) != Some(&Node::Dir) {
                return Err("hard link target's parent is missing or not a directory");
            }
        }
        let Some(&Node::Inode(inode)) = self.tree.get(&target) else {
            return Err("hard link target missing or a directory");
        };
        self.slot(path, false)?;
        if !self.tree.contains_key(&target) {
            return Err("hard link target removed by its own link");
        }
        self.tree.insert(path.clone(), Node::Inode(inode));
        Ok(())
    }
}
