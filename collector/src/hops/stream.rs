//! Per-stream hops of multiplexed connections (HTTP/2, gRPC): one hop per
//! stream (request → response), and one per watch event delivered.
//!
//! Each side turns its decoded messages into [`StreamItem`]s, identified by
//! the stream id and their place in the stream, so the client's and the
//! server's copy of the same item pair up across nodes.

use std::collections::{BTreeMap, VecDeque};

use ktrail_proto::v1::EventRef;
use ktrail_protocols::{Message, Part};

use super::decode::is_watch_event;
use super::run::EventSource;

/// Streams assembled at once per side; the least recently active goes first.
pub const MAX_STREAMS: usize = 256;
/// Items waiting for pairing per side; the oldest goes first.
pub const MAX_READY: usize = 1024;
/// Event references kept per stream item.
pub const MAX_STREAM_REFS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    /// The request and its response (or head of a streaming response).
    Main,
    /// One watch event (a Kubernetes watch event, an etcd watch response).
    WatchEvent,
    /// Another message of a streaming call (either direction).
    StreamMessage,
    /// The end of a stream whose main hop already went out.
    StreamEnd,
}

impl ItemKind {
    pub fn hop_kind(self) -> &'static str {
        match self {
            Self::Main => "request/response",
            Self::WatchEvent => "watch-event",
            Self::StreamMessage => "stream-message",
            Self::StreamEnd => "stream-end",
        }
    }
}

/// Identity of an item, the same on both ends of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId {
    pub stream_id: u32,
    pub kind: ItemKind,
    /// Index among the stream's items of this kind.
    pub index: u32,
}

#[derive(Clone, Debug)]
pub struct StreamItem {
    pub id: ItemId,
    pub request: Option<Message>,
    pub response: Option<Message>,
    pub refs: Vec<EventRef>,
    /// Collector clock when it became ready.
    pub ready_at: u64,
    /// Set once ready (see [`StreamItem::content_print`]).
    pub print: Option<ItemPrint>,
}

impl StreamItem {
    /// When its first message moved (event time), if it has one.
    pub fn event_ts(&self) -> Option<u64> {
        self.request
            .as_ref()
            .or(self.response.as_ref())
            .map(|m| m.ts_first)
    }

    /// What tells this message of a long-lived stream apart from its neighbours,
    /// on either end. Streams' items are numbered per end, and the two numberings
    /// drift apart when one end misses a message (a read cut by the capture limit,
    /// probes attached at different moments), so copies are paired by this.
    fn content_print(&self) -> Option<ItemPrint> {
        if !matches!(self.id.kind, ItemKind::WatchEvent | ItemKind::StreamMessage) {
            return None;
        }
        let m = self.response.as_ref().or(self.request.as_ref())?;
        let version = m
            .objects
            .iter()
            .find_map(|o| o.resource_version.as_deref())
            .map(|v| {
                use std::hash::BuildHasher;
                foldhash::fast::FixedState::with_seed(0).hash_one(v)
            });
        Some(ItemPrint {
            stream_id: self.id.stream_id,
            kind: self.id.kind,
            body_len: m.body_len,
            version,
        })
    }
}

/// A stream message's identity by content (see [`StreamItem::content_print`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemPrint {
    pub stream_id: u32,
    pub kind: ItemKind,
    /// From the frames' headers: known even when the body was not captured.
    pub body_len: u64,
    /// Of the object's resourceVersion, when the captured body had it.
    pub version: Option<u64>,
}

impl ItemPrint {
    pub fn same_message(&self, other: &Self) -> bool {
        self.stream_id == other.stream_id
            && self.kind == other.kind
            && self.body_len == other.body_len
            && (self.version.is_none() || other.version.is_none() || self.version == other.version)
    }
}

impl StreamItem {
    /// (start, duration) on the side's clock: the request's first byte to the
    /// response's last byte.
    pub fn timing(&self) -> (u64, u64) {
        let start = self
            .request
            .as_ref()
            .or(self.response.as_ref())
            .map_or(0, |m| m.ts_first);
        let end = [&self.request, &self.response]
            .into_iter()
            .flatten()
            .map(|m| m.ts_last)
            .max()
            .unwrap_or(start);
        (start, end.saturating_sub(start))
    }
}

