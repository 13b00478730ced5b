//! Return points of a function, found by decoding its x86-64 instructions (a 0xC3
//! byte inside another instruction is not a return; only a decoded RET is).

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

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
}
