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
/// elf.h's dynamic-section tags and flag for an object whose text the loader patched.
const DT_NULL: i64 = 0;
const DT_TEXTREL: i64 = 22;
const DT_FLAGS: i64 = 30;
const DF_TEXTREL: u64 = 0x4;

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
    // Text relocations make read-only pages the loader wrote: such an object is left
    // alone (x86-64 code is position-independent; none is expected).
    if phdrs
        .iter()
        .any(|ph| ph.p_type == libc::PT_DYNAMIC && has_text_relocations(info.dlpi_addr, ph))
    {
        return 0;
    }
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

/// Whether the dynamic section `ph` of the object loaded at `base` asks for text
/// relocations (`DT_TEXTREL`, or `DF_TEXTREL` in `DT_FLAGS`).
fn has_text_relocations(base: libc::Elf64_Addr, ph: &libc::Elf64_Phdr) -> bool {
    let mut dyn_ptr = base.wrapping_add(ph.p_vaddr) as *const [i64; 2];
    let end = base.wrapping_add(ph.p_vaddr).wrapping_add(ph.p_memsz) as *const [i64; 2];
    while dyn_ptr < end {
        // SAFETY: the loaded PT_DYNAMIC segment is an array of (tag, value) pairs ending
        // at DT_NULL, mapped readable for as long as the object is loaded.
        let [tag, value] = unsafe { dyn_ptr.read() };
        match tag {
            DT_NULL => return false,
            DT_TEXTREL => return true,
            DT_FLAGS if value as u64 & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        // SAFETY: still within the segment (checked by the loop).
        dyn_ptr = unsafe { dyn_ptr.add(1) };
    }
    false
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

    /// Text relocations are found by tag and by flag, and the walk stops at DT_NULL.
    #[test]
    fn text_relocations_are_recognised() {
        let check = |entries: &[[i64; 2]]| {
            let ph = libc::Elf64_Phdr {
                p_type: libc::PT_DYNAMIC,
                p_flags: 0,
                p_offset: 0,
                p_vaddr: entries.as_ptr() as u64,
                p_paddr: 0,
                p_filesz: 0,
                p_memsz: std::mem::size_of_val(entries) as u64,
                p_align: 8,
            };
            has_text_relocations(0, &ph)
        };
        assert!(!check(&[[DT_FLAGS, 0x8], [DT_NULL, 0]]));
        assert!(check(&[[DT_FLAGS, 0x8 | DF_TEXTREL as i64], [DT_NULL, 0]]));
        assert!(check(&[[1, 5], [DT_TEXTREL, 0], [DT_NULL, 0]]));
        assert!(!check(&[[DT_NULL, 0], [DT_TEXTREL, 0]]));
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
