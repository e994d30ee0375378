//! Generated archives: members that mix the hazards an upload may hold, and the bytes
//! of the tar stream (written here block by block, not with `tar::Builder`, which
//! refuses most of them).
//!
//! Names come from a tiny alphabet (`a`, `b`, `c`) so that the same name keeps coming
//! back as a file, a directory, a symlink and a hard link; mixed in are `.`, `..`, empty
//! components, absolute names, `.wh.` names, NUL bytes, components over NAME_MAX, paths
//! deeper or longer than the limits. Link targets also name canaries outside the
//! destination. A member's path is stored in its header, in a pax record or in a GNU
//! long-name entry (with a decoy in the header), and it may carry a pax `size` record
//! that disagrees with its header.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::Limits;

pub(super) const BLOCK: usize = 512;

/// Bytes that print as a readable string in a failing case.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Bytes(pub(super) Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self
            .0
            .iter()
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect();
        write!(f, "b\"{shown}\"")
    }
}

/// How a member's path (and link target) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enc {
    /// In the header's name and linkname fields (pax when they do not fit).
    Header,
    /// In pax `path` and `linkpath` records.
    Pax,
    /// In GNU `L` and `K` entries.
    Gnu,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    File(Bytes),
    Dir,
    Symlink(Bytes),
    HardLink(Bytes),
    /// A type flag that is not plain content: devices, fifo, contiguous, GNU sparse,
    /// unknown.
    Other(u8),
    /// A pax global header.
    Global,
}

/// A pax `size` record relative to the data actually written after the header.
#[derive(Debug, Clone, Copy)]
pub(super) enum PaxSize {
    Zero,
    OneLess,
    OneMore,
    BlockMore,
    TwoBlocksMore,
    Huge,
}

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) kind: Kind,
    pub(super) path: Bytes,
    pub(super) enc: Enc,
    /// With pax or GNU names: the header's own name and linkname fields hold hostile
    /// decoys (`../decoy`, `/etc/passwd`) rather than a truncated copy.
    pub(super) decoy: bool,
    pub(super) mode: u32,
    pub(super) mtime: u64,
    /// uid and gid.
    pub(super) owner: u64,
    pub(super) pax_size: Option<PaxSize>,
}

/// A whole generated upload.
#[derive(Debug, Clone)]
pub(super) struct Archive {
    pub(super) members: Vec<Member>,
    /// The two zero blocks at the end (a stream may also just stop after its last entry).
    pub(super) end_marker: bool,
    pub(super) wrap: Wrap,
    pub(super) limits: Limits,
}

/// What happens to the tar stream on its way to the extractor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wrap {
    Plain,
    Gzip,
    /// Plain, cut after `permille`/1000 of its bytes.
    Cut(u16),
    /// Plain, cut at the block boundary at or below `permille`/1000 of its bytes.
    CutAtBlock(u16),
    /// Gzip that ends early: cut after `permille`/1000 of the compressed bytes.
    GzipCut(u16),
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        24 => select(vec!["a", "b", "c"]).prop_map(|s| s.as_bytes().to_vec()),
        3 => Just(b".".to_vec()),
        3 => Just(b"..".to_vec()),
        2 => Just(Vec::new()),
        1 => Just(b".wh.a".to_vec()),
        1 => Just(b"a\0b".to_vec()),
        // Around NAME_MAX (255).
        1 => (250usize..=260).prop_map(|n| vec![b'n'; n]),
    ]
}

/// An entry path (or hard link target) as stored in the archive.
fn path() -> impl Strategy<Value = Vec<u8>> {
    let plain = (
        select(vec!["", "", "", "", "/", "./", "//"]),
        vec(component(), 1..=3),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(lead, comps, slash)| {
            let mut p = lead.as_bytes().to_vec();
            p.extend(comps.join(&b'/'));
            if slash {
                p.push(b'/');
            }
            p
        });
    prop_oneof![
        30 => plain,
        // Around the default depth limit (64).
        1 => (62usize..=66).prop_map(|n| b"d/".repeat(n)),
        // Around the default length limit (4096), 100-byte components.
        1 => (40usize..=41).prop_map(|n| vec![vec![b'p'; 100]; n].join(&b'/')),
        1 => select(vec![&b"."[..], b"./", b"", b"/"]).prop_map(<[u8]>::to_vec),
    ]
}

/// A symlink target: anything, canaries outside the destination included.
fn symlink_target(canaries: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => path(),
        4 => select(canaries),
        // Around the kernel's limit on a symlink's length (4095).
        1 => (4094usize..=4097).prop_map(|n| vec![b't'; n]),
    ]
}

/// A hard link target: mostly names of earlier members, sometimes a canary.
fn link_target(canaries: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![8 => path(), 2 => select(canaries)]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(b'a'..=b'z', 0..24),
        1 => vec(b'a'..=b'z', 500..700),
    ]
}

