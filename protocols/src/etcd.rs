//! etcd v3 gRPC (go.etcd.io/etcd/api/v3 etcdserverpb/rpc.proto, mvccpb/kv.proto).
//! Field numbers are those of etcd v3.6's rpc.proto.

use crate::k8s;
use crate::message::{EtcdCompare, EtcdEvent, EtcdKeyOp, EtcdOp, ObjectRef, MAX_OBJECTS};
use crate::pb::{self, Fields};
use crate::util;

/// Most keys, ops, compares or events listed per message.
pub const MAX_LIST: usize = 32;

pub fn is_etcd_service(service: &str) -> bool {
    service.starts_with("etcdserverpb.")
}

fn i64v(v: u64) -> i64 {
    v as i64
}

/// Decodes one etcd gRPC message. Values that are Kubernetes objects (the
/// `k8s\0` envelope or JSON) are decoded into `objects`; values themselves
/// are never copied out.
pub fn decode(
    method: &str,
    msg: &[u8],
    request: bool,
    cut: bool,
    objects: &mut Vec<ObjectRef>,
) -> EtcdOp {
    let mut op = EtcdOp {
        op: method.to_string(),
        truncated: cut,
        ..EtcdOp::default()
    };
    let mut f = Fields::lenient(msg);
    match (method, request) {
        ("Range", true) => {
            for (n, v) in f.by_ref() {
                match n {
                    1 => push_key(&mut op.keys, v.bytes()),
                    2 => op.range_end = v.bytes().map(util::text),
                    4 => op.revision = v.varint().map(i64v),
                    _ => {}
                }
            }
        }
        ("Put", true) => {
            let mut value = None;
            for (n, v) in f.by_ref() {
                match n {
                    1 => push_key(&mut op.keys, v.bytes()),
                    2 => value = v.msg().map(|b| (b, v.is_partial())),
                    _ => {}
                }
            }
            if let Some((val, partial)) = value {
                value_objects(val, cut || partial, objects);
            }
        }
        ("DeleteRange", true) => {
            for (n, v) in f.by_ref() {
                match n {
                    1 => push_key(&mut op.keys, v.bytes()),
                    2 => op.range_end = v.bytes().map(util::text),
                    _ => {}
                }
            }
        }
        ("Txn", true) => {
            for (n, v) in f.by_ref() {
                let Some(b) = v.msg() else { continue };
                match n {
                    1 if op.compares.len() < MAX_LIST => op.compares.push(compare(b)),
                    2 if op.success.len() < MAX_LIST => {
                        op.success.extend(request_op(b, cut, objects))
                    }
                    3 if op.failure.len() < MAX_LIST => {
                        op.failure.extend(request_op(b, cut, objects))
                    }
                    _ => {}
                }
            }
            for k in op.success.iter().chain(op.failure.iter()) {
                if op.keys.len() < MAX_LIST && !op.keys.contains(&k.key) {
                    op.keys.push(k.key.clone());
                }
            }
        }
        ("Watch", true) => {
            for (n, v) in f.by_ref() {
                let Some(b) = v.msg() else { continue };
                match n {
                    1 => {
                        // WatchCreateRequest {key = 1, range_end = 2, start_revision = 3, watch_id = 7}
                        for (n, v) in Fields::lenient(b) {
                            match n {
                                1 => push_key(&mut op.keys, v.bytes()),
                                2 => op.range_end = v.bytes().map(util::text),
                                3 => op.revision = v.varint().map(i64v),
                                7 => op.watch_id = v.varint().map(i64v),
                                _ => {}
                            }
                        }
                        op.op = "Watch create".into();
                    }
                    2 => {
                        op.op = "Watch cancel".into();
                        op.watch_id = pb::get_varint(b, 1).map(i64v);
                    }
                    3 => op.op = "Watch progress".into(),
                    _ => {}
                }
            }
        }
        (_, true) => for _ in f.by_ref() {},
        (_, false) => {
            for (n, v) in f.by_ref() {
                if n == 1 {
                    if let Some(h) = v.msg() {
                        op.revision = pb::get_varint(h, 3).map(i64v);
                    }
                    continue;
                }
                response_field(&mut op, method, n, v, cut, objects);
            }
        }
    }
    if f.truncated() {
        op.truncated = true;
    }
    if method == "Txn" && !request && op.succeeded.is_none() && !op.truncated {
        // proto3 leaves out `succeeded = false`.
        op.succeeded = Some(false);
    }
    op
}

