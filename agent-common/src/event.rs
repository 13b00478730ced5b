//! Events the kernel programs write into the `EVENTS` ring buffer.
//!
//! Every event starts with an [`EventHeader`] whose `kind` tells the layout that
//! follows. Syscall events are variable-length: only `payload_len` bytes of the
//! payload are sent, so [`SyscallEvent::wire_len`] is what the ring carries.

use crate::config::COMM_LEN;

/// Largest data capture per syscall; the runtime setting may only lower it.
pub const MAX_PAYLOAD: usize = 4096;
/// Longest exec filename kept.
pub const MAX_FILENAME: usize = 256;

/// Type tags in [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ProcessExec = 1,
    ProcessFork = 2,
    ProcessExit = 3,
    Syscall = 4,
    TcpState = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownTag(pub u32);

impl TryFrom<u32> for EventKind {
    type Error = UnknownTag;
    fn try_from(v: u32) -> Result<Self, UnknownTag> {
        Ok(match v {
            1 => Self::ProcessExec,
            2 => Self::ProcessFork,
            3 => Self::ProcessExit,
            4 => Self::Syscall,
            5 => Self::TcpState,
            other => return Err(UnknownTag(other)),
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the event, or at syscall entry.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}

/// What a file descriptor turned out to be.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    None = 0,
    Socket = 1,
    File = 2,
}

impl TryFrom<u16> for FdKind {
    type Error = UnknownTag;
    fn try_from(v: u16) -> Result<Self, UnknownTag> {
        Ok(match v {
            0 => Self::None,
            1 => Self::Socket,
            2 => Self::File,
            other => return Err(UnknownTag(other as u32)),
        })
    }
}

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The socket behind a file descriptor, read from the kernel's `struct sock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketInfo {
    /// An [`FdKind`] tag.
    pub fd_kind: u16,
    /// `AF_*`; 0 when not a socket.
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    /// Host byte order.
    pub remote_port: u16,
    /// IPv4 in the first 4 bytes, network order.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Inode of the socket (or file); unix peers pair on it.
    pub inode: u64,
    /// For a connected unix socket, the inode of its peer socket.
    pub peer_inode: u64,
}

/// `SyscallEvent::flags` bits.
pub const FLAG_PAYLOAD_TRUNCATED: u32 = 1;
pub const FLAG_PAYLOAD_READ_FAILED: u32 = 2;
/// The fd's socket was looked up at entry (close) rather than at exit.
pub const FLAG_SOCKET_AT_ENTRY: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallEvent {
    pub header: EventHeader,
    /// Raw x86_64 syscall number; see [`Syscall`].
    pub nr: u32,
    pub fd: i32,
    /// Return value as the kernel gave it (negative errno on failure).
    pub ret: i64,
    pub duration_ns: u64,
    /// Bytes the caller asked to transfer (count / iov_len).
    pub requested: u64,
    pub socket: SocketInfo,
    /// Bytes of `payload` that are valid.
    pub payload_len: u32,
    pub flags: u32,
    pub payload: [u8; MAX_PAYLOAD],
}

impl SyscallEvent {
    pub const HEADER_LEN: usize = core::mem::size_of::<SyscallEvent>() - MAX_PAYLOAD;