fn kind(canaries: Vec<Vec<u8>>) -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => data().prop_map(|d| Kind::File(Bytes(d))),
        4 => Just(Kind::Dir),
        3 => symlink_target(canaries.clone()).prop_map(|t| Kind::Symlink(Bytes(t))),
        3 => link_target(canaries).prop_map(|t| Kind::HardLink(Bytes(t))),
        1 => select(vec![b'3', b'4', b'6', b'7', b'S', b'V', b'X']).prop_map(Kind::Other),
        1 => Just(Kind::Global),
    ]
}

/// Names of a tame archive: `a`, `b`, `c`, one to three deep, sometimes with `./` in
/// front or `/` behind; nothing a rule refuses by itself.
fn tame_path() -> impl Strategy<Value = Vec<u8>> {
    (
        select(vec!["", "", "./"]),
        vec(select(vec!["a", "b", "c"]), 1..=3),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(lead, comps, slash)| {
            let mut p = format!("{lead}{}", comps.join("/")).into_bytes();
            if slash {
                p.push(b'/');
            }
            p
        })
}

/// Kinds of a tame archive: plain content, links mostly to its own names.
fn tame_kind(canaries: Vec<Vec<u8>>) -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => data().prop_map(|d| Kind::File(Bytes(d))),
        4 => Just(Kind::Dir),
        3 => prop_oneof![4 => tame_path(), 1 => select(canaries.clone())]
            .prop_map(|t| Kind::Symlink(Bytes(t))),
        3 => prop_oneof![8 => tame_path(), 1 => select(canaries)]
            .prop_map(|t| Kind::HardLink(Bytes(t))),
    ]
}

/// A member; `tame` keeps to plain names and content (for archives that mostly
/// extract: duplicates, links and the replacement rules still apply).
fn member(canaries: Vec<Vec<u8>>, tame: bool) -> impl Strategy<Value = Member> {
    let enc = prop_oneof![6 => Just(Enc::Header), 2 => Just(Enc::Pax), 2 => Just(Enc::Gnu)];
    // Every mode lets the owner in (the tests may run unprivileged); the privilege bits
    // are there to be stripped.
    let mode = select(vec![0o755, 0o700, 0o744, 0o1777, 0o2755, 0o4711, 0o7777]);
    let mtime = select(vec![0u64, 1_600_000_000, 2_000_000_000, 0o777_7777_7777]);
    let pax_size = prop_oneof![
        12 => Just(None),
        1 => select(vec![
            PaxSize::Zero,
            PaxSize::OneLess,
            PaxSize::OneMore,
            PaxSize::BlockMore,
            PaxSize::TwoBlocksMore,
            PaxSize::Huge,
        ])
        .prop_map(Some),
    ];
    let (kind, path, pax_size) = if tame {
        (
            tame_kind(canaries).boxed(),
            tame_path().boxed(),
            Just(None).boxed(),
        )
    } else {
        (kind(canaries).boxed(), path().boxed(), pax_size.boxed())
    };
    (
        kind,
        path,
        enc,
        prop::bool::weighted(0.3),
        mode,
        mtime,
        select(vec![0u64, 1000, 65534]),
        pax_size,
    )
        .prop_map(
            |(kind, path, enc, decoy, mode, mtime, owner, pax_size)| Member {
                kind,
                path: Bytes(path),
                enc,
                decoy,
                mode,
                mtime,
                owner,
                pax_size,
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    let small = (1u64..10, 1usize..5, 4usize..40, 2048u64..16384).prop_map(
        |(max_entries, max_path_depth, max_path_len, max_total_bytes)| Limits {
            max_total_bytes,
            max_entries,
            max_path_depth,
            max_path_len,
            ..Limits::default()
        },
    );
    prop_oneof![5 => Just(Limits::default()), 1 => small]
}

fn wrap() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        12 => Just(Wrap::Plain),
        4 => Just(Wrap::Gzip),
        1 => (0u16..1000).prop_map(Wrap::Cut),
        1 => (0u16..1000).prop_map(Wrap::CutAtBlock),
        2 => (0u16..1000).prop_map(Wrap::GzipCut),
    ]
}

/// Whole uploads of up to `max_members` members: hostile ones, and as many tame ones
/// (plain or gzip, default limits) whose members keep to plain names and content.
pub(super) fn archive(
    canaries: Vec<Vec<u8>>,
    max_members: usize,
) -> impl Strategy<Value = Archive> {
    let hostile = (
        vec(member(canaries.clone(), false), 0..=max_members),
        prop::bool::weighted(0.9),
        wrap(),
        limits(),
    );
    let tame = (
        vec(member(canaries, true), 0..=max_members),
        Just(true),
        prop_oneof![3 => Just(Wrap::Plain), 1 => Just(Wrap::Gzip)],
        Just(Limits::default()),
    );
    prop_oneof![hostile, tame].prop_map(|(members, end_marker, wrap, limits)| Archive {
        members,
        end_marker,
        wrap,
        limits,
    })
}

