//! Reads the kernel's `EVENTS` ring buffer from its mapped pages.
//!
//! aya's `RingBuf` publishes the consumer position after every record with a
//! sequentially consistent store (an `xchg`): 18 % of the agent's CPU at a million
//! records a second, and a cache line that the kernel's producers on other CPUs read
//! back at every reserve. That ordering serves the kernel's wakeup decision; the
//! programs here never ask for a wakeup (the agent polls), so the position is
//! published with a release store, once per `PUBLISH_EVERY_BYTES` read and at the end
//! of each drain. The layout and protocol are the kernel's (kernel/bpf/ringbuf.c) and
//! libbpf's consumer (`ringbuf_process_ring`).

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::MapData;

/// Set in a record's length while its producer has not committed it yet.
const BUSY_BIT: u32 = 1 << 31;
/// Set in a record's length when its producer discarded it.
const DISCARD_BIT: u32 = 1 << 30;
/// Each record's header: its length (with the bits above), then a page offset.
const HEADER_BYTES: u64 = 8;
/// Read this far before giving the space back to the producers: often enough that a
/// full ring frees up while a long drain runs, rarely enough that the line stays put.
const PUBLISH_EVERY_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the map is not a ring buffer (the agent and its eBPF object disagree)")]
    NotARingBuffer,
    #[error("reading the ring buffer map's size: {0}")]
    Info(#[source] Box<aya::maps::MapError>),
    #[error("the ring buffer's size, {0} bytes, is not a power-of-two number of pages")]
    Size(u32),
    #[error("mapping the ring buffer's pages: {0}")]
    Mmap(#[source] std::io::Error),
}

/// The consumer side of a BPF ring buffer map.
pub struct EventRing {
    /// The map's fd, open for as long as its pages are mapped.
    _map: MapData,
    /// One page, read-write: the consumer position at its start.
    consumer: Mapping,
    /// One page, then the data pages twice over (read-only): the producer position
    /// at its start; a record that wraps past the end reads on into the second copy.
    producer: Mapping,
    page: usize,
    mask: u64,
}

impl EventRing {
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let size = map
            .info()
            .map_err(|e| RingError::Info(Box::new(e)))?
            .max_entries();
        let page = page_size();
        if !size.is_power_of_two() || (size as usize) < page {
            return Err(RingError::Size(size));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size as usize, libc::PROT_READ, page)?;
        Ok(Self {
            _map: map,
            consumer,
            producer,
            page,
            mask: u64::from(size) - 1,
        })
    }

    /// Hands every committed record to `handle`, in order, until the ring is empty or
    /// the next record is not committed yet; returns the bytes read.
    pub fn drain(&mut self, handle: impl FnMut(&[u8])) -> u64 {
        // SAFETY: both mappings live as long as `self`; the positions are 8-byte
        // aligned words at the start of their pages, and the data pages follow the
        // producer's page, mapped twice over (`Mapping::new` in `new`).
        let view = unsafe {
            RingView {
                consumer_pos: &*self.consumer.ptr.as_ptr().cast::<AtomicU64>(),
                producer_pos: &*self.producer.ptr.as_ptr().cast::<AtomicU64>(),
                data: self.producer.ptr.as_ptr().add(self.page),
                mask: self.mask,
            }
        };
        // SAFETY: this is the ring's only consumer (`&mut self`).
        unsafe { view.drain(handle) }
    }
}

/// A ring's positions and data, wherever they are mapped (tests use plain memory).
struct RingView<'a> {
    consumer_pos: &'a AtomicU64,
    producer_pos: &'a AtomicU64,
    /// `mask + 1` bytes, then the same bytes again.
    data: *const u8,
    mask: u64,
}

impl RingView<'_> {
    /// # Safety
    /// `data` must be valid for reads of `2 * (mask + 1)` bytes laid out as the
    /// kernel writes them, and no one else may consume the ring meanwhile.
    unsafe fn drain(&self, mut handle: impl FnMut(&[u8])) -> u64 {
        // Only this consumer writes the position.
        let start = self.consumer_pos.load(Ordering::Relaxed);
        let mut consumed = start;
        let mut published = start;
        'ring: loop {
            // Acquire: the records up to it are visible once it is.
            let produced = self.producer_pos.load(Ordering::Acquire);
            if consumed >= produced {
                break;
            }
            while consumed < produced {
                let at = (consumed & self.mask) as usize;
                // SAFETY: `at` is inside the first copy of the data; the header is
                // 8-byte aligned (every record's size is rounded up to 8).
                let header = unsafe { &*self.data.add(at).cast::<AtomicU32>() };
                // Acquire: the producer's commit (an xchg clearing BUSY_BIT) orders
                // the record's bytes before its length.
                let len = header.load(Ordering::Acquire);
                if len & BUSY_BIT != 0 {
                    break 'ring;
                }
                let body = u64::from(len & !(BUSY_BIT | DISCARD_BIT));
                if len & DISCARD_BIT == 0 {
                    // SAFETY: the record is committed and stays put until the
                    // position passes it; a record that wraps reads on into the
                    // second copy of the data pages.
                    let record = unsafe {
                        std::slice::from_raw_parts(
                            self.data.add(at + HEADER_BYTES as usize),
                            body as usize,
                        )
                    };
                    handle(record);
                }
                consumed += (body + HEADER_BYTES).next_multiple_of(8);
                if consumed - published >= PUBLISH_EVERY_BYTES {
                    // Release: done reading before the producers may write there.
                    self.consumer_pos.store(consumed, Ordering::Release);
                    published = consumed;
                }
            }
        }
        if consumed != published {
            self.consumer_pos.store(consumed, Ordering::Release);
        }
        consumed - start
    }
}