#[derive(Clone, Debug, Default)]
struct Acc {
    request: Option<Message>,
    /// References up to the request's message.
    request_refs: Vec<EventRef>,
    main_emitted: bool,
    /// Counters per item kind, for item ids.
    events: u32,
    messages: u32,
    ends: u32,
    refs: Vec<EventRef>,
    last_activity: u64,
}

/// One side's streams.
#[derive(Clone, Debug, Default)]
pub struct SideStreams {
    streams: BTreeMap<u32, Acc>,
    pub ready: VecDeque<StreamItem>,
    /// References of chunks that named no stream, for the next item.
    loose_refs: Vec<EventRef>,
    pub dropped_items: u64,
    pub evicted_streams: u64,
}

impl SideStreams {
    /// (items dropped, streams evicted) since the last call.
    pub fn take_drops(&mut self) -> (u64, u64) {
        let d = (self.dropped_items, self.evicted_streams);
        self.dropped_items = 0;
        self.evicted_streams = 0;
        d
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && !self.streams.values().any(|a| a.request.is_some())
    }

    fn acc(&mut self, sid: u32, now: u64) -> &mut Acc {
        if !self.streams.contains_key(&sid) && self.streams.len() >= MAX_STREAMS {
            self.evict_oldest(now);
        }
        let acc = self.streams.entry(sid).or_default();
        acc.last_activity = now;
        acc
    }

    fn evict_oldest(&mut self, now: u64) {
        let Some(sid) = self
            .streams
            .iter()
            .min_by_key(|(_, a)| a.last_activity)
            .map(|(s, _)| *s)
        else {
            return;
        };
        // Only a request given up on is a loss; a finished stream kept for
        // late frames is not.
        if self.flush_stream(sid, now) {
            self.evicted_streams += 1;
        }
    }

    /// A stream gone: its request without response becomes a hop (true).
    fn flush_stream(&mut self, sid: u32, now: u64) -> bool {
        let mut flushed = false;
        if let Some(mut acc) = self.streams.remove(&sid) {
            if let Some(req) = acc.request.take().filter(|_| !acc.main_emitted) {
                self.push_ready(StreamItem {
                    id: ItemId {
                        stream_id: sid,
                        kind: ItemKind::Main,
                        index: 0,
                    },
                    request: Some(req),
                    response: None,
                    refs: [
                        std::mem::take(&mut acc.request_refs),
                        std::mem::take(&mut acc.refs),
                    ]
                    .concat(),
                    ready_at: now,
                    print: None,
                });
                flushed = true;
            }
        }
        flushed
    }

    fn push_ready(&mut self, mut item: StreamItem) {
        item.print = item.content_print();
        if self.ready.len() >= MAX_READY {
            self.ready.pop_front();
            self.dropped_items += 1;
        }
        self.ready.push_back(item);
    }

    /// A chunk's event reference, for the streams its frames name.
    pub fn add_ref(&mut self, sids: &[u32], r: &EventSource<'_>, now: u64) {
        if sids.is_empty() {
            if self.loose_refs.len() < MAX_STREAM_REFS {
                self.loose_refs.push(r.to_ref());
            }
            return;
        }
        for &sid in sids {
            let acc = self.acc(sid, now);
            if acc.refs.len() < MAX_STREAM_REFS {
                acc.refs.push(r.to_ref());
            }
        }
    }

