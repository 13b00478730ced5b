//! The text format of captured traffic used by the test vectors and by
//! anyone replaying captures: one chunk per line, `<dir> <len> <hex>`, where
//! dir is `>` (client to server) or `<` (server to client), `len` the size of
//! the read/write and `hex` the bytes captured; `#` starts a comment.

use crate::message::Direction;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("line {line}: {what}")]
    Bad { line: usize, what: &'static str },
}

/// One captured read or write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub dir: Direction,
    pub total_len: u64,
    pub data: Vec<u8>,
}

pub fn parse(text: &str) -> Result<Vec<Chunk>, CaptureError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what| CaptureError::Bad { line: i + 1, what };
        let mut it = line.split_ascii_whitespace();
        let dir = match it.next() {
            Some(">") => Direction::ClientToServer,
            Some("<") => Direction::ServerToClient,
            _ => return Err(bad("direction is not > or <")),
        };
        let total_len: u64 = it
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("length"))?;
        let hex = it.next().unwrap_or("");
        if hex.len() % 2 != 0 {
            return Err(bad("odd hex length"));
        }
        let data: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|j| {
                hex.get(j..j + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        let data = data.ok_or_else(|| bad("hex"))?;
        out.push(Chunk {
            dir,
            total_len,
            data,
        });
    }
    Ok(out)
}
