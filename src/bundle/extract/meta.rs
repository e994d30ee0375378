//! Ownership, permissions and times of an entry, as they will be applied.

use std::io::Read;

use nix::sys::time::TimeSpec;

/// Metadata read from a header (and its pax records), validated.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    /// Permission bits as stored; callers mask them per file type.
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: TimeSpec,
    /// pax `GNU.sparse.*` records: a sparse file in the pax format, whose
    /// data is a sparse map the tar crate does not expand.
    pub(super) sparse: bool,
}

/// Permission bits kept on regular files: setuid, setgid and sticky dropped.
pub(super) const FILE_MODE_MASK: u32 = 0o777;
/// Permission bits kept on directories: the sticky bit stays (a world-writable
/// `/tmp` needs it and it grants nothing), setuid and setgid go.
pub(super) const DIR_MODE_MASK: u32 = 0o1777;

impl Meta {
    /// Reads mode, owner and mtime. The tar crate already applies pax `uid`,
    /// `gid` and `size` records; a pax `mtime` (sub-second) is applied here.
    /// pax `SCHILY.xattr.*`/`LIBARCHIVE.xattr.*` records are ignored: extended
    /// attributes are never restored.
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self, String> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| e.to_string())?;
        let uid = id(header.uid(), "uid")?;
        let gid = id(header.gid(), "gid")?;
        let secs = header.mtime().map_err(|e| e.to_string())?;
        let mut mtime = TimeSpec::new(saturate(i128::from(secs)), 0);
        let mut sparse = false;
        if let Some(records) = entry.pax_extensions().map_err(|e| e.to_string())? {
            for record in records {
                let record = record.map_err(|e| format!("pax record: {e}"))?;
                let key = record.key_bytes();
                if key == b"mtime" {
                    mtime = parse_pax_time(record.value_bytes())
                        .ok_or_else(|| "pax mtime is not a decimal timestamp".to_owned())?;
                }
                sparse |= key.starts_with(b"GNU.sparse.");
            }
        }
        Ok(Self {
            mode,
            uid,
            gid,
            mtime,
            sparse,
        })
    }
}

/// A uid/gid that fits `uid_t` and is not `(uid_t)-1`, which chown reads as
/// "leave unchanged".
fn id(value: std::io::Result<u64>, what: &str) -> Result<u32, String> {
    let value = value.map_err(|e| e.to_string())?;
    match u32::try_from(value) {
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err(format!("{what} {value} is out of range")),
    }
}

fn saturate(secs: i128) -> libc::time_t {
    libc::time_t::try_from(secs).unwrap_or(if secs < 0 {
        libc::time_t::MIN
    } else {
        libc::time_t::MAX
    })
}

/// Parses a pax timestamp: `[-]SECONDS[.FRACTION]`, at most nanosecond
/// precision kept.
pub(super) fn parse_pax_time(raw: &[u8]) -> Option<TimeSpec> {
    let (negative, rest) = match raw.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (secs, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &[][..]),
    };
    if secs.is_empty() || secs.len() > 20 || !secs.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let secs = secs
        .iter()
        .fold(0i128, |acc, d| acc * 10 + i128::from(d - b'0'));
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    let (secs, nanos) = match (negative, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nanos),
    };
    // nanos < 10^9 fits any c_long.
    let nanos = libc::c_long::try_from(nanos).unwrap_or(0);
    Some(TimeSpec::new(saturate(secs), nanos))
}