    /// Bytes the ring buffer carries for this event.
    pub fn wire_len(&self) -> usize {
        let n = self.payload_len as usize;
        Self::HEADER_LEN + if n > MAX_PAYLOAD { MAX_PAYLOAD } else { n }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessEvent {
    pub header: EventHeader,
    /// Exec: the old pid (tid that called exec); fork: the child pid; exit: 0.
    pub other_pid: u32,
    /// Network-namespace inode the process runs in (0 when unread).
    pub netns: u32,
    /// Exit: 1 when the whole thread group is gone.
    pub group_dead: u32,
    pub filename_len: u32,
    pub filename: [u8; MAX_FILENAME],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStateEvent {
    pub header: EventHeader,
    /// Kernel address of the `struct sock`: identifies the connection over its life.
    pub skaddr: u64,
    pub old_state: i32,
    pub new_state: i32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// Value of the `TRACKED` map: why a process is traced, and its node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedProcess {
    /// Network namespace of the node the process belongs to.
    pub node_netns: u32,
    pub flags: u32,
}

/// Value of the `PROCS` array (index = tgid): the kernel programs' fast test of whether
/// a process is traced, and the generation of its fd → socket cache entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSlot {
    /// `PROC_*` bits; 0 for a process that is not traced.
    pub state: u32,
    /// Bumped whenever fds of the process may have been closed or replaced without a
    /// `close` of its own (exec, dup2/dup3, close_range, tracking started or ended):
    /// `FD_CACHE` entries of an older generation are ignored.
    pub fd_gen: u32,
}

/// `ProcSlot::state`: the process is traced (in `TRACKED`).
pub const PROC_TRACKED: u32 = 1;
/// `ProcSlot::state`: its fd table is shared with another process (clone with
/// CLONE_FILES, not a thread) or it set up io_uring: fds may close without a close
/// syscall of its own, so the fd → socket cache is not used for it.
pub const PROC_NO_FD_CACHE: u32 = 2;

/// Key of `FD_CACHE`: one fd of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of `FD_CACHE`: what the fd → socket walk found behind one fd. Valid only
/// while the fd still holds the same `struct file` and the process's `fd_gen` has not
/// moved; the 4-tuple itself is always read afresh from `sk` (connect and bind change it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdCacheEntry {
    pub file: u64,
    /// `struct sock *` for a socket, 0 for a file.
    pub sk: u64,
    pub inode: u64,
    pub fd_gen: u32,
    /// An [`FdKind`] tag.
    pub fd_kind: u16,
    pub _pad: u16,
}

pub const TRACKED_BY_NAME: u32 = 1;
pub const TRACKED_BY_PARENT: u32 = 2;
pub const TRACKED_BY_SCAN: u32 = 4;

/// What a syscall that is not traced may still do to a traced process's fds (so to the
/// kernel programs' fd → socket cache), by x86_64 number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdChange {
    /// dup2, dup3, close_range: fds closed or replaced without a `close` of their own.
    Replaces,
    /// io_uring_setup, io_uring_enter: io_uring closes and installs fds by itself.
    IoUring,
}

impl FdChange {
    #[inline(always)]
    pub fn from_nr(nr: u64) -> Option<FdChange> {
        match nr {
            33 | 292 | 436 => Some(Self::Replaces),
            425 | 426 => Some(Self::IoUring),
            _ => None,
        }
    }
}

/// Syscalls the agent traces, by x86_64 number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    Close = 3,
    Readv = 19,
    Writev = 20,
    Connect = 42,
    Accept = 43,
    Sendto = 44,
    Recvfrom = 45,
    Sendmsg = 46,
    Recvmsg = 47,
    Execve = 59,
    Openat = 257,
    Accept4 = 288,
    /// Not a syscall: plaintext passed to Go's `crypto/tls.(*Conn).Write` (uprobe).
    GoTlsWrite = 1000,
    /// Not a syscall: plaintext returned by Go's `crypto/tls.(*Conn).Read` (uprobe).
    GoTlsRead = 1001,
}

impl Syscall {
    /// The real syscalls the kernel programs trace (at `raw_syscalls:sys_enter/sys_exit`).
    pub const ALL: [Syscall; 14] = [
        Self::Read,
        Self::Write,
        Self::Close,
        Self::Readv,
        Self::Writev,
        Self::Connect,
        Self::Accept,
        Self::Sendto,
        Self::Recvfrom,
        Self::Sendmsg,
        Self::Recvmsg,
        Self::Execve,
        Self::Openat,
        Self::Accept4,
    ];

    /// The traced syscall with this x86_64 number: the first test the kernel program
    /// makes for every syscall of every process, so it is a match, not a search.
    #[inline(always)]
    pub fn from_nr(nr: u64) -> Option<Syscall> {
        Some(match nr {
            0 => Self::Read,
            1 => Self::Write,
            3 => Self::Close,
            19 => Self::Readv,
            20 => Self::Writev,
            42 => Self::Connect,
            43 => Self::Accept,
            44 => Self::Sendto,
            45 => Self::Recvfrom,
            46 => Self::Sendmsg,
            47 => Self::Recvmsg,
            59 => Self::Execve,
            257 => Self::Openat,
            288 => Self::Accept4,
            _ => return None,
        })
    }