fn response_field(
    op: &mut EtcdOp,
    method: &str,
    n: u32,
    v: pb::Value<'_>,
    cut: bool,
    objects: &mut Vec<ObjectRef>,
) {
    match (method, n) {
        ("Range", 2) => {
            if let Some(kv) = v.msg() {
                key_value(op, kv, cut, objects);
            }
        }
        ("Range", 4) | ("DeleteRange", 2) => op.count = v.varint().map(i64v),
        ("Txn", 2) => op.succeeded = v.varint().map(|b| b != 0),
        ("Txn", 3) => {
            // ResponseOp {response_range = 1, response_put = 2, response_delete_range = 3}
            if let Some(b) = v.msg() {
                for (n, v) in Fields::lenient(b) {
                    if let (1, Some(rr)) = (n, v.msg()) {
                        for (n, v) in Fields::lenient(rr) {
                            if let (2, Some(kv)) = (n, v.msg()) {
                                key_value(op, kv, cut, objects);
                            }
                        }
                    }
                }
            }
        }
        ("Watch", 2) => op.watch_id = v.varint().map(i64v),
        ("Watch", 11) => {
            // mvccpb.Event {type = 1 (PUT = 0, DELETE = 1), kv = 2, prev_kv = 3}
            if let Some(b) = v.msg() {
                if op.events.len() >= MAX_LIST {
                    return;
                }
                let mut kind = "PUT";
                let mut key = String::new();
                let mut rev = None;
                for (n, v) in Fields::lenient(b) {
                    match (n, v) {
                        (1, pb::Value::Varint(1)) => kind = "DELETE",
                        (2, pb::Value::Bytes(kv) | pb::Value::Partial(kv)) => {
                            for (n, v) in Fields::lenient(kv) {
                                match n {
                                    1 => key = v.bytes().map(util::text).unwrap_or_default(),
                                    3 => rev = v.varint().map(i64v),
                                    5 => {
                                        if let Some(val) = v.msg() {
                                            value_objects(val, cut || v.is_partial(), objects);
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                op.events.push(EtcdEvent {
                    kind: kind.into(),
                    key,
                    mod_revision: rev,
                });
            }
        }
        _ => {}
    }
}

/// mvccpb.KeyValue {key = 1, create_revision = 2, mod_revision = 3, version = 4, value = 5}
fn key_value(op: &mut EtcdOp, kv: &[u8], cut: bool, objects: &mut Vec<ObjectRef>) {
    for (n, v) in Fields::lenient(kv) {
        match n {
            1 => push_key(&mut op.keys, v.bytes()),
            5 => {
                if let Some(val) = v.msg() {
                    value_objects(val, cut || v.is_partial(), objects);
                }
            }
            _ => {}
        }
    }
}

fn value_objects(val: &[u8], cut: bool, objects: &mut Vec<ObjectRef>) {
    if objects.len() >= MAX_OBJECTS {
        return;
    }
    if val.starts_with(k8s::PROTO_MAGIC) || val.first() == Some(&b'{') {
        objects.extend(k8s::decode_body(val, cut));
        objects.truncate(MAX_OBJECTS);
    }
}

fn push_key(keys: &mut Vec<String>, k: Option<&[u8]>) {
    if let Some(k) = k {
        if keys.len() < MAX_LIST {
            keys.push(util::text(k));
        }
    }
}

/// Compare {result = 1, target = 2, key = 3, version = 4, create_revision = 5,
/// mod_revision = 6, value = 7, lease = 8}
fn compare(b: &[u8]) -> EtcdCompare {
    let mut c = EtcdCompare {
        key: String::new(),
        target: "version".into(),
        result: "=".into(),
        number: None,
    };
    for (n, v) in Fields::lenient(b) {
        match n {
            1 => {
                c.result = match v.varint() {
                    Some(1) => ">",
                    Some(2) => "<",
                    Some(3) => "!=",
                    _ => "=",
                }
                .into()
            }
            2 => {
                c.target = match v.varint() {
                    Some(1) => "create",
                    Some(2) => "mod",
                    Some(3) => "value",
                    Some(4) => "lease",
                    _ => "version",
                }
                .into()
            }
            3 => c.key = v.bytes().map(util::text).unwrap_or_default(),
            4 | 5 | 6 | 8 => c.number = v.varint().map(i64v),
            _ => {}
        }
    }
    // proto3 omits zero: a revision compare without a number compares with 0.
    if c.number.is_none() && c.target != "value" {
        c.number = Some(0);
    }
    c
}

/// RequestOp {request_range = 1, request_put = 2, request_delete_range = 3, request_txn = 4}
fn request_op(b: &[u8], cut: bool, objects: &mut Vec<ObjectRef>) -> Option<EtcdKeyOp> {
    let (n, v) = Fields::lenient(b).next()?;
    let inner = v.msg()?;
    let op = match n {
        1 => "range",
        2 => "put",
        3 => "delete_range",
        4 => "txn",
        _ => return None,
    };
    let mut key = String::new();
    let mut range_end = None;
    for (n, v) in Fields::lenient(inner) {
        match (op, n) {
            ("txn", _) => {}
            (_, 1) => key = v.bytes().map(util::text).unwrap_or_default(),
            ("range" | "delete_range", 2) => range_end = v.bytes().map(util::text),
            ("put", 2) => {
                if let Some(val) = v.msg() {
                    value_objects(val, cut || v.is_partial(), objects);
                }
            }
            _ => {}
        }
    }
    Some(EtcdKeyOp {
        op: op.into(),
        key,
        range_end,
    })
}
