//! W3C trace context (`traceparent`) through Kafka headers, so one trace follows a reading
//! from the gateway to the notification. When OTLP export is on, the record's span joins the
//! incoming trace and outputs carry that span's id; without it, outputs still carry the
//! incoming trace id (with a fresh span id), so the chain is never broken.

use opentelemetry::trace::TraceContextExt;
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header name defined by W3C Trace Context.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else is ignored as the spec says.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 || version == "ff" {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// A new trace (for records that arrived without one).
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        Self { trace_id: rng.random::<u128>().max(1), span_id: rng.random::<u64>().max(1), sampled: false }
    }

    /// A child in the same trace with a fresh span id.
    pub fn child(&self) -> Self {
        Self { span_id: rand::rng().random::<u64>().max(1), ..*self }
    }

    pub fn header_value(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

/// Joins `span` to the incoming trace (effective only when OTLP export is on) and returns the
/// `traceparent` outputs of this record should carry.
pub fn continue_trace(span: &tracing::Span, incoming: Option<TraceParent>) -> TraceParent {
    if let Some(parent) = incoming {
        let context = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from(parent.trace_id),
            opentelemetry::trace::SpanId::from(parent.span_id),
            if parent.sampled {
                opentelemetry::trace::TraceFlags::SAMPLED
            } else {
                opentelemetry::trace::TraceFlags::default()
            },
            true,
            Default::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
    let own = span.context().span().span_context().clone();
    if own.is_valid() {
        return TraceParent {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            sampled: own.is_sampled(),
        };
    }
    incoming.map(|p| p.child()).unwrap_or_else(TraceParent::new_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(text).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(parent.sampled);
        assert_eq!(parent.header_value(), text);
    }

    #[test]
    fn rejects_malformed_or_zero_ids() {
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
        assert!(TraceParent::parse("garbage").is_none());
    }

    #[test]
    fn without_export_outputs_stay_in_the_incoming_trace() {
        let incoming = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let out = continue_trace(&tracing::Span::none(), Some(incoming));
        assert_eq!(out.trace_id, incoming.trace_id);
        assert_ne!(out.span_id, incoming.span_id);
    }
}
