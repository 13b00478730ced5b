//! What the fd → socket walk found behind an fd of a traced process, kept per
//! (tgid, fd) so the next syscall on that fd reads less kernel memory: the walk to the
//! fd's `struct file *` (task → files → fdtable → fd array) is still made at every
//! event, but a hit skips the `file`, `inode` and `socket` reads behind it; the
//! 4-tuple is always read afresh from the `struct sock` (connect and bind change it).
//!
//! An entry is used only while both hold:
//! - the fd still holds the same `struct file *` (dup2 onto it, or a close and a new
//!   file on the same fd number, put another one there), and
//! - the process's `fd_gen` (`PROCS`) is the one the entry was made under.
//!
//! The second covers a file freed and its memory reused for a new file on the same fd
//! (the kernel's file cache hands freed objects out again at once): `close` drops its
//! fd's entry at entry (sys_enter.rs), and whatever closes fds without a `close` of the
//! process's own moves `fd_gen` on: exec (close-on-exec fds), dup2/dup3, close_range,
//! the start and end of tracking (a reused tgid). Processes that share their fd table
//! with another process, or use io_uring (which closes fds itself), get no cache
//! (`PROC_NO_FD_CACHE`).

use ktrail_agent_common::{FdCacheEntry, FdKey, PROC_NO_FD_CACHE};

use crate::maps::{FD_CACHE, PROCS};

/// The cache slot of one fd of the current process, when its process may use the cache.
pub struct FdSlot {
    key: FdKey,
    fd_gen: u32,
}

impl FdSlot {
    #[inline(always)]
    pub fn of(tgid: u32, fd: i64) -> Option<FdSlot> {
        let slot = PROCS.get(tgid)?;
        if slot.state & PROC_NO_FD_CACHE != 0 {
            return None;
        }
        Some(FdSlot {
            key: FdKey {
                tgid,
                fd: fd as u32,
            },
            fd_gen: slot.fd_gen,
        })
    }

    /// The entry for this fd if it was made for `file` under the current generation.
    #[inline(always)]
    pub fn get(&self, file: u64) -> Option<FdCacheEntry> {
        // SAFETY: the value is copied out at once.
        let entry = unsafe { FD_CACHE.get(&self.key) }.copied()?;
        (entry.file == file && entry.fd_gen == self.fd_gen).then_some(entry)
    }

    #[inline(always)]
    pub fn put(&self, file: u64, sk: u64, inode: u64, fd_kind: u16) {
        let entry = FdCacheEntry {
            file,
            sk,
            inode,
            fd_gen: self.fd_gen,
            fd_kind,
            _pad: 0,
        };
        let _ = FD_CACHE.insert(&self.key, &entry, 0);
    }
}

/// The fd is being closed: its entry goes (sys_enter of `close`).
#[inline(always)]
pub fn forget(tgid: u32, fd: i64) {
    let _ = FD_CACHE.remove(&FdKey {
        tgid,
        fd: fd as u32,
    });
}
