mod capture;
mod succession;
mod warnings;

use ktrail_proto::v1::HopEnd;

/// An observed end of a hop.
pub(super) fn end(node: &str, pid: u32, comm: &str) -> Option<HopEnd> {
    Some(HopEnd {
        node: node.into(),
        pid,
        comm: comm.into(),
        observed: true,
        ..Default::default()
    })
}
