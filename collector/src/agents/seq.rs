//! Per-agent sequence bookkeeping: duplicates, gaps, what is contiguous.

use ktrail_proto::v1::AgentStatus;

/// What to do with an incoming event's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// Already held (resent after a reconnect): ignore.
    Duplicate,
    /// The next one expected.
    Next,
    /// Later than expected: `missing` events before it never arrived. Kept.
    Gap { missing: u64 },
}

pub fn classify_seq(contiguous_seq: u64, seq: u64) -> SeqVerdict {
    if seq <= contiguous_seq {
        SeqVerdict::Duplicate
    } else if seq == contiguous_seq + 1 {
        SeqVerdict::Next
    } else {
        SeqVerdict::Gap {
            missing: seq - contiguous_seq - 1,
        }
    }
}

/// Applies one event's sequence number to the agent's counters. After a gap
/// the new number becomes the contiguous point: the missing events are lost
/// (the agent only resends what was never acked, and everything before was).
pub fn apply_seq(status: &mut AgentStatus, gaps: &mut u64, seq: u64) -> SeqVerdict {
    let verdict = classify_seq(status.contiguous_seq, seq);
    match verdict {
        SeqVerdict::Duplicate => status.duplicates_ignored += 1,
        SeqVerdict::Next => {
            status.contiguous_seq = seq;
            status.events_received += 1;
        }
        SeqVerdict::Gap { .. } => {
            *gaps += 1;
            status.contiguous_seq = seq;
            status.events_received += 1;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_next_and_gaps() {
        let mut status = AgentStatus::default();
        let mut gaps = 0;
        assert_eq!(apply_seq(&mut status, &mut gaps, 1), SeqVerdict::Next);
        assert_eq!(apply_seq(&mut status, &mut gaps, 2), SeqVerdict::Next);
        assert_eq!(apply_seq(&mut status, &mut gaps, 2), SeqVerdict::Duplicate);
        assert_eq!(apply_seq(&mut status, &mut gaps, 1), SeqVerdict::Duplicate);
        assert_eq!(
            apply_seq(&mut status, &mut gaps, 5),
            SeqVerdict::Gap { missing: 2 }
        );
        assert_eq!(apply_seq(&mut status, &mut gaps, 6), SeqVerdict::Next);
        assert_eq!(status.contiguous_seq, 6);
        assert_eq!(status.events_received, 4);
        assert_eq!(status.duplicates_ignored, 2);
        assert_eq!(gaps, 1);
    }
}
