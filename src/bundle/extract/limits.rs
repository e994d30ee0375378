//! Resource limits applied to every archive.

/// Bounds on what one archive may make us do. Every limit is checked while
/// the stream is read, never from header fields alone.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes that may come out of the decompressor (tar headers, padding and
    /// data alike; for a plain tar this is the stream length). Reading stops
    /// as soon as one byte more is produced.
    pub max_total_bytes: u64,
    /// Entries, counting every header the tar reader yields (files,
    /// directories, links, whiteouts, pax global headers).
    pub max_entries: u64,
    /// Components of a normalised entry path (`./a//b/` has two).
    pub max_path_depth: usize,
    /// Bytes of an entry path, hard link target or symlink target as stored
    /// in the archive (before normalisation).
    pub max_path_len: usize,
    /// Bytes out of the gzip decoder per compressed byte read. Checked
    /// continuously once [`RATIO_GRACE_BYTES`] have come out, so that tiny
    /// archives (whose zero padding alone compresses ~100:1) are not refused.
    /// `u64::MAX` disables the check. Plain tar streams are not concerned.
    pub max_compression_ratio: u64,
}

/// Decompressed bytes below which the compression ratio is not enforced.
pub const RATIO_GRACE_BYTES: u64 = 1 << 20;

impl Default for Limits {
    /// 1 GiB uncompressed, 100 000 entries, depth 64, paths of 4096 bytes,
    /// compression ratio 200.
    fn default() -> Self {
        Self {
            max_total_bytes: 1 << 30,
            max_entries: 100_000,
            max_path_depth: 64,
            max_path_len: 4096,
            max_compression_ratio: 200,
        }
    }
}
