//! Configuration the agent writes into the kernel programs' maps before attaching.

/// Length of the kernel's `task_struct.comm`, NUL included.
pub const COMM_LEN: usize = 16;

/// A process-name pattern in the `TARGETS` array, matched against the comm at exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetPattern {
    /// Bytes of `name` that must match; 0 marks an unused slot.
    pub len: u8,
    /// 1: `name` is a prefix of the comm; 0: the comm must equal it exactly.
    pub prefix: u8,
    pub _pad: [u8; 6],
    pub name: [u8; COMM_LEN],
}

impl TargetPattern {
    /// Builds a pattern from a process name; a trailing `*` makes it a prefix.
    /// Names longer than the kernel's 15-byte comm are cut and matched as prefixes,
    /// as the kernel cuts the comm (`kube-controller-manager` → `kube-controller`).
    pub fn new(pattern: &[u8]) -> Option<Self> {
        let (body, mut prefix) = match pattern.split_last() {
            Some((b'*', rest)) => (rest, true),
            _ => (pattern, false),
        };
        if body.is_empty() {
            return None;
        }
        let max = COMM_LEN - 1;
        let len = if body.len() > max {
            prefix = true;
            max
        } else {
            body.len()
        };
        let mut name = [0u8; COMM_LEN];
        name[..len].copy_from_slice(&body[..len]);
        Some(Self {
            len: len as u8,
            prefix: prefix as u8,
            _pad: [0; 6],
            name,
        })
    }

    /// The test the kernel program runs at exec, written with a fixed-bound loop and
    /// no slice comparison so it compiles to BPF the verifier accepts (no memcmp).
    #[inline(always)]
    pub fn matches(&self, comm: &[u8; COMM_LEN]) -> bool {
        let len = self.len as usize;
        if len == 0 || len >= COMM_LEN {
            return false;
        }
        let mut i = 0;
        while i < COMM_LEN - 1 {
            if i < len && self.name[i] != comm[i] {
                return false;
            }
            i += 1;
        }
        self.prefix == 1 || comm[len & (COMM_LEN - 1)] == 0
    }
}

/// Offsets into kernel structures, read from the running kernel's BTF by the agent
/// (the Rust BPF target has no CO-RE relocations, so the agent does the relocation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    /// `struct net` → `ns.inum`.
    pub net_inum: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_socket: u32,
    pub sk_protocol: u32,
    pub sk_type: u32,
    pub unix_peer: u32,
    /// `struct socket_alloc` → `vfs_inode`: from a `struct socket *` to its inode.
    pub socket_alloc_vfs_inode: u32,
    /// `task_struct.comm`: loaded by the tp_btf exit program (agent-ebpf kernel_btf.rs).
    pub task_comm: u32,
    /// `files_struct.fdtab`, the fdtable embedded in it, which `fdt` points to while the
    /// process has at most 64 fds: read in the same span as `files_fdt`.
    pub files_fdtab: u32,
    /// `task_struct.pid` and `.tgid`: what `bpf_get_current_pid_tgid` returns, read by
    /// the tp_btf exit program through the task pointer it has anyway.
    pub task_pid: u32,
    pub task_tgid: u32,
}

/// The single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// Network-namespace inode this agent is scoped to; 0 = every namespace.
    pub scope_netns: u32,
    /// Bytes of each data buffer to copy (≤ `MAX_PAYLOAD`).
    pub payload_bytes: u32,
    pub offsets: KernelOffsets,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid, no implicit padding.
    unsafe impl aya::Pod for super::TargetPattern {}
    unsafe impl aya::Pod for super::AgentConfig {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for crate::event::TrackedProcess {}
    unsafe impl aya::Pod for crate::event::ProcSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &[u8]) -> [u8; COMM_LEN] {
        let mut c = [0u8; COMM_LEN];
        c[..s.len()].copy_from_slice(s);
        c
    }

    #[test]
    fn exact_and_prefix_patterns() {
        let exact = TargetPattern::new(b"kubelet").unwrap();
        assert!(exact.matches(&comm(b"kubelet")));
        assert!(!exact.matches(&comm(b"kubelet2")));
        assert!(!exact.matches(&comm(b"kube")));
        let prefix = TargetPattern::new(b"kubectl*").unwrap();
        assert!(prefix.matches(&comm(b"kubectl.1.32")));
        assert!(prefix.matches(&comm(b"kubectl")));
        assert!(!prefix.matches(&comm(b"kube-apiserver")));
    }

    #[test]
    fn long_names_match_the_cut_comm() {
        let p = TargetPattern::new(b"kube-controller-manager").unwrap();
        assert_eq!(p.len, 15);
        assert!(p.matches(&comm(b"kube-controller")));
        assert!(TargetPattern::new(b"").is_none());
        assert!(TargetPattern::new(b"*").is_none());
    }
}
