//! Validation and normalisation of archive paths, and whiteout names.

use super::error::PathRule;
use super::limits::Limits;

/// Prefix of an OCI whiteout file.
const WH_PREFIX: &[u8] = b".wh.";
/// Prefix of whiteout metadata files (AUFS bookkeeping and the opaque marker).
const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// Marker that makes its directory opaque.
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// A path relative to the destination, made only of normal components: no
/// empty, `.` or `..` component, no NUL byte, never absolute. Stored joined
/// with single `/`; the empty path is the destination itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryPath {
    joined: Vec<u8>,
}

/// What a path's last component says in an image layer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout<'a> {
    /// An ordinary name.
    No,
    /// `.wh..wh..opq`: hide everything lower layers put in the parent.
    Opaque,
    /// `.wh.NAME`: hide `NAME` from lower layers.
    Remove(&'a [u8]),
    /// Any other `.wh..wh.*` name: AUFS metadata, ignored (as containerd does).
    Meta,
}

impl EntryPath {
    /// Checks `raw` (as stored in the archive, pax/GNU long names included)
    /// against the path rules and `limits`, and normalises it.
    pub(super) fn parse(raw: &[u8], limits: &Limits) -> Result<Self, PathRule> {
        if raw.is_empty() {
            return Err(PathRule::Empty);
        }
        if raw.len() > limits.max_path_len {
            return Err(PathRule::TooLong {
                len: raw.len(),
                limit: limits.max_path_len,
            });
        }
        if raw.contains(&0) {
            return Err(PathRule::Nul);
        }
        if raw.starts_with(b"/") {
            return Err(PathRule::Escapes);
        }
        let mut joined = Vec::with_capacity(raw.len());
        let mut depth = 0;
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => return Err(PathRule::Escapes),
                _ => {}
            }
            depth += 1;
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(comp);
        }
        if depth > limits.max_path_depth {
            return Err(PathRule::TooDeep {
                depth,
                limit: limits.max_path_depth,
            });
        }
        Ok(Self { joined })
    }

    /// The normalised path, `a/b/c`.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.joined
    }

    /// `(parent, name)`: `a/b/c` gives `(a/b, c)`, `c` gives `("", c)`.
    /// `None` for the root.
    pub(super) fn split_last(&self) -> Option<(&[u8], &[u8])> {
        if self.joined.is_empty() {
            return None;
        }
        Some(match self.joined.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.joined[..i], &self.joined[i + 1..]),
            None => (&[][..], &self.joined[..]),
        })
    }

    /// `self` and every ancestor except the root, longest first.
    pub(super) fn self_and_ancestors(&self) -> impl Iterator<Item = &[u8]> {
        let full = self.joined.as_slice();
        std::iter::once(full)
            .chain(
                full.iter()
                    .enumerate()
                    .rev()
                    .filter(|&(_, &b)| b == b'/')
                    .map(move |(i, _)| &full[..i]),
            )
            .filter(|p| !p.is_empty())
    }

    /// Whether any component starts with `.wh.`.
    pub(super) fn has_whiteout_name(&self) -> bool {
        self.joined
            .split(|&b| b == b'/')
            .any(|c| c.starts_with(WH_PREFIX))
    }

    /// Classifies the last component; `Err` for whiteout-named parents and
    /// for `.wh.` names that do not name a sibling (`.wh.`, `.wh..`, `.wh...`).
    pub(super) fn whiteout(&self) -> Result<Whiteout<'_>, &'static str> {
        let Some((parent, name)) = self.split_last() else {
            return Ok(Whiteout::No);
        };
        if parent
            .split(|&b| b == b'/')
            .any(|c| c.starts_with(WH_PREFIX))
        {
            return Err("a whiteout cannot have children");
        }
        if name == WH_OPAQUE {
            return Ok(Whiteout::Opaque);
        }
        if name.starts_with(WH_META_PREFIX) {
            return Ok(Whiteout::Meta);
        }
        match name.strip_prefix(WH_PREFIX) {
            None => Ok(Whiteout::No),
            Some(b"" | b"." | b"..") => Err("whiteout does not name a file"),
            Some(hidden) => Ok(Whiteout::Remove(hidden)),
        }
    }
}

/// `dir/name`, or `name` when `dir` is empty.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    out.extend_from_slice(dir);
    if !dir.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Checks a symlink target: anything goes except empty, NUL and too long,
/// since targets are never resolved during extraction.
pub(super) fn check_symlink_target(raw: &[u8], limits: &Limits) -> Result<(), PathRule> {
    if raw.is_empty() {
        Err(PathRule::Empty)
    } else if raw.len() > limits.max_path_len {
        Err(PathRule::TooLong {
            len: raw.len(),
            limit: limits.max_path_len,
        })
    } else if raw.contains(&0) {
        Err(PathRule::Nul)
    } else {
        Ok(())
    }
}

/// For error messages: the raw bytes, lossily decoded.
pub(super) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}
