//! Exports of flows to other tools: OTLP traces (`ktrail-collector
//! --otlp-endpoint`), one trace per flow sent when the flow closes.

pub mod exporter;
pub mod on_close;
pub mod otlp;

pub use exporter::{ExportError, ExportStats, OtlpConfig, OtlpExporter};
