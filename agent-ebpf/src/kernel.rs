//! Reads of kernel structures through offsets the agent resolved from BTF.
//! Every read goes through bpf_probe_read_kernel, so a wrong offset yields garbage
//! values or an error, never a crash.

use core::mem::size_of;

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, gen},
};
use ktrail_agent_common::{FdKind, KernelOffsets, SocketInfo, AF_INET, AF_INET6, AF_UNIX};

use crate::{fd_cache::FdSlot, maps::SPAN_BUF};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i64> {
    bpf_probe_read_kernel(base.add(offset as usize) as *const T)
}

#[inline(always)]
unsafe fn ptr_at(base: *const u8, offset: u32) -> Result<*const u8, i64> {
    let p: *const u8 = read_at(base, offset)?;
    if p.is_null() {
        return Err(-1);
    }
    Ok(p)
}

/// Offsets in x86_64's `struct pt_regs` (the ptrace layout, stable): rdx, rsi, rdi are
/// adjacent, then orig_rax, rip, cs.
pub const PT_REGS_RDX: usize = 96;
/// The 64-bit user code segment; a 32-bit (compat) syscall has `__USER32_CS` and its
/// own numbers and argument registers.
pub const USER64_CS: u64 = 0x33;

/// The first three arguments of the current 64-bit syscall, from the registers saved at
/// entry (unchanged at exit: the handlers take them from `pt_regs`, only rax is
/// replaced by the return value). Err for a 32-bit syscall. One read for all of them.
#[inline(always)]
pub fn syscall_args(regs: *const u8) -> Result<[u64; 3], i64> {
    // rdx, rsi, rdi, orig_rax, rip, cs
    let r: [u64; 6] = unsafe { bpf_probe_read_kernel(regs.add(PT_REGS_RDX) as *const [u64; 6])? };
    if r[5] != USER64_CS {
        return Err(-1);
    }
    Ok([r[2], r[1], r[0]])
}

/// Inode number of the current task's network namespace.
#[inline(always)]
pub fn current_netns(off: &KernelOffsets) -> Result<u32, i64> {
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let nsproxy = ptr_at(task, off.task_nsproxy)?;
        let net = ptr_at(nsproxy, off.nsproxy_net_ns)?;
        read_at::<u32>(net, off.net_inum)
    }
}

/// Bytes one span read may cover: every group of fields read together below lies
/// within it on 6.x kernels (e.g. `sock_common` from `skc_daddr` to the IPv6
/// addresses is 88 bytes); a group that does not is read field by field.
const SPAN: u64 = 128;

/// Several fields of one kernel struct, copied with a single `bpf_probe_read_kernel`
/// into a per-CPU buffer. Each helper call costs about as much as copying 128 bytes,
/// and the fd → socket walk runs at every traced syscall, so reading the fields of a
/// struct together instead of one by one saves most of its calls. There is one buffer:
/// a new span overwrites the last, so read what you need from a span before the next.
struct Span {
    buf: *const u8,
    base: *const u8,
    lo: u64,
    whole: bool,
}

// Offsets are compared as u64: the verifier must see the bound of the very register
// added to the buffer, and u32 values in 64-bit registers lose it (the compiler drops
// masks it can prove redundant; the verifier cannot prove them).
impl Span {
    /// Reads the fields in `[lo, hi)` of the struct at `base`: always `SPAN` bytes from
    /// `lo` rounded down to 8 (so every field keeps its natural alignment in the buffer;
    /// a constant size, because the verifier cannot follow a computed one through the
    /// compiler's 32-bit arithmetic). Bytes past the struct are never used; if the read
    /// fails (past the end of a mapping) or the fields do not fit, `get` falls back to a
    /// read per field.
    #[inline(always)]
    unsafe fn read(base: *const u8, lo: u32, hi: u32) -> Result<Span, i64> {
        let lo = (lo & !7) as u64;
        let buf = SPAN_BUF.get_ptr_mut(0).ok_or(-1i64)? as *mut u8;
        let whole = (hi as u64) <= lo + SPAN
            && gen::bpf_probe_read_kernel(
                buf as *mut c_void,
                SPAN as u32,
                base.add(lo as usize) as *const c_void,
            ) == 0;
        Ok(Span {
            buf,
            base,
            lo,
            whole,
        })
    }

