//! CRI, k8s.io/cri-api runtime.v1 (and v1alpha2, same field numbers for what
//! is decoded here). Field numbers are those of cri-api v0.34 api.proto.

use crate::message::CriOp;
use crate::pb::{self, Fields};
use crate::util;

pub fn is_cri_service(service: &str) -> bool {
    matches!(
        service,
        "runtime.v1.RuntimeService"
            | "runtime.v1.ImageService"
            | "runtime.v1alpha2.RuntimeService"
            | "runtime.v1alpha2.ImageService"
    )
}

/// Requests whose bytes may carry credentials (registry auth, container
/// environment): their body prefix is not kept.
pub fn carries_credentials(method: &str) -> bool {
    matches!(method, "PullImage" | "CreateContainer")
}

fn lstr(b: &[u8], n: u32) -> Option<String> {
    Fields::lenient(b)
        .find(|(f, _)| *f == n)
        .and_then(|(_, v)| v.bytes())
        .map(util::text)
}

fn lmsg(b: &[u8], n: u32) -> Option<&[u8]> {
    Fields::lenient(b)
        .find(|(f, _)| *f == n)
        .and_then(|(_, v)| v.msg())
}

/// PodSandboxConfig {metadata = 1 PodSandboxMetadata {name = 1, uid = 2, namespace = 3, attempt = 4}}
fn sandbox_config(op: &mut CriOp, cfg: &[u8]) {
    if let Some(md) = lmsg(cfg, 1) {
        op.pod_name = lstr(md, 1);
        op.pod_uid = lstr(md, 2);
        op.pod_namespace = lstr(md, 3);
        op.attempt = pb::get_varint(md, 4)
            .map(|a| a as u32)
            .or(Some(0).filter(|_| op.pod_name.is_some()));
    }
}

/// ImageSpec {image = 1}
fn image_spec(b: &[u8]) -> Option<String> {
    lstr(b, 1)
}

pub fn decode(service: &str, method: &str, msg: &[u8], request: bool, cut: bool) -> CriOp {
    let mut op = CriOp {
        service: service.rsplit('.').next().unwrap_or(service).to_string(),
        method: method.to_string(),
        truncated: cut || !pb::parses_fully(msg),
        ..CriOp::default()
    };
    match (method, request) {
        ("RunPodSandbox", true) => {
            // RunPodSandboxRequest {config = 1, runtime_handler = 2}
            if let Some(cfg) = lmsg(msg, 1) {
                sandbox_config(&mut op, cfg);
            }
            op.runtime_handler = lstr(msg, 2).filter(|s| !s.is_empty());
        }
        ("RunPodSandbox", false) => op.pod_sandbox_id = lstr(msg, 1),
        (
            "StopPodSandbox"
            | "RemovePodSandbox"
            | "PodSandboxStatus"
            | "PodSandboxStats"
            | "UpdatePodSandboxResources",
            true,
        ) => op.pod_sandbox_id = lstr(msg, 1),
        ("CreateContainer", true) => {
            // CreateContainerRequest {pod_sandbox_id = 1, config = 2 ContainerConfig
            // {metadata = 1 ContainerMetadata {name = 1, attempt = 2}, image = 2}, sandbox_config = 3}
            op.pod_sandbox_id = lstr(msg, 1);
            if let Some(cfg) = lmsg(msg, 2) {
                if let Some(md) = lmsg(cfg, 1) {
                    op.container_name = lstr(md, 1);
                    op.attempt = pb::get_varint(md, 2).map(|a| a as u32);
                }
                op.image = lmsg(cfg, 2).and_then(image_spec);
            }
            if let Some(sc) = lmsg(msg, 3) {
                let attempt = op.attempt;
                sandbox_config(&mut op, sc);
                op.attempt = attempt.or(Some(0).filter(|_| op.container_name.is_some()));
            }
        }
        ("CreateContainer", false) => op.container_id = lstr(msg, 1),
        (
            "StartContainer" | "StopContainer" | "RemoveContainer" | "ContainerStatus"
            | "ContainerStats" | "ReopenContainerLog" | "ExecSync" | "Exec" | "Attach",
            true,
        ) => op.container_id = lstr(msg, 1),
        ("PullImage", true) => {
            // PullImageRequest {image = 1, auth = 2 (never read), sandbox_config = 3}
            op.image = lmsg(msg, 1).and_then(image_spec);
            if let Some(sc) = lmsg(msg, 3) {
                sandbox_config(&mut op, sc);
            }
        }
        ("PullImage", false) => op.image_ref = lstr(msg, 1),
        ("ImageStatus" | "RemoveImage", true) => op.image = lmsg(msg, 1).and_then(image_spec),
        ("ImageStatus", false) => {
            // ImageStatusResponse {image = 1 Image {id = 1, repo_tags = 2}}
            if let Some(img) = lmsg(msg, 1) {
                op.image_ref = lstr(img, 1);
                op.image = lstr(img, 2);
            }
        }
        _ => {}
    }
    op
}