impl Archive {
    /// The tar stream, before [`Wrap`].
    pub(super) fn tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for m in &self.members {
            m.write(&mut out);
        }
        if self.end_marker {
            out.resize(out.len() + 2 * BLOCK, 0);
        }
        out
    }

    /// What the extractor reads: the tar stream as [`Wrap`] turns it.
    pub(super) fn stream(&self, tar: &[u8]) -> Vec<u8> {
        let cut = |len: usize, permille: u16| len * usize::from(permille) / 1000;
        match self.wrap {
            Wrap::Plain => tar.to_vec(),
            Wrap::Gzip => gzip(tar),
            Wrap::Cut(p) => tar[..cut(tar.len(), p)].to_vec(),
            Wrap::CutAtBlock(p) => tar[..cut(tar.len(), p) / BLOCK * BLOCK].to_vec(),
            Wrap::GzipCut(p) => {
                let gz = gzip(tar);
                gz[..cut(gz.len(), p)].to_vec()
            }
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

impl Member {
    fn write(&self, out: &mut Vec<u8>) {
        if let Kind::Global = self.kind {
            let records = pax_records(&[(b"comment", b"generated")]);
            block(out, b'g', b"pax_global_header", b"", 0o644, 0, 0, &records);
            return;
        }
        let link = match &self.kind {
            Kind::Symlink(t) | Kind::HardLink(t) => Some(t.0.as_slice()),
            _ => None,
        };
        let fits = |b: &[u8]| b.len() <= 100 && !b.contains(&0);
        let enc = match self.enc {
            Enc::Header if !fits(&self.path.0) || !link.is_none_or(fits) => Enc::Pax,
            enc => enc,
        };
        let mut with_nul = |kind: u8, bytes: &[u8]| {
            let mut data = bytes.to_vec();
            data.push(0);
            block(out, kind, b"././@LongLink", b"", 0o644, 0, 0, &data);
        };
        if enc == Enc::Gnu {
            with_nul(b'L', &self.path.0);
            if let Some(link) = link {
                with_nul(b'K', link);
            }
        }
        let data: &[u8] = match &self.kind {
            Kind::File(d) => &d.0,
            _ => b"",
        };
        let mut records: Vec<(&[u8], Vec<u8>)> = Vec::new();
        if enc == Enc::Pax {
            records.push((b"path", self.path.0.clone()));
            if let Some(link) = link {
                records.push((b"linkpath", link.to_vec()));
            }
        }
        if let Some(size) = self.pax_size {
            let len = data.len() as u64;
            let size = match size {
                PaxSize::Zero => 0,
                PaxSize::OneLess => len.saturating_sub(1),
                PaxSize::OneMore => len + 1,
                PaxSize::BlockMore => len + BLOCK as u64,
                PaxSize::TwoBlocksMore => len + 2 * BLOCK as u64,
                PaxSize::Huge => u64::MAX - 100,
            };
            records.push((b"size", size.to_string().into_bytes()));
        }
        if !records.is_empty() {
            let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (*k, &v[..])).collect();
            block(
                out,
                b'x',
                b"PaxHeader",
                b"",
                0o644,
                0,
                0,
                &pax_records(&refs),
            );
        }
        let (name, linkname): (&[u8], &[u8]) = match enc {
            Enc::Header => (&self.path.0, link.unwrap_or_default()),
            _ if self.decoy => (
                b"../decoy",
                if link.is_some() { b"/etc/passwd" } else { b"" },
            ),
            _ => (&self.path.0, link.unwrap_or_default()),
        };
        let kind = match &self.kind {
            Kind::File(_) => b'0',
            Kind::Dir => b'5',
            Kind::Symlink(_) => b'2',
            Kind::HardLink(_) => b'1',
            Kind::Other(flag) => *flag,
            Kind::Global => b'g',
        };
        block(
            out, kind, name, linkname, self.mode, self.mtime, self.owner, data,
        );
    }
}

/// `len key=value\n` records.
fn pax_records(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Appends a GNU header and `data` padded to a block. `name` and `linkname` are cut to
/// their fields (100 bytes); a NUL in them ends them early, as readers see it.
#[allow(clippy::too_many_arguments)]
fn block(
    out: &mut Vec<u8>,
    kind: u8,
    name: &[u8],
    linkname: &[u8],
    mode: u32,
    mtime: u64,
    owner: u64,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(mtime);
    let old = h.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    let n = linkname.len().min(old.linkname.len());
    old.linkname[..n].copy_from_slice(&linkname[..n]);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}
