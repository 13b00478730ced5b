//! `ktrail watch`: flows as they unfold (or every hop), live.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::anyhow;
use ktrail_proto::v1::{watch_update, Flow, Hop, WatchRequest};
use tonic::transport::Channel;

use crate::args::{Output, WatchArgs, WatchView};
use crate::connect::{call_error, query_client};
use crate::output::Out;
use crate::render::flow_human::{depths, flow_header, flow_hop_line, flow_tree};
use crate::render::flow_json::flow_json;
use crate::render::hop_human::{hop_line, lagged_line};
use crate::render::hop_json::hop_json;
use crate::render::lagged_json;
use crate::style::{Color, Style};

/// The live region of a terminal holds at most this many lines.
const LIVE_LINES: usize = 60;
/// A terminal is redrawn at most this often.
const REDRAW: Duration = Duration::from_millis(100);

pub async fn run(
    channel: Channel,
    url: &str,
    args: &WatchArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let mut client = query_client(channel);
    let mut stream = client
        .watch(WatchRequest {
            replay: args.replay,
        })
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    let style = Style::detect();
    let mut view = match (args.output, args.view) {
        (Output::Json, _) => View::Json,
        (Output::Human, WatchView::Hops) => View::Hops,
        (Output::Human, WatchView::Flows) if std::io::stdout().is_terminal() => {
            View::Live(Box::default())
        }
        (Output::Human, WatchView::Flows) => View::Stream(Box::default()),
    };
    let mut ticker = tokio::time::interval(REDRAW);
    loop {
        let update = tokio::select! {
            m = stream.message() => m.map_err(|s| call_error(url, s))?,
            _ = ticker.tick() => {
                if let View::Live(live) = &mut view {
                    live.redraw(out, &style)?;
                }
                continue;
            }
        };
        let Some(update) = update else { break };
        let Some(body) = update.body else { continue };
        match &mut view {
            View::Json => out.line(&match body {
                watch_update::Body::Hop(hop) => hop_json(&hop)?,
                watch_update::Body::Flow(flow) => flow_json(&flow)?,
                watch_update::Body::Lagged(n) => lagged_json(n),
            })?,
            View::Hops => match body {
                watch_update::Body::Hop(hop) => out.line(&hop_line(&hop, &style))?,
                watch_update::Body::Lagged(n) => out.line(&lagged_line(n, &style))?,
                watch_update::Body::Flow(_) => {}
            },
            View::Stream(s) => {
                for line in s.update(body, &style) {
                    out.line(&line)?;
                }
            }
            View::Live(live) => live.update(body, out, &style)?,
        }
    }
    Err(anyhow!(
        "the collector at {url} ended the watch (is it shutting down?)"
    ))
}

enum View {
    Json,
    Hops,
    /// Lines appended as hops arrive (a pipe, a file).
    Stream(Box<Flows>),
    /// A terminal: open flows redrawn in place as trees, closed ones
    /// printed for good above them.
    Live(Box<LiveRegion>),
}

/// Flows seen so far and their hops (bounded: closed flows are forgotten).
#[derive(Default)]
struct Flows {
    flows: HashMap<String, (Flow, Vec<Hop>)>,
}

impl Flows {
    /// Records an update; returns the flow it touched and whether that hop
    /// or flow is new.
    fn record(&mut self, body: &watch_update::Body) -> Option<(String, bool)> {
        match body {
            watch_update::Body::Flow(flow) => {
                let entry = self.flows.entry(flow.id.clone());
                let new = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
                entry.or_insert_with(|| (flow.clone(), Vec::new())).0 = flow.clone();
                Some((flow.id.clone(), new))
            }
            watch_update::Body::Hop(hop) if !hop.flow_id.is_empty() => {
                let (_, hops) = self
                    .flows
                    .entry(hop.flow_id.clone())
                    .or_insert_with(|| (placeholder(&hop.flow_id), Vec::new()));
                match hops.iter_mut().find(|h| h.id == hop.id) {
                    Some(h) => {
                        *h = hop.clone();
                        Some((hop.flow_id.clone(), false))
                    }
                    None => {
                        hops.push(hop.clone());
                        Some((hop.flow_id.clone(), true))
                    }
                }
            }
            _ => None,
        }
    }

    /// Lines to append for an update.
    fn update(&mut self, body: watch_update::Body, style: &Style) -> Vec<String> {
        let Some((id, new)) = self.record(&body) else {
            return match body {
                watch_update::Body::Lagged(n) => vec![lagged_line(n, style)],
                _ => Vec::new(),
            };
        };
        let Some((flow, hops)) = self.flows.get(&id) else {
            return Vec::new();
        };
        let tag = style.paint(Color::Dim, short(&id));
        let lines = match body {
            watch_update::Body::Flow(_) if new || flow.closed || flow.state != "running" => {
                flow_header(flow, style)
            }
            watch_update::Body::Hop(hop) if new => {
                let depth = depths(hops).get(&hop.id).copied().unwrap_or(0);
                vec![format!(
                    "{tag} {}",
                    flow_hop_line(flow.start_unix_ns, depth, &hop, style)
                )]
            }
            _ => Vec::new(),
        };
        if flow.closed {
            self.flows.remove(&id);
        }
        lines
    }
}

fn placeholder(id: &str) -> Flow {
    Flow {
        id: id.to_string(),
        state: "running".into(),
        ..Flow::default()
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[derive(Default)]
struct LiveRegion {
    flows: Flows,
    /// Lines of the live region now on screen.
    drawn: usize,
    dirty: bool,
    /// Closed flows to print for good at the next redraw.
    finished: Vec<(Flow, Vec<Hop>)>,
}

impl LiveRegion {
    fn update(
        &mut self,
        body: watch_update::Body,
        out: &mut Out,
        style: &Style,
    ) -> anyhow::Result<()> {
        if let watch_update::Body::Lagged(n) = body {
            self.erase(out)?;
            out.line(&lagged_line(n, style))?;
            self.dirty = true;
            return Ok(());
        }
        if let Some((id, _)) = self.flows.record(&body) {
            self.dirty = true;
            let closed = self.flows.flows.get(&id).is_some_and(|(f, _)| f.closed);
            if closed {
                if let Some(done) = self.flows.flows.remove(&id) {
                    self.finished.push(done);
                }
            }
        }
        Ok(())
    }

    fn erase(&mut self, out: &mut Out) -> anyhow::Result<()> {
        if self.drawn > 0 {
            out.raw(&format!("\x1b[{}F\x1b[J", self.drawn))?;
            self.drawn = 0;
        }
        Ok(())
    }

    fn redraw(&mut self, out: &mut Out, style: &Style) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.erase(out)?;
        for (flow, hops) in self.finished.drain(..) {
            for line in flow_tree(&flow, &hops, style) {
                out.line(&line)?;
            }
            out.line("")?;
        }
        let mut open: Vec<&(Flow, Vec<Hop>)> = self.flows.flows.values().collect();
        open.sort_by_key(|(f, _)| f.start_unix_ns);
        let mut lines = Vec::new();
        for (flow, hops) in open {
            lines.extend(flow_tree(flow, hops, style));
        }
        if lines.len() > LIVE_LINES {
            let cut = lines.len() - LIVE_LINES + 1;
            lines.drain(..cut);
            lines.insert(
                0,
                style.paint(
                    Color::Dim,
                    &format!("… {cut} earlier lines (ktrail show ID prints a whole flow)"),
                ),
            );
        }
        for line in &lines {
            out.line(line)?;
        }
        self.drawn = lines.len();
        Ok(())
    }
}
