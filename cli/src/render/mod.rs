//! Turning collector replies into output lines, human or JSON.

pub mod event_human;
pub mod event_json;
pub mod flow_human;
pub mod flow_json;
pub mod hop_human;
pub mod hop_json;
pub mod perfetto;
pub mod socket;
pub mod status_human;
pub mod status_json;

/// `{"type":"lagged","skipped":N}`: the collector dropped N items for this
/// client because it read too slowly.
pub fn lagged_json(skipped: u64) -> String {
    format!("{{\"type\":\"lagged\",\"skipped\":{skipped}}}")
}
