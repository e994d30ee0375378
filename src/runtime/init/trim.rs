//! Dropping the init's mappings of read-only file pages before it waits for `start`.
//!
//! The init is a copy of the runtime process: it maps (by the thousand, with the
//! kernel's fault-around) the pages of the program text and read-only data that the
//! runtime and the init have run. `execve` tears that address space down before it closes
//! the exec fifo, so `start`, which waits for the close, waits for the teardown too
//! (a third of a millisecond and more, most of the exec). Dropped while the init waits,
//! the exec finds little left: the few pages the init runs after the wait fault back in
//! from the page cache.

use std::ffi::c_void;

/// `p_flags` bit of a writable segment (elf.h's `PF_W`).
const PF_W: u32 = 0x2;

/// Drops the page-table entries of every read-only `PT_LOAD` segment of the program and
/// its libraries (`MADV_DONTNEED`): text and read-only data, which no one writes, so the
/// pages read back the same from the file. Writable segments, and the RELRO part of them
/// that the loader wrote before making it read-only, are never touched; only whole pages
/// within a segment are. Best effort: a failure leaves the mappings as they were.
pub fn drop_read_only_mappings() {
    // SAFETY: the callback only reads the program headers dl_iterate_phdr hands it, and
    // madvise(MADV_DONTNEED) of pages that map unmodified file contents (never written:
    // read-only segments) changes nothing the process can observe but their residency.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), std::ptr::null_mut());
    }
}

unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid dl_phdr_info for the duration of the call.
    let info = unsafe { &*info };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    // The vDSO is the kernel's own mapping, not a file's.
    if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
        return 0;
    }
    let page = page_size();
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    for ph in phdrs {
        if ph.p_type != libc::PT_LOAD || ph.p_flags & PF_W != 0 || ph.p_memsz == 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
        let end = start.wrapping_add(ph.p_memsz as usize);
        // Whole pages only: a page shared with a writable segment stays.
        let (start, end) = (start.next_multiple_of(page), end / page * page);
        if start < end {
            // SAFETY: [start, end) lies within a read-only segment mapped from its file.
            unsafe {
                libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    0
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process goes on running, reading its read-only data and calling into its
    /// libraries, after its read-only mappings are dropped.
    #[test]
    fn the_process_runs_on_after_the_drop() {
        let before = rss_file_kb();
        drop_read_only_mappings();
        let after = rss_file_kb();
        let s = format!("{:?}", std::env::args().collect::<Vec<_>>());
        assert!(s.starts_with('['));
        assert!(
            after < before,
            "file-backed RSS did not shrink: {before} kB -> {after} kB"
        );
    }

    fn rss_file_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
