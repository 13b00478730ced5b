//! Object identity from Kubernetes API paths and etcd keys, for stitching
//! hops by object (the flow model's "object identity").

use serde::Serialize;

/// A resource named by an API path or an etcd key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceRef {
    /// API group ("" for the core group).
    pub group: String,
    /// API version (empty for etcd keys).
    pub version: String,
    /// Plural resource name: pods, bindings, events …
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// status, binding, log, exec, eviction …
    pub subresource: Option<String>,
    /// A watch (`watch=true`, or the legacy `/watch/` prefix).
    pub watch: bool,
}

impl ResourceRef {
    /// `pods default/x/status`, `pods (all namespaces)` …
    pub fn label(&self) -> String {
        let mut s = self.resource.clone();
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => s.push_str(&format!(" {ns}/{n}")),
            (None, Some(n)) => s.push_str(&format!(" {n}")),
            (Some(ns), None) => s.push_str(&format!(" in {ns}")),
            (None, None) => {}
        }
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" ({sub})"));
        }
        s
    }
}

fn seg(s: &str) -> String {
    crate::util::text(s.as_bytes())
}

/// Parses a Kubernetes API request path (`/api/v1/namespaces/default/pods/x/status?…`).
pub fn parse_api_path(path: &str) -> Option<ResourceRef> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let mut parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() > 16 {
        return None;
    }
    let mut r = ResourceRef::default();
    match parts.first().copied() {
        Some("api") => {
            r.version = seg(parts.get(1)?);
            parts.drain(..2);
        }
        Some("apis") => {
            r.group = seg(parts.get(1)?);
            r.version = seg(parts.get(2)?);
            parts.drain(..3);
        }
        _ => return None,
    }
    if parts.first() == Some(&"watch") {
        r.watch = true;
        parts.remove(0);
    }
    if parts.first() == Some(&"namespaces") {
        match parts.len() {
            1 => {
                r.resource = "namespaces".into();
            }
            2 => {
                r.resource = "namespaces".into();
                r.name = Some(seg(parts.get(1)?));
            }
            3 if matches!(parts.get(2).copied(), Some("status" | "finalize")) => {
                r.resource = "namespaces".into();
                r.name = Some(seg(parts.get(1)?));
                r.subresource = Some(seg(parts.get(2)?));
            }
            _ => {
                r.namespace = Some(seg(parts.get(1)?));
                parts.drain(..2);
            }
        }
        if !r.resource.is_empty() {
            r.watch |= is_watch_query(query);
            return Some(r);
        }
    }
    r.resource = seg(parts.first()?);
    r.name = parts.get(1).map(|s| seg(s));
    r.subresource = parts.get(2).map(|s| seg(s));
    r.watch |= is_watch_query(query);
    Some(r)
}

fn is_watch_query(q: &str) -> bool {
    q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
}

/// Parses an etcd key of the Kubernetes storage layout:
/// `/registry/<resource>/<namespace>/<name>`, `/registry/<resource>/<name>`
/// (cluster-scoped), `/registry/<group>/<resource>/…` (a group with a dot,
/// e.g. custom resources). A key ending in `/` is a prefix (no name).
pub fn parse_etcd_key(key: &str) -> Option<ResourceRef> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    let prefix = parts.last() == Some(&"");
    if prefix {
        parts.pop();
    }
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut r = ResourceRef::default();
    if parts.first().is_some_and(|p| p.contains('.')) && parts.len() >= 2 {
        r.group = seg(parts.first()?);
        parts.remove(0);
    }
    r.resource = seg(parts.first()?);
    match (parts.get(1), parts.get(2)) {
        (Some(ns), Some(name)) => {
            r.namespace = Some(seg(ns));
            r.name = Some(seg(name));
        }
        (Some(x), None) if prefix => r.namespace = Some(seg(x)),
        (Some(x), None) => r.name = Some(seg(x)),
        _ => {}
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        let r = parse_api_path("/api/v1/namespaces/default/pods/x/status?fieldManager=kubectl")
            .unwrap();
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.resource.as_str()),
            ("", "v1", "pods")
        );
        assert_eq!(r.label(), "pods default/x (status)");
        let r =
            parse_api_path("/api/v1/namespaces/default/pods?fieldSelector=a&watch=true").unwrap();
        assert!(r.watch);
        assert_eq!(r.label(), "pods in default");
        let r = parse_api_path("/apis/events.k8s.io/v1/namespaces/default/events").unwrap();
        assert_eq!(r.group, "events.k8s.io");
        let r = parse_api_path("/api/v1/nodes/ktrail-worker").unwrap();
        assert_eq!(r.label(), "nodes ktrail-worker");
        let r = parse_api_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(r.label(), "namespaces kube-system");
        let r = parse_api_path("/api/v1/pods?watch=1").unwrap();
        assert!(r.watch && r.namespace.is_none());
        assert!(parse_api_path("/version").is_none());
        assert!(parse_api_path("/api").is_none());
    }

    #[test]
    fn etcd_keys() {
        assert_eq!(
            parse_etcd_key("/registry/pods/default/x").unwrap().label(),
            "pods default/x"
        );
        assert_eq!(parse_etcd_key("/registry/pods/").unwrap().label(), "pods");
        assert_eq!(
            parse_etcd_key("/registry/pods/default/").unwrap().label(),
            "pods in default"
        );
        assert_eq!(
            parse_etcd_key("/registry/minions/ktrail-worker")
                .unwrap()
                .label(),
            "minions ktrail-worker"
        );
        let r =
            parse_etcd_key("/registry/apiextensions.k8s.io/customresourcedefinitions/a.b").unwrap();
        assert_eq!(
            (r.group.as_str(), r.name.as_deref()),
            ("apiextensions.k8s.io", Some("a.b"))
        );
        assert!(parse_etcd_key("/other").is_none());
    }
}