    /// Takes one decoded message.
    pub fn push_message(&mut self, m: Message, now: u64) {
        let sid = m.stream_id.unwrap_or(0);
        let mut loose = std::mem::take(&mut self.loose_refs);
        let acc = self.acc(sid, now);
        let mut refs = std::mem::take(&mut acc.refs);
        refs.append(&mut loose);
        refs.truncate(MAX_STREAM_REFS);
        let (kind, index, request, response) = match m.part {
            Part::Request => {
                if acc.request.is_some() || acc.main_emitted {
                    // A second request head on the stream: keep the first.
                    acc.refs = refs;
                    return;
                }
                acc.request = Some(m);
                acc.request_refs = refs;
                return;
            }
            Part::Response if !acc.main_emitted => {
                acc.main_emitted = true;
                let done = m.complete;
                let req = acc.request.take();
                let mut all = std::mem::take(&mut acc.request_refs);
                all.append(&mut refs);
                refs = all;
                if done {
                    // The stream is over (a streaming response's head is
                    // not complete: its events follow).
                    self.streams.remove(&sid);
                }
                (ItemKind::Main, 0, req, Some(m))
            }
            Part::Response => {
                acc.ends += 1;
                (ItemKind::StreamEnd, acc.ends - 1, None, Some(m))
            }
            Part::Event => {
                let mut pre = None;
                if !acc.main_emitted {
                    // The call streams: its request is a hop now, not when
                    // the stream ends (which may be never).
                    acc.main_emitted = true;
                    pre = Some(StreamItem {
                        id: ItemId {
                            stream_id: sid,
                            kind: ItemKind::Main,
                            index: 0,
                        },
                        request: acc.request.take(),
                        response: None,
                        refs: std::mem::take(&mut acc.request_refs),
                        ready_at: now,
                        print: None,
                    });
                }
                let (kind, idx) = if is_watch_event(&m) {
                    acc.events += 1;
                    (ItemKind::WatchEvent, acc.events - 1)
                } else {
                    acc.messages += 1;
                    (ItemKind::StreamMessage, acc.messages - 1)
                };
                let req =
                    (m.direction == ktrail_protocols::Direction::ClientToServer).then(|| m.clone());
                let resp =
                    (m.direction == ktrail_protocols::Direction::ServerToClient).then_some(m);
                if let Some(p) = pre {
                    self.push_ready(p);
                }
                self.push_ready(StreamItem {
                    id: ItemId {
                        stream_id: sid,
                        kind,
                        index: idx,
                    },
                    request: req,
                    response: resp,
                    refs,
                    ready_at: now,
                    print: None,
                });
                return;
            }
        };
        self.push_ready(StreamItem {
            id: ItemId {
                stream_id: sid,
                kind,
                index,
            },
            request,
            response,
            refs,
            ready_at: now,
            print: None,
        });
    }

    /// Requests unanswered for `no_response_ns` become hops of their own.
    pub fn expire(&mut self, now: u64, no_response_ns: u64) {
        let due: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, a)| {
                a.request.is_some()
                    && !a.main_emitted
                    && now.saturating_sub(a.last_activity) >= no_response_ns
            })
            .map(|(s, _)| *s)
            .collect();
        for sid in due {
            if let Some(acc) = self.streams.get_mut(&sid) {
                acc.main_emitted = true;
                let item = StreamItem {
                    id: ItemId {
                        stream_id: sid,
                        kind: ItemKind::Main,
                        index: 0,
                    },
                    request: acc.request.take(),
                    response: None,
                    refs: [
                        std::mem::take(&mut acc.request_refs),
                        std::mem::take(&mut acc.refs),
                    ]
                    .concat(),
                    ready_at: now,
                    print: None,
                };
                self.push_ready(item);
            }
        }
    }

    /// The side closed or is being dropped: every stream ends.
    pub fn close(&mut self, now: u64) {
        let sids: Vec<u32> = self.streams.keys().copied().collect();
        for sid in sids {
            self.flush_stream(sid, now);
        }
    }

    /// The position of this end's copy of the other end's item `id` (with
    /// `print`): the item with that id when it is the same message, else the
    /// first with the same print.
    pub fn copy_of(&self, id: ItemId, print: Option<ItemPrint>) -> Option<usize> {
        let same = |i: &StreamItem| match (&print, &i.print) {
            (Some(p), Some(q)) => p.same_message(q),
            _ => false,
        };
        let mut by_print = None;
        for (pos, i) in self.ready.iter().enumerate() {
            if i.id == id && (print.is_none() || i.print.is_none() || same(i)) {
                return Some(pos);
            }
            if by_print.is_none() && same(i) {
                by_print = Some(pos);
            }
        }
        by_print
    }
}
