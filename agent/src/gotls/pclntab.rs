//! Go's function table (`runtime.pcHeader` + `functab`): function names and entry
//! addresses, readable in stripped binaries. Layouts: Go 1.16–1.17 (magic 0xfffffffa),
//! 1.18–1.19 (0xfffffff0), 1.20+ (0xfffffff1).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Go116,
    Go118,
    Go120,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("no Go function table (pclntab) magic found")]
    NoMagic,
    #[error("pclntab header is truncated or inconsistent")]
    Truncated,
    #[error("pointer size {0} is not supported (only 64-bit binaries)")]
    PointerSize(u8),
}

pub struct Pclntab<'a> {
    data: &'a [u8],
    pub layout: Layout,
    nfunc: usize,
    text_start: u64,
    funcname_off: usize,
    pcln_off: usize,
}

/// A function's address range (virtual addresses, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncRange {
    pub entry: u64,
    pub end: u64,
}

fn rd_u32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn rd_u64(d: &[u8], at: usize) -> Option<u64> {
    let b = d.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

impl<'a> Pclntab<'a> {
    pub fn layout_of(magic: u32) -> Option<Layout> {
        match magic {
            0xffff_fffa => Some(Layout::Go116),
            0xffff_fff0 => Some(Layout::Go118),
            0xffff_fff1 => Some(Layout::Go120),
            _ => None,
        }
    }

    /// Parses a table that starts at `data[0]`. `text_addr` is the address of the
    /// `.text` section (`runtime.text`): since Go 1.18 function entries are offsets
    /// from it, and since Go 1.26 the table no longer stores it (it needed a
    /// relocation), so — as Go's own `debug/gosym` does — the caller's value is used.
    pub fn parse(data: &'a [u8], text_addr: u64) -> Result<Self, PclntabError> {
        let magic = rd_u32(data, 0).ok_or(PclntabError::Truncated)?;
        let layout = Self::layout_of(magic).ok_or(PclntabError::NoMagic)?;
        let ptr_size = *data.get(7).ok_or(PclntabError::Truncated)?;
        if ptr_size != 8 {
            return Err(PclntabError::PointerSize(ptr_size));
        }
        let word = |i: usize| rd_u64(data, 8 + i * 8).ok_or(PclntabError::Truncated);
        let nfunc = word(0)? as usize;
        let (text_start, funcname_off, pcln_off) = match layout {
            Layout::Go116 => (0, word(2)?, word(6)?),
            Layout::Go118 | Layout::Go120 => (text_addr, word(3)?, word(7)?),
        };
        let table = Self {
            data,
            layout,
            nfunc,
            text_start,
            funcname_off: funcname_off as usize,
            pcln_off: pcln_off as usize,
        };
        if table.funcname_off >= data.len() || table.pcln_off >= data.len() || nfunc == 0 {
            return Err(PclntabError::Truncated);
        }
        Ok(table)
    }

    /// Finds the table inside a larger blob (PIE builds keep it in .data.rel.ro).
    pub fn find(blob: &'a [u8], text_addr: u64) -> Result<Self, PclntabError> {
        let mut at = 0;
        while at + 8 <= blob.len() {
            let magic = rd_u32(blob, at).unwrap_or(0);
            if Self::layout_of(magic).is_some()
                && blob[at + 4] == 0
                && blob[at + 5] == 0
                && matches!(blob[at + 6], 1 | 2 | 4)
                && blob[at + 7] == 8
            {
                if let Ok(t) = Self::parse(&blob[at..], text_addr) {
                    return Ok(t);
                }
            }
            at += 4;
        }
        Err(PclntabError::NoMagic)
    }

    /// (entry, offset of the _func record) of functab entry `i` (i ≤ nfunc: the last
    /// entry is the end-of-text sentinel).
    fn functab(&self, i: usize) -> Option<(u64, usize)> {
        match self.layout {
            Layout::Go116 => {
                let at = self.pcln_off + i * 16;
                Some((rd_u64(self.data, at)?, rd_u64(self.data, at + 8)? as usize))
            }
            Layout::Go118 | Layout::Go120 => {
                let at = self.pcln_off + i * 8;
                let entry = self.text_start + u64::from(rd_u32(self.data, at)?);
                Some((entry, rd_u32(self.data, at + 4)? as usize))
            }
        }
    }

    fn name_at(&self, func_off: usize) -> Option<&'a str> {
        let rec = self.pcln_off + func_off;
        let name_field = match self.layout {
            Layout::Go116 => rec + 8,
            Layout::Go118 | Layout::Go120 => rec + 4,
        };
        let name_off = rd_u32(self.data, name_field)? as usize;
        let start = self.funcname_off + name_off;
        let rest = self.data.get(start..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Every function name with its range, in table order.
    pub fn functions(&self) -> impl Iterator<Item = (&'a str, FuncRange)> + '_ {
        (0..self.nfunc).filter_map(move |i| {
            let (entry, func_off) = self.functab(i)?;
            let (end, _) = self.functab(i + 1)?;
            Some((self.name_at(func_off)?, FuncRange { entry, end }))
        })
    }

    pub fn lookup(&self, name: &str) -> Option<FuncRange> {
        self.functions().find(|(n, _)| *n == name).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            Pclntab::parse(&[0u8; 64], 0).err(),
            Some(PclntabError::NoMagic)
        );
        assert_eq!(
            Pclntab::find(&[0xffu8; 64], 0).err(),
            Some(PclntabError::NoMagic)
        );
        let mut hdr = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 4];
        hdr.resize(80, 0);
        assert_eq!(
            Pclntab::parse(&hdr, 0).err(),
            Some(PclntabError::PointerSize(4))
        );
        assert_eq!(
            Pclntab::parse(&hdr[..6], 0).err(),
            Some(PclntabError::Truncated)
        );
    }
}
