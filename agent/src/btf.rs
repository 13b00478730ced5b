//! Resolves the kernel-structure offsets the eBPF programs need from the running
//! kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! The Rust BPF target has no CO-RE relocations, so the agent does the relocation
//! itself: it reads each member's offset here and hands them to the programs in the
//! CONFIG map. The parser reads only what it needs: type records and struct members.

use std::collections::HashMap;

use ktrail_agent_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} — the kernel needs CONFIG_DEBUG_INFO_BTF")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not BTF (bad magic or header)")]
    BadHeader(String),
    #[error("BTF is truncated at type {0}")]
    Truncated(u32),
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// The referenced type, for typedef/const/volatile/restrict/type tags.
    ref_type: u32,
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id - 1.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX_BTF).map_err(|source| BtfError::Read {
            path: VMLINUX_BTF.into(),
            source,
        })?;
        Self::parse(&data, VMLINUX_BTF)
    }

    pub fn parse(data: &[u8], origin: &str) -> Result<Self, BtfError> {
        let bad = || BtfError::BadHeader(origin.to_string());
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(bad());
        }
        let hdr_len = u32_at(data, 4).ok_or_else(bad)? as usize;
        let type_off = u32_at(data, 8).ok_or_else(bad)? as usize;
        let type_len = u32_at(data, 12).ok_or_else(bad)? as usize;
        let str_off = u32_at(data, 16).ok_or_else(bad)? as usize;
        let str_len = u32_at(data, 20).ok_or_else(bad)? as usize;
        let types_raw = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(bad)?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(bad)?
            .to_vec();

        let mut types = Vec::new();
        let mut at = 0usize;
        while at < types_raw.len() {
            let id = types.len() as u32 + 1;
            let (name_off, info, size_or_type) = match (
                u32_at(types_raw, at),
                u32_at(types_raw, at + 4),
                u32_at(types_raw, at + 8),
            ) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => return Err(BtfError::Truncated(id)),
            };
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let (Some(name_off), Some(type_id), Some(offset)) = (
                            u32_at(types_raw, m),
                            u32_at(types_raw, m + 4),
                            u32_at(types_raw, m + 8),
                        ) else {
                            return Err(BtfError::Truncated(id));
                        };
                        let bit_offset = if kind_flag {
                            offset & 0x00ff_ffff
                        } else {
                            offset
                        };
                        members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::UnknownKind { id, kind: other }),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                ref_type: size_or_type,
                members,
            });
        }

        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (i, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name_off != 0 {
                by_name
                    .entry(btf.name(t.name_off).to_string())
                    .or_insert(i as u32 + 1);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.ref_type
                }
                _ => break,
            }
        }
        id
    }

    /// Finds `member` in the aggregate `id`, looking inside anonymous structs/unions.
    fn find_member(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        let t = self.ty(id)?;
        for m in &t.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in &t.members {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id);
                if let Some((off, ty)) = self.find_member(inner, member) {
                    return Some((m.bit_offset + off, ty));
                }
            }
        }
        None
    }

    /// Byte offset of a dotted member path, e.g. `offset_of("net", "ns.inum")`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (off, ty) = self
                .find_member(id, part)
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: path.into(),
                })?;
            bits += off;
            id = self.resolve(ty);
        }
        Ok(bits / 8)
    }

    /// Every offset the programs use.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_nsproxy: self.offset_of("task_struct", "nsproxy")?,
            nsproxy_net_ns: self.offset_of("nsproxy", "net_ns")?,
            net_inum: self.offset_of("net", "ns.inum")?,
            task_files: self.offset_of("task_struct", "files")?,
            files_fdt: self.offset_of("files_struct", "fdt")?,
            fdtable_fd: self.offset_of("fdtable", "fd")?,
            fdtable_max_fds: self.offset_of("fdtable", "max_fds")?,
            file_private_data: self.offset_of("file", "private_data")?,
            file_f_inode: self.offset_of("file", "f_inode")?,
            inode_i_mode: self.offset_of("inode", "i_mode")?,
            inode_i_ino: self.offset_of("inode", "i_ino")?,
            socket_sk: self.offset_of("socket", "sk")?,
            skc_family: self.offset_of("sock", "__sk_common.skc_family")?,
            skc_daddr: self.offset_of("sock", "__sk_common.skc_daddr")?,
            skc_rcv_saddr: self.offset_of("sock", "__sk_common.skc_rcv_saddr")?,
            skc_dport: self.offset_of("sock", "__sk_common.skc_dport")?,
            skc_num: self.offset_of("sock", "__sk_common.skc_num")?,
            skc_v6_daddr: self.offset_of("sock", "__sk_common.skc_v6_daddr")?,
            skc_v6_rcv_saddr: self.offset_of("sock", "__sk_common.skc_v6_rcv_saddr")?,
            sk_socket: self.offset_of("sock", "sk_socket")?,
            sk_protocol: self.offset_of("sock", "sk_protocol")?,
            sk_type: self.offset_of("sock", "sk_type")?,
            unix_peer: self.offset_of("unix_sock", "peer")?,
            socket_alloc_vfs_inode: self.offset_of("socket_alloc", "vfs_inode")?,
            task_comm: self.offset_of("task_struct", "comm")?,
            files_fdtab: self.offset_of("files_struct", "fdtab")?,
            task_pid: self.offset_of("task_struct", "pid")?,
            task_tgid: self.offset_of("task_struct", "tgid")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_btf() {
        assert!(matches!(
            Btf::parse(b"not btf at all, really not", "x"),
            Err(BtfError::BadHeader(_))
        ));
    }

    /// Reads this machine's kernel BTF; every kernel ktrail supports has it.
    #[test]
    fn resolves_offsets_from_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
        let off = btf.kernel_offsets().expect("all offsets");
        // Stable facts of the layout: the sock_common sits at the start of sock,
        // daddr precedes rcv_saddr in skc_addrpair, and dport precedes num.
        assert_eq!(off.skc_daddr, 0);
        assert_eq!(off.skc_rcv_saddr, 4);
        assert_eq!(off.skc_num, off.skc_dport + 2);
        assert!(off.task_nsproxy > 0 && off.task_files > 0);
        // One span read (agent-ebpf/src/kernel.rs `Span`, 128 bytes) covers fdt and the
        // embedded fdtab; if not, each field is read alone.
        assert!(off.task_comm > 0);
        assert!(off.files_fdt < off.files_fdtab);
        assert!(off.files_fdtab + off.fdtable_fd + 8 - off.files_fdt <= 128);
        assert!(btf.offset_of("sock", "no_such_member").is_err());
        assert!(btf.offset_of("no_such_struct", "x").is_err());
    }
}