    /// The span covering two fields, each given as (offset, size).
    #[inline(always)]
    unsafe fn fields(base: *const u8, a: (u32, u32), b: (u32, u32)) -> Result<Span, i64> {
        Span::read(base, lo2(a.0, b.0), hi2(a.0 + a.1, b.0 + b.1))
    }

    #[inline(always)]
    unsafe fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let offset = offset as u64;
        if self.whole && offset >= self.lo {
            let rel = offset - self.lo;
            if rel + size_of::<T>() as u64 <= SPAN {
                return Ok(*(self.buf.add(rel as usize) as *const T));
            }
        }
        read_at(self.base, offset as u32)
    }

    #[inline(always)]
    unsafe fn ptr(&self, offset: u32) -> Result<*const u8, i64> {
        let p: *const u8 = self.get(offset)?;
        if p.is_null() {
            return Err(-1);
        }
        Ok(p)
    }
}

#[inline(always)]
fn lo2(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn hi2(a: u32, b: u32) -> u32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The current task's `struct files_struct *`.
#[inline(always)]
pub fn current_files(off: &KernelOffsets) -> Result<*const u8, i64> {
    unsafe { ptr_at(bpf_get_current_task() as *const u8, off.task_files) }
}

/// The `struct file *` behind fd `fd` in the fd table `files`. One span of `files`
/// holds its `fdt` pointer and the fdtable embedded in it (`fdtab`), which `fdt` points
/// to while the process has at most 64 fds: then two reads (span, fd array slot);
/// otherwise the fdtable `fdt` points to is read too.
#[inline(always)]
unsafe fn file_of_fd(off: &KernelOffsets, files: *const u8, fd: i64) -> Result<*const u8, i64> {
    if fd < 0 {
        return Err(-1);
    }
    let fdtab_max_fds = off.files_fdtab + off.fdtable_max_fds;
    let fdtab_fd = off.files_fdtab + off.fdtable_fd;
    let s = Span::read(
        files,
        lo2(off.files_fdt, lo2(fdtab_max_fds, fdtab_fd)),
        hi2(off.files_fdt + 8, hi2(fdtab_max_fds + 4, fdtab_fd + 8)),
    )?;
    let fdt = s.ptr(off.files_fdt)?;
    let (max_fds, fd_array) = if fdt as u64 == files as u64 + off.files_fdtab as u64 {
        (s.get::<u32>(fdtab_max_fds)?, s.ptr(fdtab_fd)?)
    } else {
        let t = Span::fields(fdt, (off.fdtable_max_fds, 4), (off.fdtable_fd, 8))?;
        (t.get::<u32>(off.fdtable_max_fds)?, t.ptr(off.fdtable_fd)?)
    };
    if fd as u64 >= max_fds as u64 {
        return Err(-1);
    }
    let file: *const u8 = bpf_probe_read_kernel((fd_array as *const *const u8).add(fd as usize))?;
    if file.is_null() {
        return Err(-1);
    }
    Ok(file)
}

/// [`socket_of_file`] for fd `fd` of the current task.
#[inline(always)]
pub fn socket_of_fd(
    off: &KernelOffsets,
    tgid: u32,
    fd: i64,
    out: &mut SocketInfo,
) -> Result<u64, i64> {
    let file = current_files(off).and_then(|files| unsafe { file_of_fd(off, files, fd) });
    socket_of_file(off, tgid, fd, file, out)
}

/// What is behind `file`, the `struct file *` of fd `fd` of the current task (of
/// process `tgid`), as [`file_of_fd`] or kernel_btf.rs `file_of_fd` found it: the
/// `struct sock *` for a socket (0 for a file), with `out` filled. What lies between
/// the file and the socket is cached per fd (fd_cache.rs).
#[inline(always)]
pub fn socket_of_file(
    off: &KernelOffsets,
    tgid: u32,
    fd: i64,
    file: Result<*const u8, i64>,
    out: &mut SocketInfo,
) -> Result<u64, i64> {
    let file = file?;
    unsafe { socket_behind(off, tgid, fd, file, out) }
}

#[inline(always)]
unsafe fn socket_behind(
    off: &KernelOffsets,
    tgid: u32,
    fd: i64,
    file: *const u8,
    out: &mut SocketInfo,
) -> Result<u64, i64> {
    let slot = FdSlot::of(tgid, fd);
    if let Some(hit) = slot.as_ref().and_then(|s| s.get(file as u64)) {
        out.inode = hit.inode;
        out.fd_kind = hit.fd_kind;
        if hit.sk == 0 {
            return Ok(0);
        }
        sock_endpoints(off, hit.sk as *const u8, out)?;
        return Ok(hit.sk);
    }
    let f = Span::fields(file, (off.file_f_inode, 8), (off.file_private_data, 8))?;
    let inode = f.ptr(off.file_f_inode)?;
    // Before the next span: every span shares one buffer.
    let private_data: *const u8 = f.get(off.file_private_data)?;
    let i = Span::fields(inode, (off.inode_i_mode, 2), (off.inode_i_ino, 8))?;
    let mode: u16 = i.get(off.inode_i_mode)?;
    out.inode = i.get::<u64>(off.inode_i_ino)?;
    if mode & S_IFMT != S_IFSOCK {
        out.fd_kind = FdKind::File as u16;
        if let Some(s) = &slot {
            s.put(file as u64, 0, out.inode, out.fd_kind);
        }
        return Ok(0);
    }
    out.fd_kind = FdKind::Socket as u16;
    if private_data.is_null() {
        return Err(-1);
    }
    let sk = ptr_at(private_data, off.socket_sk)?;
    if let Some(s) = &slot {
        s.put(file as u64, sk as u64, out.inode, out.fd_kind);
    }
    sock_endpoints(off, sk, out)?;
    Ok(sk as u64)
}

/// Family, addresses and ports of a `struct sock` (or the unix peer's inode).
#[inline(always)]
pub unsafe fn sock_endpoints(
    off: &KernelOffsets,
    sk: *const u8,
    out: &mut SocketInfo,
) -> Result<(), i64> {
    // Everything below is in `sock_common`, at the start of `struct sock`.
    let lo = lo2(
        lo2(off.skc_daddr, off.skc_rcv_saddr),
        lo2(off.skc_family, lo2(off.skc_dport, off.skc_num)),
    );
    let hi = hi2(
        hi2(off.skc_v6_daddr, off.skc_v6_rcv_saddr) + 16,
        hi2(off.skc_family, hi2(off.skc_dport, off.skc_num)) + 2,
    );
    let s = Span::read(sk, lo, hi)?;
    let family: u16 = s.get(off.skc_family)?;
    out.family = family;
    match family {
        AF_INET => {
            let local: [u8; 4] = s.get(off.skc_rcv_saddr)?;
            let remote: [u8; 4] = s.get(off.skc_daddr)?;
            out.local_addr[..4].copy_from_slice(&local);
            out.remote_addr[..4].copy_from_slice(&remote);
            read_ports(off, &s, out)
        }
        AF_INET6 => {
            out.local_addr = s.get(off.skc_v6_rcv_saddr)?;
            out.remote_addr = s.get(off.skc_v6_daddr)?;
            read_ports(off, &s, out)
        }
        AF_UNIX => {
            let peer: *const u8 = read_at(sk, off.unix_peer)?;
            if !peer.is_null() {
                let peer_socket = ptr_at(peer, off.sk_socket)?;
                out.peer_inode = read_at::<u64>(
                    peer_socket.add(off.socket_alloc_vfs_inode as usize),
                    off.inode_i_ino,
                )?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline(always)]
unsafe fn read_ports(off: &KernelOffsets, s: &Span, out: &mut SocketInfo) -> Result<(), i64> {
    out.local_port = s.get::<u16>(off.skc_num)?;
    out.remote_port = u16::from_be(s.get::<u16>(off.skc_dport)?);
    Ok(())
}
