//! The Go version a binary was built with, from its `.go.buildinfo` blob.

/// `\xff Go buildinf:`
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Since Go 1.18 the version and module strings are inline, varint-length-prefixed.
const FLAG_INLINE_STRINGS: u8 = 0x2;

/// Returns the version string (e.g. `go1.22.5`) when the blob uses the inline layout.
/// Older layouts (pointers to strings) return `None`; callers then say "before go1.18".
pub fn go_version(blob: &[u8]) -> Option<String> {
    let start = blob.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let b = blob.get(start..)?;
    let flags = *b.get(15)?;
    if flags & FLAG_INLINE_STRINGS == 0 {
        return None;
    }
    let (len, used) = uvarint(b.get(32..)?)?;
    let s = b.get(32 + used..32 + used + len as usize)?;
    String::from_utf8(s.to_vec()).ok()
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `go1.21.3` → (1, 21)
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix("go")?;
    let mut parts = v.split(['.', '-', ' ']);
    let number = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((number(parts.next()?)?, number(parts.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_version() {
        let mut blob = vec![0u8; 8];
        blob.extend_from_slice(MAGIC);
        blob.push(8); // pointer size
        blob.push(FLAG_INLINE_STRINGS);
        blob.resize(8 + 32, 0);
        blob.push(8);
        blob.extend_from_slice(b"go1.22.5");
        assert_eq!(go_version(&blob).as_deref(), Some("go1.22.5"));
        assert_eq!(major_minor("go1.22.5"), Some((1, 22)));
        assert_eq!(major_minor("go1.24rc1"), Some((1, 24)));
        assert_eq!(major_minor("devel"), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(go_version(b"nothing here"), None);
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, 2]);
        assert_eq!(go_version(&blob), None, "truncated");
    }
}
