//! Hop and flow ids: a prefix and 16 hex digits.

/// splitmix64 over a counter: distinct ids, spread out, no randomness needed.
#[derive(Clone, Debug)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// `seed` should differ between collector runs (e.g. start time), so ids of
    /// a restarted collector do not repeat the earlier ones.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_id(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}", self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape_and_differ() {
        let mut ids = IdGen::new(42);
        let a = ids.next_id("h-");
        let b = ids.next_id("h-");
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("h-"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
