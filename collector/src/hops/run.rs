//! A run: consecutive data transfers in one direction on one side of a connection.

use ktrail_proto::v1::EventRef;
use ktrail_protocols::Message;

/// Bytes kept of a request or a response.
pub const CAPTURE_CAP: usize = 4096;
/// Event references kept per run; a long stream keeps its first ones.
pub const MAX_REFS_PER_RUN: usize = 512;
/// Decoded messages kept per run (a watch burst has one per event); a long
/// stream keeps its first ones and counts the rest.
pub const MAX_MESSAGES_PER_RUN: usize = 64;

/// Where an event came from, borrowed: made into an [`EventRef`] (two strings) only
/// where one is kept. A long stream keeps the first [`MAX_REFS_PER_RUN`] of its
/// events, and allocating the rest's references only to drop them was two
/// allocations and frees per event at high rates.
#[derive(Clone, Copy, Debug)]
pub struct EventSource<'a> {
    pub node: &'a str,
    pub agent_id: &'a str,
    pub seq: u64,
}

impl EventSource<'_> {
    pub fn to_ref(self) -> EventRef {
        EventRef {
            node: self.node.to_owned(),
            agent_id: self.agent_id.to_owned(),
            seq: self.seq,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Send,
    Recv,
}

/// One data transfer as the assembler needs it.
#[derive(Clone, Debug, Default)]
pub struct Transfer<'a> {
    pub timestamp_ns: u64,
    pub duration_ns: u64,
    /// Bytes moved (the syscall's positive return value).
    pub bytes: u64,
    pub data: &'a [u8],
    pub truncated: bool,
}

/// When the data of a transfer moved. Syscall timestamps are taken at entry:
/// right for a send, but a receive may block long before its data arrives
/// (a keep-alive server waiting for the next request), so for a receive it is
/// the syscall's end.
pub fn data_time(dir: Direction, t: &Transfer<'_>) -> u64 {
    match dir {
        Direction::Send => t.timestamp_ns,
        Direction::Recv => t.timestamp_ns.saturating_add(t.duration_ns),
    }
}

#[derive(Clone, Debug)]
pub struct Run {
    pub dir: Direction,
    /// When the run's first data moved (see [`data_time`]).
    pub first_ts: u64,
    /// Latest `timestamp + duration` of the run's transfers.
    pub last_end: u64,
    pub bytes: u64,
    /// The first bytes moved, contiguous, at most [`CAPTURE_CAP`].
    pub data: Vec<u8>,
    /// False once a transfer was captured only in part: later bytes would not
    /// follow on from what we hold.
    capture_open: bool,
    pub refs: Vec<EventRef>,
    pub refs_dropped: u64,
    /// What the side's decoder made of the run's bytes.
    pub messages: Vec<Message>,
    pub messages_dropped: u64,
}

impl Run {
    pub fn new(dir: Direction, t: &Transfer<'_>, r: &EventSource<'_>) -> Self {
        let mut run = Self {
            dir,
            first_ts: data_time(dir, t),
            last_end: 0,
            bytes: 0,
            data: Vec::new(),
            capture_open: true,
            refs: Vec::new(),
            refs_dropped: 0,
            messages: Vec::new(),
            messages_dropped: 0,
        };
        run.add(t, r);
        run
    }

    /// Forgets the captured bytes (not the counts): what follows replaces them,
    /// e.g. TLS plaintext after the encrypted handshake.
    pub fn restart_capture(&mut self) {
        self.data.clear();
        self.capture_open = true;
    }

    pub fn add_messages(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if self.messages.len() < MAX_MESSAGES_PER_RUN {
                self.messages.push(m);
            } else {
                self.messages_dropped += 1;
            }
        }
    }

    pub fn add(&mut self, t: &Transfer<'_>, r: &EventSource<'_>) {
        self.first_ts = self.first_ts.min(data_time(self.dir, t));
        self.last_end = self
            .last_end
            .max(t.timestamp_ns.saturating_add(t.duration_ns));
        self.bytes = self.bytes.saturating_add(t.bytes);
        if self.capture_open {
            let moved = usize::try_from(t.bytes).unwrap_or(usize::MAX);
            let have = t.data.len().min(moved);
            let room = CAPTURE_CAP - self.data.len();
            self.data.extend_from_slice(&t.data[..have.min(room)]);
            if t.truncated || have < moved || self.data.len() >= CAPTURE_CAP {
                self.capture_open = false;
            }
        }
        if self.refs.len() < MAX_REFS_PER_RUN {
            self.refs.push(r.to_ref());
        } else {
            self.refs_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: EventSource<'static> = EventSource {
        node: "n",
        agent_id: "a",
        seq: 1,
    };

    fn t(ts: u64, bytes: u64, data: &[u8]) -> Transfer<'_> {
        Transfer {
            timestamp_ns: ts,
            duration_ns: 10,
            bytes,
            data,
            truncated: false,
        }
    }

    #[test]
    fn captures_contiguous_bytes_until_a_partial_capture() {
        let mut run = Run::new(Direction::Send, &t(100, 3, b"abc"), &SOURCE);
        run.add(&t(200, 5, b"de"), &SOURCE);
        // "de" was only part of the 5 bytes sent: nothing after it is contiguous.
        run.add(&t(300, 2, b"zz"), &SOURCE);
        assert_eq!(run.data, b"abcde");
        assert_eq!(run.bytes, 10);
        assert_eq!(run.first_ts, 100);
        assert_eq!(run.last_end, 310);
        assert_eq!(run.refs.len(), 3);
    }

    #[test]
    fn a_receive_counts_from_when_its_data_arrived() {
        let blocking = Transfer {
            timestamp_ns: 1_000,
            duration_ns: 50_000,
            bytes: 1,
            data: b"x",
            truncated: false,
        };
        let run = Run::new(Direction::Recv, &blocking, &SOURCE);
        assert_eq!((run.first_ts, run.last_end), (51_000, 51_000));
    }

    #[test]
    fn capture_is_capped() {
        let big = vec![b'x'; 3000];
        let mut run = Run::new(Direction::Recv, &t(1, 3000, &big), &SOURCE);
        run.add(&t(2, 3000, &big), &SOURCE);
        assert_eq!(run.data.len(), CAPTURE_CAP);
        assert_eq!(run.bytes, 6000);
    }
}
