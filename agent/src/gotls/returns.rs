//! Return points of a function, found by decoding its x86-64 instructions (a 0xC3
//! byte inside another instruction is not a return; only a decoded RET is).

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// Offsets (from the function's start) of every RET instruction in `code`.
pub fn ret_offsets(code: &[u8], entry_vaddr: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, entry_vaddr, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.is_invalid() {
            continue;
        }
        if ins.mnemonic() == Mnemonic::Ret {
            out.push(ins.ip() - entry_vaddr);
        }
    }
    out
}

/// Offset of the first instruction after Go's stack-growth check
/// (`cmp rsp|r12, [r14+0x10]; jbe morestack`), or 0 when there is none.
///
/// When the stack must grow, `morestack` jumps back to the entry, so a probe at the
/// entry can fire twice for one call; after the check it fires once, and the argument
/// registers are still untouched there.
pub fn after_stack_check(code: &[u8], entry_vaddr: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, entry_vaddr, DecoderOptions::NONE);
    let mut saw_check = false;
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        let ins = decoder.decode();
        if saw_check {
            return if ins.mnemonic() == Mnemonic::Jbe {
                ins.next_ip() - entry_vaddr
            } else {
                0
            };
        }
        saw_check = ins.mnemonic() == Mnemonic::Cmp
            && (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory)
            && ins.memory_base() == Register::R14;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_real_rets_only() {
        // mov eax, 0xc3c3c3c3 ; ret ; nop ; ret
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x90, 0xc3];
        assert_eq!(ret_offsets(&code, 0x401000), vec![5, 7]);
        assert!(ret_offsets(&[], 0).is_empty());
    }

    #[test]
    fn skips_the_stack_growth_check() {
        // lea r12,[rsp-0x50]; cmp r12,[r14+0x10]; jbe +0x793; push rbp
        let big_frame = [
            0x4c, 0x8d, 0x64, 0x24, 0xb0, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x93, 0x07, 0x00,
            0x00, 0x55,
        ];
        assert_eq!(after_stack_check(&big_frame, 0x6e5720), 15);
        // cmp rsp,[r14+0x10]; jbe +0x40; push rbp
        let small_frame = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(after_stack_check(&small_frame, 0x1000), 6);
        // No check (a leaf function): probe the entry.
        assert_eq!(
            after_stack_check(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0x1000),
            0
        );
    }
}