    /// A small non-zero tag (1..=14, five bits) for the kernel's per-thread slot, which
    /// packs it with the entry time; [`Syscall::from_tag`] reverses it.
    #[inline(always)]
    pub fn tag(self) -> u64 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::Close => 3,
            Self::Readv => 4,
            Self::Writev => 5,
            Self::Connect => 6,
            Self::Accept => 7,
            Self::Sendto => 8,
            Self::Recvfrom => 9,
            Self::Sendmsg => 10,
            Self::Recvmsg => 11,
            Self::Execve => 12,
            Self::Openat => 13,
            Self::Accept4 => 14,
            Self::GoTlsWrite | Self::GoTlsRead => 0,
        }
    }

    #[inline(always)]
    pub fn from_tag(tag: u64) -> Option<Syscall> {
        Some(match tag {
            1 => Self::Read,
            2 => Self::Write,
            3 => Self::Close,
            4 => Self::Readv,
            5 => Self::Writev,
            6 => Self::Connect,
            7 => Self::Accept,
            8 => Self::Sendto,
            9 => Self::Recvfrom,
            10 => Self::Sendmsg,
            11 => Self::Recvmsg,
            12 => Self::Execve,
            13 => Self::Openat,
            14 => Self::Accept4,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Close => "close",
            Self::Readv => "readv",
            Self::Writev => "writev",
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Sendto => "sendto",
            Self::Recvfrom => "recvfrom",
            Self::Sendmsg => "sendmsg",
            Self::Recvmsg => "recvmsg",
            Self::Execve => "execve",
            Self::Openat => "openat",
            Self::Accept4 => "accept4",
            Self::GoTlsWrite => "tls_write",
            Self::GoTlsRead => "tls_read",
        }
    }

    /// Data flows from the process to the fd.
    pub fn is_send(self) -> bool {
        matches!(
            self,
            Self::Write | Self::Writev | Self::Sendto | Self::Sendmsg | Self::GoTlsWrite
        )
    }

    /// Data flows from the fd into the process.
    pub fn is_receive(self) -> bool {
        matches!(
            self,
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg | Self::GoTlsRead
        )
    }

    /// Plaintext seen inside the process (TLS), not bytes on the socket.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::GoTlsWrite | Self::GoTlsRead)
    }
}

impl TryFrom<u32> for Syscall {
    type Error = UnknownTag;
    fn try_from(v: u32) -> Result<Self, UnknownTag> {
        match v {
            1000 => Ok(Self::GoTlsWrite),
            1001 => Ok(Self::GoTlsRead),
            _ => Self::ALL
                .iter()
                .copied()
                .find(|s| *s as u32 == v)
                .ok_or(UnknownTag(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<EventHeader>(), 40);
        assert_eq!(core::mem::size_of::<SocketInfo>(), 56);
        assert_eq!(
            SyscallEvent::HEADER_LEN,
            40 + 4 + 4 + 8 + 8 + 8 + 56 + 4 + 4
        );
        assert_eq!(
            core::mem::size_of::<TcpStateEvent>(),
            40 + 8 + 4 + 4 + 8 + 32
        );
        assert_eq!(core::mem::size_of::<ProcessEvent>(), 40 + 16 + MAX_FILENAME);
    }

    #[test]
    fn tags_round_trip() {
        for s in Syscall::ALL
            .into_iter()
            .chain([Syscall::GoTlsWrite, Syscall::GoTlsRead])
        {
            assert_eq!(Syscall::try_from(s as u32), Ok(s));
        }
        assert_eq!(Syscall::try_from(9999), Err(UnknownTag(9999)));
        for s in Syscall::ALL {
            assert_eq!(Syscall::from_nr(s as u32 as u64), Some(s));
            assert!(
                (1..32).contains(&s.tag()),
                "{s:?} fits the slot's five bits"
            );
            assert_eq!(Syscall::from_tag(s.tag()), Some(s));
        }
        assert_eq!(Syscall::from_nr(2), None);
        assert_eq!(Syscall::from_tag(0), None);
        for k in 1..=5 {
            assert_eq!(EventKind::try_from(k).map(|k| k as u32), Ok(k));
        }
        assert!(EventKind::try_from(0).is_err());
        assert!(FdKind::try_from(3).is_err());
    }
}

/// `ENTERED` slot of a thread inside a traced syscall: the syscall's tag in the top five
/// bits, its entry time (`bpf_ktime_get_ns`, below 2^59 ns = 18 years of uptime) below.
/// 0 means no traced syscall in flight.
pub const ENTERED_TAG_SHIFT: u32 = 59;
pub const ENTERED_TIME_MASK: u64 = (1 << ENTERED_TAG_SHIFT) - 1;

/// Key of an in-flight Go TLS Read (Write is sent at its entry): the goroutine (R14 holds `g` in Go's register
/// ABI), since a goroutine may move between threads while it blocks in Read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCallKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goroutine: u64,
}

/// Key of the learned way from a `tls.Conn`'s `net.Conn` to its `poll.FD`, per concrete
/// type: the interface's itab address identifies the type within one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoConnTypeKey {
    pub tgid: u32,
    pub _pad: u32,
    pub itab: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCall {
    pub buf: u64,
    pub len: u64,
    pub enter_ns: u64,
    pub fd: i32,
    pub _pad: u32,
}
