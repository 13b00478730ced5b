//! Reading the CLI's JSON output (`--output json`) leniently, for assertions and messages.
//!
//! Numbers are accepted as JSON numbers or strings (proto3 JSON writes 64-bit integers as
//! strings) and byte fields as strings or arrays of bytes, so the tests check meaning, not
//! one serializer's choices.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Every complete line of `text` that parses as JSON. A last line without its newline may
/// still be being written and is left out.
pub fn json_lines(text: &str) -> Vec<Value> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| serde_json::from_str(line.trim()).ok())
        .collect()
}

/// Every line of a finished command's output as JSON; a line that is not is an error.
pub fn output_json_lines(text: &str) -> anyhow::Result<Vec<Value>> {
    use anyhow::Context as _;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// `value` as u64 whether it is a JSON number or a decimal string; 0 when absent.
pub fn u64_of(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or_default(),
        Some(Value::String(s)) => s.parse().unwrap_or_default(),
        _ => 0,
    }
}

/// `value` as text: a string as is, an array of bytes decoded as (lossy) UTF-8.
pub fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    }
}

pub fn bool_of(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool).unwrap_or(false)
}

/// Whether any object anywhere inside `value` has `key` equal to the string `wanted`.
pub fn has_string_field(value: &Value, key: &str, wanted: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == key && v.as_str() == Some(wanted)) || has_string_field(v, key, wanted)
        }),
        Value::Array(items) => items.iter().any(|v| has_string_field(v, key, wanted)),
        _ => false,
    }
}

/// One end of a hop as `ktrail watch --output json` prints it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndView {
    pub node: String,
    pub pid: u64,
    pub comm: String,
    pub addr: String,
    pub port: u64,
    pub observed: bool,
}

impl EndView {
    fn from_json(value: Option<&Value>) -> Self {
        let field = |key: &str| value.and_then(|v| v.get(key));
        Self {
            node: text_of(field("node")),
            pid: u64_of(field("pid")),
            comm: text_of(field("comm")),
            addr: text_of(field("addr")),
            port: u64_of(field("port")),
            observed: bool_of(field("observed")),
        }
    }
}

impl fmt::Display for EndView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}[{}] {}:{}{}",
            self.node,
            self.comm,
            self.pid,
            self.addr,
            self.port,
            if self.observed { "" } else { " (not observed)" }
        )
    }
}

/// A hop line (`"type":"hop"`) of `ktrail watch --output json`.
#[derive(Debug, Clone, Default)]
pub struct HopView {
    pub id: String,
    pub kind: String,
    pub protocol: String,
    pub client: EndView,
    pub server: EndView,
    pub request: String,
    pub response: String,
    pub summary: String,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
}

impl HopView {
    pub fn from_json(value: &Value) -> Option<Self> {
        if value.get("type").and_then(Value::as_str) != Some("hop") {
            return None;
        }
        Some(Self {
            id: text_of(value.get("id")),
            kind: text_of(value.get("kind")),
            protocol: text_of(value.get("protocol")),
            client: EndView::from_json(value.get("client")),
            server: EndView::from_json(value.get("server")),
            request: text_of(value.get("request")),
            response: text_of(value.get("response")),
            summary: text_of(value.get("summary")),
            start_unix_ns: u64_of(value.get("start_unix_ns")),
            duration_ns: u64_of(value.get("duration_ns")),
        })
    }
}

impl fmt::Display for HopView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first_line = self.request.lines().next().unwrap_or_default();
        write!(
            f,
            "hop {} {} {}: {} -> {} {:?} ({} ns)",
            self.id,
            self.protocol,
            self.kind,
            self.client,
            self.server,
            first_line,
            self.duration_ns
        )
    }
}

/// The hops in `ktrail watch --output json` output, in order, one per hop id: when the same
/// id appears again (an updated hop), the later version replaces the earlier one.
pub fn hops(watch_output: &str) -> Vec<HopView> {
    let mut order = Vec::new();
    let mut by_id: BTreeMap<String, HopView> = BTreeMap::new();
    for hop in json_lines(watch_output)
        .iter()
        .filter_map(HopView::from_json)
    {
        if !by_id.contains_key(&hop.id) {
            order.push(hop.id.clone());
        }
        by_id.insert(hop.id.clone(), hop);
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// `hops` as one line each, for failure messages.
pub fn describe_hops<'a>(hops: impl IntoIterator<Item = &'a HopView>) -> String {
    let lines: Vec<String> = hops.into_iter().map(|h| format!("  {h}")).collect();
    if lines.is_empty() {
        "  (none)".into()
    } else {
        lines.join("\n")
    }
}

/// The entry of `ktrail status --output json` for the agent of `node`: the connected one
/// if several runs of that node's agent are listed, else the one seen last.
pub fn agent_for_node<'a>(status: &'a Value, node: &str) -> Option<&'a Value> {
    status
        .get("agents")?
        .as_array()?
        .iter()
        .filter(|a| a.get("node").and_then(Value::as_str) == Some(node))
        .max_by_key(|a| {
            (
                bool_of(a.get("connected")),
                u64_of(a.get("last_seen_unix_ns")),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP: &str = r#"{"type":"hop","id":"h1","flow_id":"f","protocol":"tcp","kind":"request/response","start_unix_ns":"1","duration_ns":1500,"client":{"node":"k8s-worker","pid":42,"comm":"kubelet","addr":"192.168.56.20","port":40000,"observed":true},"server":{"node":"k8s-control","pid":"7","comm":"kube-apiserver","addr":"192.168.56.10","port":8080,"observed":false},"summary":"GET /x","request":[71,69,84],"request_bytes":3,"response":"HTTP/1.1 200 OK","response_bytes":15,"events":[]}"#;

    #[test]
    fn parses_a_hop_line_leniently() {
        let hops = hops(&format!("{HOP}\nnot json\n"));
        assert_eq!(hops.len(), 1);
        let hop = &hops[0];
        assert_eq!(hop.client.comm, "kubelet");
        assert_eq!(hop.client.pid, 42);
        assert!(hop.client.observed);
        assert_eq!(hop.server.pid, 7, "pid given as a string");
        assert!(!hop.server.observed);
        assert_eq!(hop.request, "GET", "bytes given as an array");
        assert_eq!(hop.response, "HTTP/1.1 200 OK");
        assert_eq!(hop.duration_ns, 1500);
    }

    #[test]
    fn later_version_of_a_hop_wins_and_partial_lines_wait() {
        let updated = HOP.replace(r#""duration_ns":1500"#, r#""duration_ns":2500"#);
        let text = format!("{HOP}\n{updated}\n{{\"type\":\"hop\",\"id\":\"h2\"");
        let hops = hops(&text);
        assert_eq!(
            hops.len(),
            1,
            "the unterminated h2 line is not complete yet"
        );
        assert_eq!(hops[0].duration_ns, 2500);
    }

    #[test]
    fn finds_nested_string_fields() {
        let value: Value =
            serde_json::from_str(r#"{"node":"w","event":{"comm":"curl","pid":1}}"#).expect("json");
        assert!(has_string_field(&value, "comm", "curl"));
        assert!(!has_string_field(&value, "comm", "kubelet"));
    }
}
