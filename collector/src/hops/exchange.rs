//! Splitting a side's runs into request/response exchanges.

use super::run::{Direction, Run};
use super::side::{Role, Side};

/// Indices into a side's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeSpan {
    pub request: Option<usize>,
    pub response: Option<usize>,
}

impl ExchangeSpan {
    /// Runs the exchange covers (they are consecutive, from the first one).
    pub fn run_count(&self) -> usize {
        usize::from(self.request.is_some()) + usize::from(self.response.is_some())
    }
}

/// Timing that decides when an exchange is over.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// A response is over after this long without more of it.
    pub quiet_ns: u64,
    /// A request nobody answered is over after this long.
    pub no_response_ns: u64,
}

/// The direction a side's requests travel in.
pub fn request_direction(role: Role) -> Direction {
    match role {
        // A client sends requests; a server receives them.
        Role::Client => Direction::Send,
        Role::Server => Direction::Recv,
    }
}

/// Client: a request is a run of sends and its response the receives after it.
/// Server: the other way round. A response with no request before it (a server
/// speaking first) is an exchange of its own, on both sides alike.
pub fn split(runs: &std::collections::VecDeque<Run>, role: Role) -> Vec<ExchangeSpan> {
    let req_dir = request_direction(role);
    let mut out = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        if runs[i].dir == req_dir {
            let response = (i + 1 < runs.len()).then_some(i + 1);
            out.push(ExchangeSpan {
                request: Some(i),
                response,
            });
            i += 1 + usize::from(response.is_some());
        } else {
            out.push(ExchangeSpan {
                request: None,
                response: Some(i),
            });
            i += 1;
        }
    }
    out
}

/// Whether exchange `idx` of `spans` is over: the side moved on to the next
/// request, closed, or went quiet.
pub fn is_complete(
    side: &Side,
    spans: &[ExchangeSpan],
    idx: usize,
    now: u64,
    c: Completion,
) -> bool {
    if idx + 1 < spans.len() || side.closed {
        return true;
    }
    let Some(span) = spans.get(idx) else {
        return false;
    };
    let wait = if span.response.is_some() {
        c.quiet_ns
    } else {
        c.no_response_ns
    };
    now.saturating_sub(side.last_activity) >= wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hops::run::{EventSource, Transfer};
    use std::collections::VecDeque;

    fn runs(dirs: &[Direction]) -> VecDeque<Run> {
        dirs.iter()
            .map(|d| {
                let source = EventSource {
                    node: "n",
                    agent_id: "a",
                    seq: 1,
                };
                Run::new(*d, &Transfer::default(), &source)
            })
            .collect()
    }

    #[test]
    fn client_requests_are_sends() {
        use Direction::*;
        let spans = split(&runs(&[Send, Recv, Send, Recv, Send]), Role::Client);
        assert_eq!(spans.len(), 3);
        assert_eq!(
            spans[1],
            ExchangeSpan {
                request: Some(2),
                response: Some(3)
            }
        );
        assert_eq!(
            spans[2],
            ExchangeSpan {
                request: Some(4),
                response: None
            }
        );
    }

    #[test]
    fn a_leading_response_stands_alone() {
        use Direction::*;
        let spans = split(&runs(&[Recv, Send, Recv]), Role::Client);
        assert_eq!(
            spans[0],
            ExchangeSpan {
                request: None,
                response: Some(0)
            }
        );
        assert_eq!(
            spans[1],
            ExchangeSpan {
                request: Some(1),
                response: Some(2)
            }
        );
        let server = split(&runs(&[Send, Recv, Send]), Role::Server);
        assert_eq!(server.len(), 2);
    }
}
