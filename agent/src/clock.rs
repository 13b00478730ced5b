//! Kernel timestamps (CLOCK_MONOTONIC, from bpf_ktime_get_ns) → wall-clock time.

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The offset injected with --clock-offset-ms, for clock readings outside
/// events (the loss reports' send time, from which the collector estimates
/// this node's offset).
static INJECTED_NS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// This node's wall clock now, as its events are stamped (injected offset
/// included).
pub fn now_unix_ns() -> u64 {
    let injected = INJECTED_NS.load(std::sync::atomic::Ordering::Relaxed);
    (now_ns(libc::CLOCK_REALTIME) + i128::from(injected)).max(0) as u64
}

#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// realtime − monotonic, plus any offset injected for skew tests.
    offset_ns: i128,
}

impl WallClock {
    /// `inject_ms` shifts every timestamp, to test the collector's skew correction
    /// as if this node's clock were off.
    pub fn new(inject_ms: i64) -> Self {
        INJECTED_NS.store(
            inject_ms.saturating_mul(1_000_000),
            std::sync::atomic::Ordering::Relaxed,
        );
        let offset_ns = now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC)
            + inject_ms as i128 * 1_000_000;
        Self { offset_ns }
    }

    pub fn to_unix_ns(self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_monotonic_to_now() {
        let clock = WallClock::new(0);
        let mono = now_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = now_ns(libc::CLOCK_REALTIME) as u64;
        let diff = clock.to_unix_ns(mono) as i128 - wall as i128;
        assert!(diff.abs() < 50_000_000, "{diff} ns off");
        let shifted = WallClock::new(250);
        let d = shifted.to_unix_ns(mono) as i128 - clock.to_unix_ns(mono) as i128;
        assert!((d - 250_000_000).abs() < 1_000_000, "{d}");
    }
}