/// A shared mapping of the map's fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> Result<Self, RingError> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| RingError::Mmap(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: a fresh mapping at an address the kernel picks; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Mmap(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Mmap(std::io::Error::other("mmap returned null")))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mappings are plain shared memory; `EventRing::drain` takes `&mut self`.
unsafe impl Send for EventRing {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in plain memory, written the way the kernel's producer writes it; the
    /// data is kept twice over, as the kernel maps it.
    struct FakeRing {
        consumer_pos: AtomicU64,
        producer_pos: AtomicU64,
        /// u64s for the 8-byte alignment of the headers.
        data: Vec<u64>,
        size: u64,
    }

    impl FakeRing {
        fn new(size: u64) -> Self {
            Self {
                consumer_pos: AtomicU64::new(0),
                producer_pos: AtomicU64::new(0),
                data: vec![0; (2 * size / 8) as usize],
                size,
            }
        }

        fn put(&mut self, pos: u64, byte: u8) {
            let bytes: &mut [u8] = as_bytes_mut(&mut self.data);
            let at = (pos & (self.size - 1)) as usize;
            bytes[at] = byte;
            bytes[at + self.size as usize] = byte;
        }

        /// Writes a record with `flags` in its length word; returns where it starts.
        fn push(&mut self, payload: &[u8], flags: u32) -> u64 {
            let start = self.producer_pos.load(Ordering::Relaxed);
            let len = (payload.len() as u32 | flags).to_le_bytes();
            for (i, b) in len.iter().chain(&[0; 4]).chain(payload).enumerate() {
                self.put(start + i as u64, *b);
            }
            let end = start + (payload.len() as u64 + HEADER_BYTES).next_multiple_of(8);
            self.producer_pos.store(end, Ordering::Release);
            start
        }

        /// Commits the record at `start` (clears its busy bit).
        fn commit(&mut self, start: u64) {
            let at = (start & (self.size - 1)) as usize;
            let bytes: &mut [u8] = as_bytes_mut(&mut self.data);
            bytes[at + 3] &= 0x7f;
            bytes[at + 3 + self.size as usize] &= 0x7f;
        }

        fn view(&self) -> RingView<'_> {
            RingView {
                consumer_pos: &self.consumer_pos,
                producer_pos: &self.producer_pos,
                data: self.data.as_ptr().cast(),
                mask: self.size - 1,
            }
        }

        fn drain(&self) -> (Vec<Vec<u8>>, u64) {
            let mut got = Vec::new();
            // SAFETY: `data` holds the ring twice over, written by `push`.
            let read = unsafe { self.view().drain(|r| got.push(r.to_vec())) };
            (got, read)
        }
    }

    fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
        // SAFETY: u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) }
    }

    #[test]
    fn records_come_in_order_and_discarded_ones_are_skipped() {
        let mut ring = FakeRing::new(4096);
        ring.push(b"a", 0);
        ring.push(b"bcdefghij", 0);
        ring.push(b"zz", DISCARD_BIT);
        ring.push(b"k", 0);
        let (got, read) = ring.drain();
        assert_eq!(got, [&b"a"[..], b"bcdefghij", b"k"]);
        assert_eq!(read, 16 + 24 + 16 + 16);
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), 72);
        assert_eq!(ring.drain(), (vec![], 0));
    }

    #[test]
    fn an_uncommitted_record_stops_the_drain_until_it_is_committed() {
        let mut ring = FakeRing::new(4096);
        ring.push(b"first", 0);
        let busy = ring.push(b"second", BUSY_BIT);
        ring.push(b"third", 0);
        assert_eq!(ring.drain(), (vec![b"first".to_vec()], 16));
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), busy);
        ring.commit(busy);
        assert_eq!(
            ring.drain(),
            (vec![b"second".to_vec(), b"third".to_vec()], 32)
        );
    }

    #[test]
    fn a_record_that_wraps_past_the_end_is_read_whole() {
        let mut ring = FakeRing::new(64);
        ring.push(&[1; 40], 0);
        assert_eq!(ring.drain().1, 48);
        // Starts at 48 of 64: its header and 8 bytes fit, the rest wraps.
        let wrapping: Vec<u8> = (0..40).collect();
        ring.push(&wrapping, 0);
        assert_eq!(ring.drain(), (vec![wrapping], 48));
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), 96);
    }

    #[test]
    fn space_is_given_back_during_a_long_drain_not_only_at_its_end() {
        let mut ring = FakeRing::new(1 << 20);
        for i in 0..5_000u32 {
            ring.push(&i.to_le_bytes().repeat(25), 0);
        }
        let produced = ring.producer_pos.load(Ordering::Relaxed);
        let view = ring.view();
        let (mut records, mut seen) = (0u64, Vec::new());
        // SAFETY: `data` holds the ring twice over, written by `push`.
        let read = unsafe {
            view.drain(|r| {
                assert_eq!(r, records.to_le_bytes()[..4].repeat(25));
                // Where the producers see the consumer, at this record's start.
                seen.push((records * 112, ring.consumer_pos.load(Ordering::Relaxed)));
                records += 1;
            })
        };
        assert_eq!((records, read), (5_000, produced));
        assert_eq!(ring.consumer_pos.load(Ordering::Relaxed), produced);
        for (at, published) in seen {
            assert!(
                published <= at,
                "published {published} past the record at {at}"
            );
            assert!(
                at - published < PUBLISH_EVERY_BYTES + 112,
                "at {at} the producers still saw {published}"
            );
        }
    }
}
