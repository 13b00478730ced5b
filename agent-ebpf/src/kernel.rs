//! Reads of kernel structures through offsets the agent resolved from BTF.
//! Every read goes through bpf_probe_read_kernel, so a wrong offset yields garbage
//! values or an error, never a crash.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use ktrail_agent_common::{FdKind, KernelOffsets, SocketInfo, AF_INET, AF_INET6, AF_UNIX};

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

/// Resolves a file descriptor of the current task to the socket (or file) behind it.
/// Returns the `struct sock *` for sockets (0 for files).
#[inline(always)]
pub fn socket_of_fd(off: &KernelOffsets, fd: i64, out: &mut SocketInfo) -> Result<u64, i64> {
    if fd < 0 {
        return Err(-1);
    }
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files = ptr_at(task, off.task_files)?;
        let fdt = ptr_at(files, off.files_fdt)?;
        let max_fds: u32 = read_at(fdt, off.fdtable_max_fds)?;
        if fd as u64 >= max_fds as u64 {
            return Err(-1);
        }
        let fd_array = ptr_at(fdt, off.fdtable_fd)?;
        let file: *const u8 =
            bpf_probe_read_kernel((fd_array as *const *const u8).add(fd as usize))?;
        if file.is_null() {
            return Err(-1);
        }
        let inode = ptr_at(file, off.file_f_inode)?;
        let mode: u16 = read_at(inode, off.inode_i_mode)?;
        out.inode = read_at::<u64>(inode, off.inode_i_ino)?;
        if mode & S_IFMT != S_IFSOCK {
            out.fd_kind = FdKind::File as u16;
            return Ok(0);
        }
        out.fd_kind = FdKind::Socket as u16;
        let socket = ptr_at(file, off.file_private_data)?;
        let sk = ptr_at(socket, off.socket_sk)?;
        sock_endpoints(off, sk, out)?;
        Ok(sk as u64)
    }
}

/// Family, addresses and ports of a `struct sock` (or the unix peer's inode).
#[inline(always)]
pub unsafe fn sock_endpoints(
    off: &KernelOffsets,
    sk: *const u8,
    out: &mut SocketInfo,
) -> Result<(), i64> {
    let family: u16 = read_at(sk, off.skc_family)?;
    out.family = family;
    match family {
        AF_INET => {
            let local: [u8; 4] = read_at(sk, off.skc_rcv_saddr)?;
            let remote: [u8; 4] = read_at(sk, off.skc_daddr)?;
            out.local_addr[..4].copy_from_slice(&local);
            out.remote_addr[..4].copy_from_slice(&remote);
            read_ports(off, sk, out)
        }
        AF_INET6 => {
            out.local_addr = read_at(sk, off.skc_v6_rcv_saddr)?;
            out.remote_addr = read_at(sk, off.skc_v6_daddr)?;
            read_ports(off, sk, out)
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
unsafe fn read_ports(off: &KernelOffsets, sk: *const u8, out: &mut SocketInfo) -> Result<(), i64> {
    out.local_port = read_at::<u16>(sk, off.skc_num)?;
    out.remote_port = u16::from_be(read_at::<u16>(sk, off.skc_dport)?);
    Ok(())
}
