//! A journal segment's memory mapping: the only unsafe code of the recorder, kept to this file.
//!
//! The mapping is shared (`MAP_SHARED`), so what is copied into it is in the page cache at once
//! and outlives the process. It is created over a file allocated in full (`posix_fallocate`),
//! so writing to it never needs a new disk block: a full disk fails the allocation, never a
//! later page fault (which would be SIGBUS). The file is this process's own (created 0600 in a
//! 0700 folder, never truncated while mapped): nobody else can shrink it under the mapping.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// A writable, shared mapping of a whole file.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; `write` takes `&mut self`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Allocates `len` bytes of disk for `file` (empty, opened read-write) and maps them.
    pub(super) fn allocate(file: &File, len: usize) -> io::Result<Mapping> {
        let fd = file.as_raw_fd();
        let size = libc::off_t::try_from(len).map_err(|_| io::Error::other("segment too big"))?;
        // SAFETY: `fd` is an open file descriptor; posix_fallocate has no memory arguments.
        let errno = unsafe { libc::posix_fallocate(fd, 0, size) };
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address given), of a file at least
        // `len` bytes long (allocated just above).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Faults every page in for writing now, so that the first write to each costs nothing
    /// later (a best effort: without MADV_POPULATE_WRITE, Linux before 5.14, pages fault on
    /// first write as usual).
    pub(super) fn prefault(&mut self) {
        // SAFETY: the range is exactly this mapping; the advice changes no content.
        unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }

    /// Copies `bytes` to offset `at`. Panics when they do not fit (a journal bug).
    pub(super) fn write(&mut self, at: usize, bytes: &[u8]) {
        let end = at.checked_add(bytes.len()).expect("offset overflow");
        assert!(end <= self.len, "a journal write past its segment");
        // SAFETY: `at..end` lies within the mapping (checked above), which is valid for writes
        // for as long as `self` lives; `bytes` cannot overlap it (nothing else borrows it).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len());
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
