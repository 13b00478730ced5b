//! A generic protobuf wire-format reader: fields by number, no schema, no
//! allocation. Every length read from the input is checked against the input.

/// One field value as found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    /// A length-delimited field cut short by the end of the buffer (only
    /// from `Fields::lenient`): usable to descend into a nested message,
    /// never as a complete string.
    Partial(&'a [u8]),
}

impl<'a> Value<'a> {
    /// A complete length-delimited field.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// A length-delimited field, complete or cut: for nested messages.
    pub fn msg(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) | Value::Partial(b) => Some(b),
            _ => None,
        }
    }
    pub fn is_partial(&self) -> bool {
        matches!(self, Value::Partial(_))
    }
    pub fn varint(&self) -> Option<u64> {
        match self {
            Value::Varint(v) => Some(*v),
            _ => None,
        }
    }
}

/// Iterator over the top-level fields of one message. Stops at the first
/// malformed field and remembers that it did (`truncated()`): a prefix of a
/// message decodes to the fields that were complete.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    bad: bool,
    lenient: bool,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            bad: false,
            lenient: false,
        }
    }
    /// Like `new`, but a length-delimited field cut short by the end of the
    /// buffer is returned with the bytes that are there (and `truncated()`
    /// becomes true): decoding a prefix of a message yields the prefix of
    /// its last field too.
    pub fn lenient(buf: &'a [u8]) -> Self {
        Fields {
            lenient: true,
            ..Fields::new(buf)
        }
    }
    /// True if iteration stopped on bytes that were not a complete field.
    pub fn truncated(&self) -> bool {
        self.bad
    }
}

pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.bad || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.read_one();
        if r.is_none() {
            self.bad = true;
        }
        r
    }
}

impl<'a> Fields<'a> {
    fn read_one(&mut self) -> Option<(u32, Value<'a>)> {
        let key = read_varint(self.buf, &mut self.pos)?;
        let field = u32::try_from(key >> 3).ok()?;
        if field == 0 {
            return None;
        }
        let v = match key & 7 {
            0 => Value::Varint(read_varint(self.buf, &mut self.pos)?),
            1 => {
                let b = self.buf.get(self.pos..self.pos.checked_add(8)?)?;
                self.pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(read_varint(self.buf, &mut self.pos)?).ok()?;
                let end = self.pos.checked_add(len)?;
                match self.buf.get(self.pos..end) {
                    Some(b) => {
                        self.pos = end;
                        Value::Bytes(b)
                    }
                    None if self.lenient => {
                        let b = self.buf.get(self.pos..)?;
                        self.pos = self.buf.len();
                        self.bad = true;
                        Value::Partial(b)
                    }
                    None => return None,
                }
            }
            5 => {
                let b = self.buf.get(self.pos..self.pos.checked_add(4)?)?;
                self.pos += 4;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            _ => return None,
        };
        Some((field, v))
    }
}

/// First length-delimited field `n` of `msg`.
pub fn get_bytes(msg: &[u8], n: u32) -> Option<&[u8]> {
    Fields::new(msg)
        .find(|(f, _)| *f == n)
        .and_then(|(_, v)| v.bytes())
}

/// First length-delimited field `n` as (lossy) UTF-8, bounded.
pub fn get_str(msg: &[u8], n: u32) -> Option<String> {
    get_bytes(msg, n).map(crate::util::text)
}

/// First varint field `n`.
pub fn get_varint(msg: &[u8], n: u32) -> Option<u64> {
    Fields::new(msg)
        .find(|(f, _)| *f == n)
        .and_then(|(_, v)| v.varint())
}

/// All length-delimited fields `n`, at most `max`.
pub fn all_bytes(msg: &[u8], n: u32, max: usize) -> Vec<&[u8]> {
    Fields::new(msg)
        .filter(|(f, _)| *f == n)
        .filter_map(|(_, v)| v.bytes())
        .take(max)
        .collect()
}

/// True if `buf` parses completely as protobuf fields (a plausibility check).
pub fn parses_fully(buf: &[u8]) -> bool {
    let mut it = Fields::new(buf);
    for _ in it.by_ref() {}
    !it.truncated()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_stops_on_truncation() {
        // field 1 = "ab", field 2 = varint 300, then a truncated field 3
        let buf = [0x0a, 2, b'a', b'b', 0x10, 0xac, 0x02, 0x1a, 5, b'x'];
        let mut it = Fields::new(&buf);
        assert_eq!(it.next(), Some((1, Value::Bytes(b"ab"))));
        assert_eq!(it.next(), Some((2, Value::Varint(300))));
        assert_eq!(it.next(), None);
        assert!(it.truncated());
        assert_eq!(get_str(&buf, 1).as_deref(), Some("ab"));
        assert!(!parses_fully(&buf));
    }

    #[test]
    fn huge_lengths_are_rejected() {
        let buf = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(Fields::new(&buf).count(), 0);
    }
}
